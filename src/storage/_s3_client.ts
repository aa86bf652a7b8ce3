// A minimal S3 REST client: signed requests, addressing styles, and the few XML shapes we read.
import { type S3CredentialProvider, type S3Credentials, signRequest, uriEncode } from "./_sigv4.ts";
import { credentialSource } from "./_s3_credentials.ts";

/** Where and how to reach a bucket. */
export interface S3ClientOptions {
  endpoint: string;
  region: string;
  bucket: string;
  credentials: S3Credentials | S3CredentialProvider;
  forcePathStyle: boolean;
  fetch: typeof fetch;
  /** How long an attempt may wait for its answer, plus a second per MiB it sends; 0 or none: for ever. */
  requestTimeoutMs?: number;
}

/** One request to an object (or the bucket when `key` is empty). */
export interface S3Request {
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  signal?: AbortSignal;
  /** A POST that does what it did when sent again (DeleteObjects), so it is retried like a GET. */
  idempotent?: boolean;
}

/** An S3 answer we did not expect, with the status and the S3 error code. */
export class S3RequestError extends Error {
  /** HTTP status. */
  readonly status: number;
  /** S3 error code, e.g. `NoSuchKey`, or `""`. */
  readonly code: string;
  constructor(message: string, status: number, code: string) {
    super(message);
    this.name = "S3RequestError";
    this.status = status;
    this.code = code;
  }
}

/** How many times a failed request is sent again. */
export const RETRIES = 3;
const MiB = 1024 * 1024;

/**
 * How long one attempt may take to get its status and headers: `timeoutMs`, and a second more per MiB
 * of body, to send it over a slow link. The body of the answer is limited apart, by how long each
 * read of it waits (see `quietLimited`): a download streams for as long as it takes, and S3 answers
 * a long copy with its headers first and keeps the connection busy with spaces.
 */
export function answerDeadlineMs(timeoutMs: number, body: Uint8Array | string | undefined): number {
  if (timeoutMs === 0) return 0;
  const bytes = typeof body === "string" ? body.length * 3 : body?.byteLength ?? 0;
  return timeoutMs + Math.ceil(bytes * 1000 / MiB);
}

/** Waits before retry `attempt + 1`: about 50, 200 and 800 ms, jittered. */
export function backOff(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 50 * 4 ** attempt * (0.5 + Math.random())));
}

/** A 5xx but 501 NotImplemented, which a store answers the same every time. */
function isTransient(status: number): boolean {
  return status >= 500 && status !== 501;
}

/** Decodes the five XML entities and numeric references. */
function unescapeXml(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|lt|gt|amp|quot|apos);/gi, (_, entity: string) => {
    const named: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };
    if (entity[0] !== "#") return named[entity.toLowerCase()]!;
    return String.fromCodePoint(
      entity[1] === "x" || entity[1] === "X" ? parseInt(entity.slice(2), 16) : Number(entity.slice(1)),
    );
  });
}

/** Text of every `<tag>` element in `xml`, in order. Enough for S3's flat responses. */
export function xmlValues(xml: string, tag: string): string[] {
  const pattern = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g");
  return [...xml.matchAll(pattern)].map((m) => unescapeXml(m[1]!));
}

/**
 * Runs `work` on every item (and its index), at most `limit` at a time. After a failure no more
 * items start, and it fails with the first failure once the work under way has ended: a caller that
 * then aborts a multipart upload must not race part copies still landing in it (S3 may keep those
 * parts, billed, after the abort).
 */
export async function eachLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !failure) {
      const index = next++;
      try {
        await work(items[index]!, index);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
}

/** Escapes text for an XML element. */
export function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/**
 * `response` whose body fails (by `abort`, which aborts its fetch) when a read of it waits more than
 * `quietMs` for the store: after its headers, a connection can go quiet too, and an assembly
 * reading a chunk from it would wait for ever while renewing its claim. Only waits on the store
 * count: a download its reader pulls slowly is not cut short.
 */
function quietLimited(response: Response, quietMs: number, abort: () => void): Response {
  const reader = response.body!.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const timeout = setTimeout(abort, quietMs);
      try {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } finally {
        clearTimeout(timeout);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return new Response(body, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

/** Signs and sends S3 requests for one bucket. */
export class S3Client {
  #options: S3ClientOptions;
  #base: URL;
  #credentials: () => Promise<S3Credentials>;

  constructor(options: S3ClientOptions) {
    this.#options = options;
    this.#credentials = credentialSource(options.credentials);
    this.#base = new URL(options.endpoint);
  }

  /** The bucket's name. */
  get bucket(): string {
    return this.#options.bucket;
  }

  /** URL of an object: `endpoint/bucket/key` (path style) or `bucket.endpoint/key` (virtual host). */
  url(key: string, query: Record<string, string> = {}): URL {
    const url = new URL(this.#base);
    const base = url.pathname.replace(/\/$/, "");
    const path = uriEncode(key, true);
    if (this.#options.forcePathStyle) {
      url.pathname = `${base}/${uriEncode(this.#options.bucket)}${key ? `/${path}` : ""}`;
    } else {
      url.hostname = `${this.#options.bucket}.${url.hostname}`;
      url.pathname = `${base}/${path}`;
    }
    // Encoded as SigV4 signs it: URLSearchParams would send a space as "+", which S3 reads as a plus.
    const pairs = Object.entries(query).map(([name, value]) => `${uriEncode(name)}=${uriEncode(value)}`);
    url.search = pairs.join("&");
    return url;
  }

  /**
   * Sends a signed request; the caller checks the status. Idempotent requests are retried on 5xx
   * but 501, which S3 documents as transient, and when `fetch` fails (a connection reset or refused,
   * its reply lost): sent again, they do what they did. Conditional PUTs are not, since a retry of one
   * that did succeed would read as lost; nor POSTs but those marked `idempotent`, nor a request whose
   * signal was aborted. A credential provider that fails, or an attempt that gets no answer in time
   * (see {@linkcode answerDeadlineMs}), counts as a failed connection.
   */
  async send(method: string, key: string, request: S3Request = {}): Promise<Response> {
    const conditional = Object.keys(request.headers ?? {}).some((name) => name.startsWith("if-"));
    const retryable = (method !== "POST" || request.idempotent === true) && !conditional;
    for (let attempt = 0;; attempt++) {
      let response: Response;
      try {
        response = await this.#sendOnce(method, key, request);
      } catch (error) {
        if (!retryable || attempt === RETRIES || request.signal?.aborted) throw error;
        await backOff(attempt);
        continue;
      }
      if (!retryable || !isTransient(response.status) || attempt === RETRIES) return response;
      await response.body?.cancel();
      request.signal?.throwIfAborted();
      await backOff(attempt);
    }
  }

  async #sendOnce(method: string, key: string, request: S3Request): Promise<Response> {
    const url = this.url(key, request.query);
    const headers = new Headers(request.headers);
    await signRequest({
      method,
      url,
      headers,
      region: this.#options.region,
      credentials: await this.#credentials(),
    });
    const deadline = answerDeadlineMs(this.#options.requestTimeoutMs ?? 0, request.body);
    // A connection that went quiet (a half-open socket, a stalled proxy) would otherwise hold the
    // request, and the client's, for ever: most browsers' uploads set no timeout of their own.
    const timer = deadline > 0 ? new AbortController() : undefined;
    const signal = !timer
      ? request.signal
      : request.signal
      ? AbortSignal.any([request.signal, timer.signal])
      : timer.signal;
    const timeout = timer &&
      setTimeout(() => {
        timer.abort(
          new S3RequestError(`S3 ${method} "${key}" got no answer within ${deadline} ms`, 0, "NoAnswer"),
        );
      }, deadline);
    let response: Response;
    try {
      response = await this.#options.fetch(url, {
        method,
        headers,
        body: request.body as BodyInit | undefined,
        signal,
      });
    } finally {
      clearTimeout(timeout);
    }
    if (!timer || !response.body || NULL_BODY_STATUSES.has(response.status)) return response;
    const quietMs = this.#options.requestTimeoutMs!;
    return quietLimited(response, quietMs, () => {
      timer.abort(
        new S3RequestError(
          `S3 ${method} "${key}" sent nothing of its answer for ${quietMs} ms`,
          0,
          "NoAnswer",
        ),
      );
    });
  }

  /** Throws an {@linkcode S3RequestError} describing `response`, consuming its body. */
  async fail(method: string, key: string, response: Response): Promise<never> {
    const text = await response.text().catch(() => "");
    const code = xmlValues(text, "Code")[0] ?? "";
    const message = xmlValues(text, "Message")[0] ?? response.statusText;
    throw new S3RequestError(
      `S3 ${method} "${key}" failed: ${response.status} ${code} ${message}`.trim(),
      response.status,
      code,
    );
  }

  /** Sends a request and fails unless the status is 2xx. Returns the response body as text. */
  async text(method: string, key: string, request: S3Request = {}): Promise<string> {
    const response = await this.send(method, key, request);
    if (!response.ok) return this.fail(method, key, response);
    return await response.text();
  }

  /** Every object under `prefix` (ListObjectsV2 pages), optionally after `startAfter`. */
  async *list(
    prefix: string,
    options: { startAfter?: string; delimiter?: string } = {},
  ): AsyncGenerator<{ key: string; lastModified: number; size: number; isPrefix: boolean }> {
    let token: string | undefined;
    do {
      const query: Record<string, string> = { "list-type": "2", prefix };
      if (options.startAfter) query["start-after"] = options.startAfter;
      if (options.delimiter) query.delimiter = options.delimiter;
      if (token) query["continuation-token"] = token;
      const xml = await this.text("GET", "", { query });
      for (const item of xmlValues(xml, "Contents")) {
        yield {
          key: xmlValues(item, "Key")[0]!,
          lastModified: Date.parse(xmlValues(item, "LastModified")[0] ?? ""),
          size: Number(xmlValues(item, "Size")[0] ?? 0),
          isPrefix: false,
        };
      }
      for (const common of xmlValues(xml, "CommonPrefixes")) {
        yield { key: xmlValues(common, "Prefix")[0]!, lastModified: 0, size: 0, isPrefix: true };
      }
      const truncated = xmlValues(xml, "IsTruncated")[0] === "true";
      token = truncated ? xmlValues(xml, "NextContinuationToken")[0] : undefined;
      // Some gateways say a listing goes on without saying where: ending it there would take what
      // was listed for all there is (a count, the chunks to assemble or remove).
      if (truncated && !token) {
        throw new S3RequestError(
          `S3 listing of "${prefix}" is truncated without a continuation token`,
          200,
          "",
        );
      }
    } while (token);
  }
}

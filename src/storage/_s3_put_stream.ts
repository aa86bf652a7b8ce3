// Streams a body of unknown length into one S3 object. Bodies shorter than a part go up in one PUT;
// longer ones through a multipart upload whose parts are all `partSize` bytes except the last (S3
// refuses parts under 5 MiB but the last, and R2 wants equal parts). The object appears only when
// the PUT or CompleteMultipartUpload succeeds, and only if `mayPublish` still agrees.
import {
  backOff,
  eachLimited,
  escapeXml,
  RETRIES,
  type S3Client,
  type S3Request,
  S3RequestError,
  xmlValues,
} from "./_s3_client.ts";
import { uriEncode } from "./_sigv4.ts";

/** Hooks and settings of {@linkcode putStream}. */
export interface PutStreamOptions {
  partSize: number;
  headers: Record<string, string>;
  /** Asked right before publishing; `false` aborts and publishes nothing. */
  mayPublish(): Promise<boolean>;
  /** A multipart upload was started; record it so a sweep can abort it if this process dies. */
  started(uploadId: string): Promise<void>;
  /** The multipart upload was completed or aborted. */
  ended(uploadId: string): Promise<void>;
}

async function completeMultipart(
  client: S3Client,
  key: string,
  uploadId: string,
  etags: string[],
): Promise<void> {
  const body = `<CompleteMultipartUpload>${
    etags.map((etag, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${escapeXml(etag)}</ETag></Part>`)
      .join("")
  }</CompleteMultipartUpload>`;
  // Sent again on a 5xx or a failed connection, and on a 200 whose body is a transient error:
  // AWS documents both as worth retrying, and the same parts complete the same object. Failing
  // instead aborted the upload and threw away every part.
  try {
    await textUntilDone(
      client,
      "POST",
      key,
      { query: { uploadId }, body, idempotent: true },
      (xml) => !xml.includes("<Error>"),
    );
  } catch (error) {
    // A retry after a reply was lost finds the upload completed and gone on MinIO (AWS answers
    // 200 again): the object is then there, made of these parts.
    if (
      error instanceof S3RequestError && error.code === "NoSuchUpload" &&
      await completedAlready(client, key, etags.length)
    ) return;
    throw error;
  }
}

/**
 * Sends a request whose 200 may carry an error in its body (a long copy or completion) until
 * `done` finds the body a success, again while that error is one a retry can clear; resolves the
 * body.
 */
async function textUntilDone(
  client: S3Client,
  method: string,
  key: string,
  request: S3Request,
  done: (xml: string) => boolean,
): Promise<string> {
  for (let attempt = 0;; attempt++) {
    const xml = await client.text(method, key, request);
    if (done(xml)) return xml;
    if (attempt < RETRIES && TRANSIENT_CODES.has(xmlValues(xml, "Code")[0] ?? "")) {
      await backOff(attempt);
      continue;
    }
    return await client.fail(method, key, new Response(xml, { status: 500 }));
  }
}

/**
 * Whether `key` is an object completed from a multipart upload of `parts` parts: its ETag is then
 * `"<digest>-<parts>"`. Only one claimant writes a file's key, and always the same bytes.
 */
async function completedAlready(client: S3Client, key: string, parts: number): Promise<boolean> {
  const head = await client.send("HEAD", key).catch(() => undefined);
  await head?.body?.cancel();
  return head?.ok === true && (head.headers.get("etag") ?? "").replaceAll('"', "").endsWith(`-${parts}`);
}

/** Error codes S3 answers in the body of a 200 (a long copy or completion) that a retry can clear. */
const TRANSIENT_CODES = new Set(["InternalError", "SlowDown", "ServiceUnavailable"]);

async function abortMultipart(
  client: S3Client,
  key: string,
  uploadId: string,
  options: Pick<PutStreamOptions, "ended">,
): Promise<void> {
  // Best effort: if this fails too, the recorded marker lets the expiry sweep abort it.
  const aborted = await client.send("DELETE", key, { query: { uploadId } }).catch(() => undefined);
  await aborted?.body?.cancel();
  if (aborted?.ok || aborted?.status === 404) await options.ended(uploadId).catch(() => {});
}

/**
 * Starts a multipart upload of `key` and returns its id. A request that failed without an answer,
 * or with a 5xx, may have started one all the same, whose id nobody knows: the open multipart
 * uploads of `key` are then looked up and aborted (best effort; a store without ListMultipartUploads
 * leaves them to a lifecycle rule). Only one claimant writes `key` at a time, so any such upload is
 * this one's, or a stalled claimant's, which has lost anyway.
 */
async function startMultipart(
  client: S3Client,
  key: string,
  headers: Record<string, string>,
): Promise<string> {
  let xml: string;
  try {
    xml = await client.text("POST", key, { query: { uploads: "" }, headers });
  } catch (error) {
    if (!(error instanceof S3RequestError) || error.status >= 500) {
      await abortUnknownUploads(client, key).catch(() => {});
    }
    throw error;
  }
  const id = xmlValues(xml, "UploadId")[0];
  if (!id) throw new Error(`S3 gave no UploadId for "${key}"`);
  return id;
}

async function abortUnknownUploads(client: S3Client, key: string): Promise<void> {
  const xml = await client.text("GET", "", { query: { uploads: "", prefix: key } });
  for (const upload of xml.split("<Upload>").slice(1)) {
    const id = xmlValues(upload, "UploadId")[0];
    if (id === undefined || xmlValues(upload, "Key")[0] !== key) continue;
    const aborted = await client.send("DELETE", key, { query: { uploadId: id } });
    await aborted.body?.cancel();
  }
}

/** Takes exactly `size` bytes from the front of `pending`. */
function take(pending: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let offset = 0;
  while (offset < size) {
    const head = pending[0]!;
    const n = Math.min(head.byteLength, size - offset);
    out.set(head.subarray(0, n), offset);
    offset += n;
    if (n === head.byteLength) pending.shift();
    else pending[0] = head.subarray(n);
  }
  return out;
}

/**
 * Writes `data` to `key`. Resolves the byte count, or `undefined` when `mayPublish` refused.
 * On any failure the multipart upload is aborted and `data` cancelled.
 */
export async function putStream(
  client: S3Client,
  key: string,
  data: ReadableStream<Uint8Array>,
  options: PutStreamOptions,
): Promise<number | undefined> {
  const pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let total = 0;
  let uploadId: string | undefined;
  let finished = false;
  const etags: string[] = [];
  const reader = data.getReader();

  async function uploadPart(bytes: Uint8Array): Promise<void> {
    if (uploadId === undefined) {
      uploadId = await startMultipart(client, key, options.headers);
      await options.started(uploadId);
    }
    const partNumber = String(etags.length + 1);
    const response = await client.send("PUT", key, { query: { partNumber, uploadId }, body: bytes });
    if (!response.ok) await client.fail("PUT", key, response);
    await response.body?.cancel();
    etags.push(response.headers.get("etag") ?? "");
  }

  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      pending.push(value);
      pendingBytes += value.byteLength;
      total += value.byteLength;
      while (pendingBytes >= options.partSize) {
        pendingBytes -= options.partSize;
        await uploadPart(take(pending, options.partSize));
      }
    }
    const rest = take(pending, pendingBytes);
    if (uploadId === undefined) {
      if (!await options.mayPublish()) return undefined;
      await client.text("PUT", key, { headers: options.headers, body: rest });
      return total;
    }
    if (rest.byteLength > 0) await uploadPart(rest);
    if (!await options.mayPublish()) return undefined;
    await completeMultipart(client, key, uploadId, etags);
    finished = true;
    await options.ended(uploadId);
    return total;
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    throw error;
  } finally {
    if (uploadId !== undefined && !finished) await abortMultipart(client, key, uploadId, options);
  }
}

/** Hooks of {@linkcode copyParts}: the same as {@linkcode PutStreamOptions} but the part size. */
export type CopyPartsOptions = Omit<PutStreamOptions, "partSize">;

const COPY_CONCURRENCY = 4;

/** One part of a {@linkcode copyParts}: an object, or the bytes `range` (both ends included) of it. */
export interface CopySource {
  key: string;
  range?: [first: number, last: number];
}

/**
 * Assembles `key` from existing objects, one UploadPartCopy per source, so no bytes pass through
 * this process. Every part but the last must be at least 5 MiB. Resolves `false` when
 * `mayPublish` refused. On failure the multipart upload is aborted.
 */
export async function copyParts(
  client: S3Client,
  key: string,
  sources: CopySource[],
  bucket: string,
  options: CopyPartsOptions,
): Promise<boolean> {
  const uploadId = await startMultipart(client, key, options.headers);
  let finished = false;
  try {
    await options.started(uploadId);
    const etags: string[] = [];
    await eachLimited(sources, COPY_CONCURRENCY, async (source, index) => {
      const headers: Record<string, string> = {
        "x-amz-copy-source": `/${bucket}/${uriEncode(source.key, true)}`,
      };
      if (source.range) headers["x-amz-copy-source-range"] = `bytes=${source.range[0]}-${source.range[1]}`;
      // Like CompleteMultipartUpload, a copy can answer 200 with an error in the body.
      const result = await textUntilDone(
        client,
        "PUT",
        key,
        { query: { partNumber: String(index + 1), uploadId }, headers },
        (xml) => xmlValues(xml, "ETag").length > 0,
      );
      etags[index] = xmlValues(result, "ETag")[0]!;
    });
    if (!await options.mayPublish()) return false;
    await completeMultipart(client, key, uploadId, etags);
    finished = true;
    await options.ended(uploadId);
    return true;
  } finally {
    if (!finished) await abortMultipart(client, key, uploadId, options);
  }
}

// A real S3-compatible server (s3rver) on loopback, plus a shim for what s3rver lacks but S3Storage
// relies on, implemented as AWS documents it:
// - SigV4 signatures: s3rver checks only that the access key exists; the shim computes each
//   request's signature with node:crypto, apart from the storage's own signer, and answers 403
//   SignatureDoesNotMatch when it differs;
// - conditional PUT: `If-None-Match: *` (412 when the key exists) and `If-Match: <etag>` (412 on a
//   different ETag, 404 when the key is gone), atomic per key; s3rver ignores both headers;
// - AbortMultipartUpload (s3rver answers 405);
// - UploadPartCopy (s3rver answers 501 NotImplemented);
// - EntityTooSmall on CompleteMultipartUpload when a part other than the last is under 5 MiB
//   (s3rver accepts any part size), and InvalidPart unless every part but the last has one size and
//   the last is no larger, as Cloudflare R2 requires;
// - x-amz-copy-source-range on UploadPartCopy;
// - atomic PUT: s3rver truncates and rewrites an object in place and answers before the bytes are
//   flushed, so a reader can see an empty or torn object; S3 makes a PUT visible whole or not at all
//   (read-after-write consistency). The shim writes a temp file and renames it, and serialises
//   reads and writes of one key, since s3rver writes an object's metadata before its bytes.
// - ListMultipartUploads (`GET /<bucket>?uploads&prefix=`): s3rver has no such listing;
// - ListObjectsV2, listed from s3rver's store: s3rver makes its continuation tokens with DES, which
//   Deno's node:crypto lacks, so a listing past 1000 keys failed with 500; and with a delimiter it
//   misses a folder whose keys are all two levels down. The shim groups keys by the delimiter as S3
//   does, and its token is the last key or common prefix of the page;
// - DeleteObjects (`POST /<bucket>?delete`): s3rver takes it, but neither checks the Content-MD5 S3
//   requires (400 without it, 400 BadDigest when it is wrong) nor deletes each key atomically with
//   the shim's other writes of it;
// It also counts multipart uploads that were started and neither completed nor aborted, and can
// inject 409 ConditionalRequestConflict answers (what AWS and R2 send when conditional writes race).
import S3rver from "s3rver";
import { dirname, join } from "node:path";
import { createHash, createHmac } from "node:crypto";
import { Buffer } from "node:buffer";
import { PassThrough } from "node:stream";
import { mkdir, rename, writeFile } from "node:fs/promises";

/** A running s3rver with one bucket, and switches for tests. */
export interface S3Fixture {
  endpoint: string;
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** Multipart uploads started and neither completed nor aborted. */
  openMultipartUploads: Set<string>;
  /**
   * Answer this many of the next conditional PUTs with 409 ConditionalRequestConflict (AWS, R2), or
   * with `status` 429 (R2's limit of one write of a key a second).
   */
  conflicts: { next: number; status?: 409 | 429 };
  /**
   * How many UploadPartCopy requests the shim served; the next `failNext` answer 200 with an
   * InternalError body, as AWS may.
   */
  copies: { count: number; failNext: number };
  /**
   * DeleteObjects: `refuse` answers 501 NotImplemented, as a store without it does; `timeoutNext`
   * answers that many of the next requests 400 RequestTimeout, as AWS does to a body that came too
   * slowly; `failNext` makes that many of the next requests report their first key as not deleted
   * (InternalError);
   * `count` and `keys` count the requests served and the keys they named.
   */
  batchDeletes: { refuse: boolean; timeoutNext: number; failNext: number; count: number; keys: number };
  /**
   * Leave the next `next` requests (of `method` and with a path `path` matches only, when set)
   * without an answer, as a connection that went quiet does, until their client gives up; with
   * `afterHeaders`, send the status, headers and one byte of the body first. `count` counts those
   * held.
   */
  stalls: { next: number; method?: string; path?: RegExp; afterHeaders?: boolean; count: number };
  /**
   * Answer the next `next` CompleteMultipartUpload requests with a transient failure, as AWS may: a
   * 500 (`status: 500`) or a 200 whose body is an InternalError (the default). `count` counts the
   * requests served.
   */
  completes: { next: number; status?: 200 | 500; count: number };
  /** Keys of the objects in the bucket under `prefix`, read from s3rver's store directly. */
  keys(prefix: string): Promise<string[]>;
  /** Requests seen, as "METHOD path?query". */
  log: string[];
  /** Where s3rver keeps the bucket: `close` removes it; a process that cannot await may remove it itself. */
  directory: string;
  close(): Promise<void>;
}

const MIN_PART = 5 * 1024 * 1024;

interface KoaContext {
  method: string;
  path: string;
  querystring: string;
  query: Record<string, string>;
  status: number;
  body: unknown;
  type: string;
  req: AsyncIterable<Uint8Array>;
  res: { once(event: "close", listener: () => void): void };
  respond: boolean;
  get(name: string): string;
}

const SECRET_KEYS: Record<string, string> = { S3RVER: "S3RVER" };

/** RFC 3986 encoding, as SigV4 canonicalises query names and values. */
function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * Why a request's SigV4 `Authorization` header is wrong, or `undefined` when it is right: the
 * signature computed here, independently of src/storage/_sigv4.ts, from the request as it arrived.
 * s3rver checks only that the access key exists.
 */
function signatureProblem(ctx: KoaContext): string | undefined {
  const authorization = ctx.get("authorization");
  const match =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/
      .exec(authorization);
  if (!match) return `not a SigV4 authorization: ${authorization}`;
  const [, accessKeyId = "", day = "", region = "", signedHeaders = "", signature] = match;
  const secret = SECRET_KEYS[accessKeyId];
  if (secret === undefined) return `unknown access key ${accessKeyId}`;
  const stamp = ctx.get("x-amz-date");
  if (!stamp.startsWith(day)) return `x-amz-date ${stamp} is not of the credential's day ${day}`;
  const query = ctx.querystring
    ? ctx.querystring.split("&").map((pair) => {
      const [name = "", value = ""] = pair.split(/=(.*)/s);
      return [encodeRfc3986(decodeURIComponent(name)), encodeRfc3986(decodeURIComponent(value))];
    }).sort(([a = "", x = ""], [b = "", y = ""]) => a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0)
      .map(([name, value]) => `${name}=${value}`).join("&")
    : "";
  const names = signedHeaders.split(";");
  const headers = names.map((name) => `${name}:${ctx.get(name).trim().replace(/\s+/g, " ")}\n`).join("");
  const canonical = [ctx.method, ctx.path, query, headers, signedHeaders, ctx.get("x-amz-content-sha256")]
    .join("\n");
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", stamp, scope, createHash("sha256").update(canonical).digest("hex")]
    .join("\n");
  let key: Buffer = createHmac("sha256", `AWS4${secret}`).update(day).digest();
  for (const part of [region, "s3", "aws4_request"]) key = createHmac("sha256", key).update(part).digest();
  const expected = createHmac("sha256", key).update(toSign).digest("hex");
  return expected === signature ? undefined : `signature ${signature} is not ${expected} of:\n${canonical}`;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

interface ListResult {
  objects: { key: string; lastModifiedDate: Date; size: number; metadata: Record<string, string> }[];
  commonPrefixes: string[];
  isTruncated: boolean;
}

function unescapeXml(text: string): string {
  const named: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };
  return text.replace(
    /&(#x[0-9a-f]+|#[0-9]+|lt|gt|amp|quot|apos);/gi,
    (_, entity: string) =>
      entity[0] !== "#" ? named[entity.toLowerCase()]! : String.fromCodePoint(
        entity[1]?.toLowerCase() === "x" ? parseInt(entity.slice(2), 16) : Number(entity.slice(1)),
      ),
  );
}

function s3Error(ctx: KoaContext, status: number, code: string, message: string): void {
  ctx.status = status;
  ctx.type = "application/xml";
  ctx.body =
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

/** Starts s3rver on 127.0.0.1 port 0 with bucket "test" and the shim. */
export async function startS3(): Promise<S3Fixture> {
  const directory = await Deno.makeTempDir({ prefix: "resumable-s3rver-" });
  const bucket = "test";
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  const open = new Set<string>();
  /** The key of each open multipart upload. */
  const openKeys = new Map<string, string>();
  const partSizes = new Map<string, Map<number, number>>();
  const conflicts: { next: number; status?: 409 | 429 } = { next: 0 };
  const copies = { count: 0, failNext: 0 };
  const batchDeletes = { refuse: false, timeoutNext: 0, failNext: 0, count: 0, keys: 0 };
  const stalls: S3Fixture["stalls"] = { next: 0, count: 0 };
  const held = new Set<() => void>();
  /** Objects being completed from a multipart upload ("bucket/key"), with their part counts. */
  const multipartParts = new Map<string, number>();
  const completes: S3Fixture["completes"] = { next: 0, count: 0 };
  const log: string[] = [];
  const locks = new Map<string, Promise<unknown>>();

  async function locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = locks.get(key) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => {});
    locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (locks.get(key) === tail) locks.delete(key);
    }
  }

  async function shim(ctx: KoaContext, next: () => Promise<void>): Promise<void> {
    log.push(`${ctx.method} ${ctx.path}${ctx.querystring ? `?${ctx.querystring}` : ""}`);
    if (ctx.get("authorization")) {
      const problem = signatureProblem(ctx);
      if (problem) return s3Error(ctx, 403, "SignatureDoesNotMatch", escapeXml(problem));
    }
    const stall = stalls.next > 0 && (stalls.method === undefined || stalls.method === ctx.method) &&
      (stalls.path === undefined || stalls.path.test(ctx.path));
    if (stall) {
      stalls.next--;
      stalls.count++;
    }
    if (stall && !stalls.afterHeaders) {
      await new Promise<void>((resolve) => {
        held.add(resolve);
        ctx.res.once("close", resolve);
      });
      ctx.respond = false;
      return;
    }
    await answer(ctx, next);
    if (stall) {
      // The answer's first byte, then nothing, until the client goes away.
      const quiet = new PassThrough();
      quiet.write(Buffer.from(" "));
      const end = () => quiet.destroy();
      held.add(end);
      ctx.res.once("close", end);
      ctx.body = quiet;
    }
  }

  async function answer(ctx: KoaContext, next: () => Promise<void>): Promise<void> {
    const [, bucketName = "", ...rest] = ctx.path.split("/");
    const key = decodeURIComponent(rest.join("/"));
    const uploadId = ctx.query.uploadId;
    if (ctx.method === "GET" && !key && "uploads" in ctx.query) {
      const prefix = ctx.query.prefix ?? "";
      const uploads = [...open].filter((id) => openKeys.get(id)?.startsWith(prefix)).map((id) =>
        `<Upload><Key>${escapeXml(openKeys.get(id)!)}</Key><UploadId>${id}</UploadId></Upload>`
      );
      ctx.status = 200;
      ctx.type = "application/xml";
      ctx.body =
        `<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult><Bucket>${bucketName}</Bucket>${
          uploads.join("")
        }</ListMultipartUploadsResult>`;
      return;
    }
    if (ctx.method === "GET" && !key && ctx.query["list-type"] === "2") {
      const token = ctx.query["continuation-token"];
      const prefix = ctx.query.prefix ?? "";
      const delimiter = ctx.query.delimiter ?? "";
      const maxKeys = Math.min(1000, Number(ctx.query["max-keys"] ?? 1000));
      const after = token ? atob(token) : ctx.query["start-after"] ?? "";
      // Every key under the prefix, grouped here: s3rver's own grouping misses a folder whose keys
      // are all two levels down or deeper.
      const all: ListResult = await server.store.listObjects(bucketName, { prefix });
      const entries: ({ object: ListResult["objects"][number] } | { common: string })[] = [];
      for (const object of all.objects.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
        // After a page that ended on a common prefix, the keys under it are done.
        if (object.key <= after || (after.endsWith(delimiter) && delimiter && object.key.startsWith(after))) {
          continue;
        }
        const cut = delimiter ? object.key.indexOf(delimiter, prefix.length) : -1;
        if (cut === -1) entries.push({ object });
        else {
          const common = object.key.slice(0, cut + delimiter.length);
          const previous = entries.at(-1);
          if (!(previous && "common" in previous && previous.common === common)) entries.push({ common });
        }
      }
      const page = entries.slice(0, maxKeys);
      const truncated = entries.length > maxKeys;
      const lastEntry = page.at(-1);
      const last = lastEntry && ("common" in lastEntry ? lastEntry.common : lastEntry.object.key);
      const next = truncated && last ? `<NextContinuationToken>${btoa(last)}</NextContinuationToken>` : "";
      const contents = page.map((entry) =>
        "common" in entry
          ? `<CommonPrefixes><Prefix>${escapeXml(entry.common)}</Prefix></CommonPrefixes>`
          : `<Contents><Key>${escapeXml(entry.object.key)}</Key><LastModified>` +
            `${entry.object.lastModifiedDate.toISOString()}</LastModified><ETag>` +
            `${escapeXml(entry.object.metadata.etag ?? "")}</ETag><Size>${entry.object.size}</Size>` +
            `<StorageClass>STANDARD</StorageClass></Contents>`
      ).join("");
      ctx.status = 200;
      ctx.type = "application/xml";
      ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n` +
        `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${bucketName}</Name>` +
        `<Prefix>${
          escapeXml(prefix)
        }</Prefix><KeyCount>${page.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys>` +
        `<IsTruncated>${truncated}</IsTruncated>${next}${contents}</ListBucketResult>`;
      return;
    }
    if (ctx.method === "POST" && !key && "delete" in ctx.query) {
      const pieces: Uint8Array[] = [];
      for await (const piece of ctx.req) pieces.push(piece);
      const body = Buffer.concat(pieces);
      const digest = ctx.get("content-md5");
      if (!digest) {
        return s3Error(ctx, 400, "InvalidRequest", "Missing required header for this request: Content-MD5");
      }
      if (digest !== createHash("md5").update(body).digest("base64")) {
        return s3Error(
          ctx,
          400,
          "BadDigest",
          "The Content-MD5 you specified did not match what we received.",
        );
      }
      if (batchDeletes.timeoutNext > 0) {
        batchDeletes.timeoutNext--;
        return s3Error(
          ctx,
          400,
          "RequestTimeout",
          "Your socket connection to the server was not read from or written to within the timeout period.",
        );
      }
      if (batchDeletes.refuse) {
        return s3Error(
          ctx,
          501,
          "NotImplemented",
          "A header you provided implies functionality that is not implemented",
        );
      }
      const xml = body.toString("utf8");
      const keys = [...xml.matchAll(/<Key>([\s\S]*?)<\/Key>/g)].map((match) => unescapeXml(match[1]!));
      if (!/^(<\?xml[^>]*\?>\s*)?<Delete[ >]/.test(xml) || keys.length === 0 || keys.length > 1000) {
        return s3Error(ctx, 400, "MalformedXML", "The XML you provided was not well-formed");
      }
      batchDeletes.count++;
      batchDeletes.keys += keys.length;
      const failed = batchDeletes.failNext > 0 ? (batchDeletes.failNext--, keys.slice(0, 1)) : [];
      // One key at a time: s3rver's store fails deletes that race in one folder (it prunes emptied
      // folders). A key whose delete fails is reported, as S3 reports it, in an <Error>.
      for (const k of keys.filter((k) => !failed.includes(k))) {
        await locked(`/${bucketName}/${k.split("/").map(encodeURIComponent).join("/")}`, async () => {
          if (await server.store.existsObject(bucketName, k)) await server.store.deleteObject(bucketName, k);
        }).catch(() => failed.push(k));
      }
      const quiet = /<Quiet>true<\/Quiet>/.test(xml);
      const deleted = quiet ? [] : keys.filter((k) => !failed.includes(k));
      ctx.status = 200;
      ctx.type = "application/xml";
      ctx.body =
        `<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${
          deleted.map((k) => `<Deleted><Key>${escapeXml(k)}</Key></Deleted>`).join("")
        }${
          failed.map((k) =>
            `<Error><Key>${
              escapeXml(k)
            }</Key><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>`
          ).join("")
        }</DeleteResult>`;
      return;
    }
    if (ctx.method === "PUT" && !ctx.querystring && (ctx.get("if-none-match") || ctx.get("if-match"))) {
      return locked(ctx.path, async () => {
        if (conflicts.next > 0) {
          conflicts.next--;
          if (conflicts.status === 429) {
            return s3Error(ctx, 429, "TooManyRequests", "Reduce your request rate");
          }
          return s3Error(ctx, 409, "ConditionalRequestConflict", "A conflicting operation occurred");
        }
        const etag = await server.store.getMetadata(bucketName, key).then(
          (meta: { etag: string }) => meta.etag,
          () => undefined,
        );
        const ifMatch = ctx.get("if-match");
        if (ctx.get("if-none-match") === "*" && etag) {
          return s3Error(ctx, 412, "PreconditionFailed", "At least one of the pre-conditions did not hold");
        }
        if (ifMatch && !etag) return s3Error(ctx, 404, "NoSuchKey", "The specified key does not exist.");
        if (ifMatch && ifMatch !== etag) {
          return s3Error(ctx, 412, "PreconditionFailed", "At least one of the pre-conditions did not hold");
        }
        await next();
      });
    }
    if (["GET", "HEAD", "PUT", "DELETE"].includes(ctx.method) && !ctx.querystring) {
      // A PUT writes an object's metadata, then renames its bytes into place: a read in between got
      // the new length with the old bytes (a torn JSON claim, once). Reads wait for writes of the key.
      return locked(ctx.path, next);
    }
    if (ctx.method === "PUT" && uploadId && ctx.query.partNumber && ctx.get("x-amz-copy-source")) {
      if (copies.failNext > 0) {
        copies.failNext--;
        ctx.status = 200;
        ctx.type = "application/xml";
        ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>` +
          `<Message>We encountered an internal error. Please try again.</Message></Error>`;
        return;
      }
      const [sourceBucket = "", ...sourceKey] = decodeURIComponent(ctx.get("x-amz-copy-source"))
        .replace(/^\//, "").split("/");
      // x-amz-copy-source-range: bytes=first-last, both inclusive.
      const range = /^bytes=(\d+)-(\d+)$/.exec(ctx.get("x-amz-copy-source-range"));
      const object = await server.store.getObject(
        sourceBucket,
        sourceKey.join("/"),
        range ? { start: Number(range[1]), end: Number(range[2]) } : undefined,
      );
      if (!object) return s3Error(ctx, 404, "NoSuchKey", "The specified key does not exist.");
      const length = Number(object.metadata["content-length"]);
      if (range && !(Number(range[1]) <= Number(range[2]) && Number(range[2]) < length)) {
        return s3Error(ctx, 416, "InvalidRange", "The requested range is not satisfiable");
      }
      const { md5 } = await server.store.putPart(
        bucketName,
        uploadId,
        Number(ctx.query.partNumber),
        object.content,
      );
      const sizes = partSizes.get(uploadId) ?? new Map<number, number>();
      partSizes.set(uploadId, sizes);
      sizes.set(Number(ctx.query.partNumber), range ? Number(range[2]) - Number(range[1]) + 1 : length);
      copies.count++;
      ctx.status = 200;
      ctx.type = "application/xml";
      ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<CopyPartResult><LastModified>${
        new Date().toISOString()
      }</LastModified><ETag>"${md5}"</ETag></CopyPartResult>`;
      return;
    }
    if (ctx.method === "PUT" && uploadId && ctx.query.partNumber) {
      const sizes = partSizes.get(uploadId) ?? new Map<number, number>();
      partSizes.set(uploadId, sizes);
      sizes.set(Number(ctx.query.partNumber), Number(ctx.get("content-length")));
      return next();
    }
    if (ctx.method === "POST" && uploadId) {
      completes.count++;
      // A completed upload is gone: a second completion of it (its first reply lost) is refused, as
      // MinIO does (AWS answers it 200 again).
      if (!open.has(uploadId)) {
        return s3Error(ctx, 404, "NoSuchUpload", "The specified multipart upload does not exist.");
      }
      if (completes.next > 0) {
        completes.next--;
        if (completes.status === 500) {
          return s3Error(ctx, 500, "InternalError", "We encountered an internal error");
        }
        ctx.status = 200;
        ctx.type = "application/xml";
        ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>` +
          `<Message>We encountered an internal error. Please try again.</Message></Error>`;
        return;
      }
      const sizes = [...(partSizes.get(uploadId) ?? new Map<number, number>())].sort(([a], [b]) => a - b);
      if (sizes.slice(0, -1).some(([, size]) => size < MIN_PART)) {
        return s3Error(ctx, 400, "EntityTooSmall", "Your proposed upload is smaller than the minimum");
      }
      // Cloudflare R2's rule, stricter than AWS's: every part but the last of one size, and the last
      // no larger.
      const [, first = 0] = sizes[0] ?? [];
      if (sizes.some(([, size], i) => i < sizes.length - 1 ? size !== first : size > first)) {
        return s3Error(ctx, 400, "InvalidPart", "All non-trailing parts must have the same length");
      }
      // Stored with a multipart ETag, "<digest>-<parts>", as S3 and MinIO give one.
      multipartParts.set(`${bucketName}/${key}`, sizes.length);
      try {
        await next();
      } finally {
        multipartParts.delete(`${bucketName}/${key}`);
      }
      if (ctx.status === 200) open.delete(uploadId);
      return;
    }
    if (ctx.method === "DELETE" && uploadId) {
      if (!open.delete(uploadId)) return s3Error(ctx, 404, "NoSuchUpload", "The upload does not exist");
      partSizes.delete(uploadId);
      await Deno.remove(join(server.store.getResourcePath(bucketName, undefined, "uploads"), uploadId), {
        recursive: true,
      }).catch(() => {});
      ctx.status = 204;
      return;
    }
    await next();
    if (ctx.method === "POST" && "uploads" in ctx.query && ctx.status === 200) {
      const id = /<UploadId>([^<]+)<\/UploadId>/.exec(String(ctx.body))?.[1];
      if (id) {
        open.add(id);
        openKeys.set(id, key);
      }
    }
  }

  const store = server.store;
  store.putObject = async (object: { bucket: string; key: string; content: unknown; metadata: unknown }) => {
    const parts: Uint8Array[] = [];
    if (Buffer.isBuffer(object.content)) parts.push(object.content);
    else for await (const part of object.content as AsyncIterable<Uint8Array>) parts.push(part);
    const bytes = Buffer.concat(parts);
    const digest = createHash("md5").update(bytes).digest("hex");
    const partCount = multipartParts.get(`${object.bucket}/${object.key}`);
    const md5 = partCount === undefined ? digest : `${digest}-${partCount}`;
    const path = store.getResourcePath(object.bucket, object.key, "object");
    await mkdir(dirname(path), { recursive: true });
    const temp = `${path}.${crypto.randomUUID()}.tmp`;
    await writeFile(temp, bytes);
    await store.putMetadata(object.bucket, object.key, object.metadata, md5);
    await rename(temp, path);
    return { size: bytes.byteLength, md5 };
  };

  // s3rver is a Koa app: the shim goes first so it sees every request before s3rver's router.
  server.middleware.unshift(shim);
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    openMultipartUploads: open,
    conflicts,
    copies,
    batchDeletes,
    stalls,
    completes,
    log,
    directory,
    async keys(prefix: string) {
      const result = await server.store.listObjects(bucket, { prefix });
      return result.objects.map((object: { key: string }) => object.key);
    },
    async close() {
      for (const release of held) release();
      // Idle keep-alive connections from fetch's pool would hold close() open for minutes.
      server.httpServer.closeAllConnections?.();
      await server.close();
      await Deno.remove(directory, { recursive: true }).catch(() => {});
    },
  };
}

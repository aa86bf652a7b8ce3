/**
 * An {@linkcode UploadStorage} on any S3-compatible object store (AWS S3, Cloudflare R2, MinIO, …),
 * over `fetch` with AWS Signature V4 done by `crypto.subtle`: no dependencies, no file system, so it
 * runs on Deno, Deno Deploy, Bun, Node and workers. Any number of processes may share one bucket.
 *
 * Layout under `prefix`:
 * ```
 * uploads/<key>/upload.json           upload record (If-None-Match: * — one creator)
 * uploads/<key>/chunks/<fileId>/<0000000001>
 *                                     one object per chunk (a single PUT: never torn), under the
 *                                     upload record's file id, so a chunk of a removed upload that
 *                                     lands late never counts in one begun again under the key
 * uploads/<key>/claim.json            assembly lease (If-None-Match: *, takeover with If-Match)
 * uploads/<key>/multipart/<uploadId>  a multipart upload in flight, for the sweep to abort
 * uploads/<key>/complete.json         completion record (If-None-Match: * — one completer)
 * removed/<key>                       when the upload was last removed (ms since the epoch), kept ten
 *                                     minutes
 * files/<id>/<sanitised name>         the completed file (multipart upload)
 * files/<id>/.file.json               its metadata
 * ```
 *
 * The store must enforce conditional writes (`If-None-Match: *` and `If-Match` on PUT): AWS S3
 * (since 2024), R2 and MinIO do; Wasabi, Google Cloud Storage and Backblaze B2 are reported not to
 * (docs/scaling.md). Claims expire by the claimant's clock, so keep server clocks in sync
 * to well within the lease (30 s by default).
 *
 * @example
 * ```ts
 * import { createResumableHandler } from "@resumable/server";
 * import { S3Storage } from "@resumable/server/s3";
 *
 * const handler = createResumableHandler({
 *   storage: new S3Storage({
 *     bucket: "uploads",
 *     region: "eu-central-1",
 *     credentials: { accessKeyId: "AKIA…", secretAccessKey: "…" },
 *   }),
 * });
 * ```
 *
 * @module
 */

import { isFileId, isUploadKey, sanitizeFileName } from "../identifier.ts";
import { S3Client } from "./_s3_client.ts";
import { S3Deleter } from "./_s3_delete.ts";
import { forgotten, preciseNow, PRUNE_EVERY_MS, recentRemoval } from "./_removals.ts";
import { copyParts, type CopyPartsOptions, type CopySource, putStream } from "./_s3_put_stream.ts";
import { concatLazily, expectTotalSize } from "../_concat.ts";
import { ReadsAfterCheck } from "./_reads_after_check.ts";
import type { S3CredentialProvider, S3Credentials } from "./_sigv4.ts";
import type {
  Claim,
  Lease,
  OpenedFile,
  PutChunkOptions,
  RemoveUploadOptions,
  StoredFile,
  UploadActivity,
  UploadRecord,
  UploadStorage,
} from "./types.ts";

export type { ExpiringS3Credentials, S3CredentialProvider, S3Credentials } from "./_sigv4.ts";
// Every storage type, so that this entry point documents what its exports refer to.
export type * from "./types.ts";

/** Options of {@linkcode S3Storage}. */
export interface S3StorageOptions {
  /** Bucket name. */
  bucket: string;
  /**
   * Access keys, or a function that returns them for keys that rotate (an IAM role's temporary
   * credentials). A provider's credentials are reused until five minutes before their
   * `expiration`; without one it is asked for every request.
   *
   * @example A role's credentials, from the AWS SDK's provider chain
   * ```ts ignore
   * import { fromNodeProviderChain } from "@aws-sdk/credential-providers";
   * import { S3Storage } from "@resumable/server/s3";
   *
   * const storage = new S3Storage({ bucket: "uploads", region: "eu-central-1", credentials: fromNodeProviderChain() });
   * ```
   */
  credentials: S3Credentials | S3CredentialProvider;
  /**
   * Signing region; `"auto"` for R2, anything (e.g. `"us-east-1"`) for MinIO.
   * @default {"us-east-1"}
   */
  region?: string;
  /**
   * Service URL, e.g. `https://<account>.r2.cloudflarestorage.com` or `http://127.0.0.1:9000`.
   * @default {`https://s3.${region}.amazonaws.com`}
   */
  endpoint?: string;
  /**
   * Address the bucket as `endpoint/bucket/key` instead of `bucket.endpoint/key`. MinIO and most
   * self-hosted stores need `true`.
   * @default {false}
   */
  forcePathStyle?: boolean;
  /**
   * Key prefix of everything this storage writes; share it between every process of one app. No
   * `.` or `..` segments, which URLs resolve away.
   * @default {"resumable/"}
   */
  prefix?: string;
  /**
   * Size of multipart parts when assembling, in bytes; at least 5 MiB. Grown automatically so a
   * file never needs more than 10,000 parts. Memory per assembly is about one part.
   * @default {8388608} (8 MiB)
   */
  partSize?: number;
  /** The `fetch` to send requests with (for proxies, custom agents, or tests). */
  fetch?: typeof fetch;
  /**
   * How long a removal (a cancel, or a sweep's) waits for an assembly of its upload under way before
   * it fails, in ms. A live assembler renews its claim for as long as it works, and one that the store
   * answers slowly would otherwise keep the cancel, and a sweep that reached the upload, waiting long. The cancel then answers 503 (retryable); the sweep goes on with the other uploads.
   * @default {600000} (10 minutes)
   */
  removalWaitMs?: number;
  /**
   * How long one request to the store may wait for its answer (status and headers) before it is
   * given up, in ms, plus a second per MiB it sends; and how long each read of the answer's body may
   * wait for the store. One given up before its answer is sent again if it can be, as after a reset
   * connection; otherwise the operation fails and the client gets a retryable 503. Without it, a
   * connection that went quiet would hold the request, and the upload's assembly, without end.
   * Downloads stream for as long as their reader takes. 0 waits for ever.
   * @default {60000} (1 minute)
   */
  requestTimeoutMs?: number;
}

interface ClaimBody {
  owner: string;
  generation: number;
  expiresAt: number;
}

interface ChunkCache {
  /** The upload record the chunks belong to (its file id); `undefined` until this process reads it. */
  fileId: string | undefined;
  known: Set<number>;
  /** Every chunk 1..contiguous is known to be stored. */
  contiguous: number;
  touched: number;
}

const MIN_PART = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;
// Chunks are immutable until the upload completes or expires, so a process may remember which it
// has seen; the memory is dropped after this much idleness, well under any sane expiry age.
const CACHE_IDLE_MS = 5 * 60_000;
const CACHE_MAX = 2_000;
// A removal's own claim (see `#waitOutAssembly`): held while it deletes, and blocking assemblies for
// this long only if the removal dies holding it. How often a waiting removal looks again.
const REMOVAL_CLAIM_MS = 30_000;
const CLAIM_POLL_MS = 100;
/** Failed attempts in a row at a removal's claim before the removal fails. */
const REMOVAL_ATTEMPTS = 5;

// A MIME type the `content-type` header can carry: `type/subtype` of token characters, then
// parameters in printable ASCII. Anything else (the client sends it) would make `Headers` throw.
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MIME_TYPE = new RegExp(`^${TOKEN}/${TOKEN}([ \\t]*;[\\x20-\\x7e]*)?$`);

function isLost(status: number): boolean {
  // 412: the condition failed; 409: a concurrent conditional write won (AWS, R2); 404: If-Match on
  // an object that is gone; 429: R2 takes one write of a key a second, and may refuse a racing one
  // so (the caller reads what the other wrote, as after a 412).
  return status === 412 || status === 409 || status === 404 || status === 429;
}

/**
 * `key`, if it is an upload key. Keys are made by the handler; refusing anything else keeps every
 * object under the prefix.
 */
function checkedKey(key: string): string {
  if (!isUploadKey(key)) throw new TypeError(`Invalid upload key "${key}"`);
  return key;
}

/**
 * Stores uploads in an S3 bucket. Chunks are buffered in memory one at a time per request (S3 needs
 * each object's length up front), and assembly holds about one part in memory.
 *
 * @example Cloudflare R2
 * ```ts
 * import { S3Storage } from "@resumable/server/s3";
 *
 * const storage = new S3Storage({
 *   endpoint: "https://ACCOUNT_ID.r2.cloudflarestorage.com",
 *   region: "auto",
 *   bucket: "uploads",
 *   credentials: { accessKeyId: "…", secretAccessKey: "…" },
 * });
 * ```
 */
export class S3Storage implements UploadStorage {
  #client: S3Client;
  #deleter: S3Deleter;
  #prefix: string;
  #partSize: number;
  #removalWaitMs: number;
  #chunks = new Map<string, ChunkCache>();
  /** Record reads begun alongside a completion check (see `getCompleted`). */
  #recordReads = new ReadsAfterCheck<UploadRecord>();
  /** When this instance last deleted old notes of removals. */
  #removalsPruned = 0;

  /**
   * Creates a storage for `options.bucket`. Nothing is sent until first use.
   *
   * @param options Bucket, endpoint and credentials.
   * @throws {RangeError} when `partSize` is under 5 MiB, or `removalWaitMs` or `requestTimeoutMs` is
   * out of range.
   * @throws {TypeError} when `prefix` has a `.` or `..` segment.
   */
  constructor(options: S3StorageOptions) {
    const region = options.region ?? "us-east-1";
    this.#partSize = options.partSize ?? 8 * 1024 * 1024;
    this.#removalWaitMs = options.removalWaitMs ?? 10 * 60_000;
    if (!(this.#removalWaitMs >= 0)) {
      throw new RangeError(`Option removalWaitMs must be 0 or more: received ${options.removalWaitMs}`);
    }
    const requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
    if (!(requestTimeoutMs >= 0) || requestTimeoutMs > 2 ** 31 - 1) {
      throw new RangeError(
        `Option requestTimeoutMs must be 0 to ${2 ** 31 - 1}: received ${options.requestTimeoutMs}`,
      );
    }
    if (!(this.#partSize >= MIN_PART)) {
      throw new RangeError(`Option partSize must be at least ${MIN_PART}: received ${options.partSize}`);
    }
    this.#prefix = options.prefix ?? "resumable/";
    // A URL resolves "." and ".." path segments: objects would be written under other keys than the
    // ones listed, or, path-style, in another bucket.
    if (
      typeof this.#prefix !== "string" ||
      this.#prefix.split("/").some((part) => part === "." || part === "..")
    ) {
      throw new TypeError(
        `Option prefix may not have "." or ".." segments: received ${String(options.prefix)}`,
      );
    }
    this.#client = new S3Client({
      endpoint: options.endpoint ?? `https://s3.${region}.amazonaws.com`,
      region,
      bucket: options.bucket,
      credentials: options.credentials,
      forcePathStyle: options.forcePathStyle ?? false,
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      requestTimeoutMs,
    });
    this.#deleter = new S3Deleter(this.#client);
  }

  #upload(key: string, name = ""): string {
    return `${this.#prefix}uploads/${checkedKey(key)}/${name}`;
  }

  /** Where the chunks of the upload record with `fileId` are. */
  #chunkDir(key: string, fileId: string): string {
    if (!isFileId(fileId)) throw new TypeError(`Invalid file id "${fileId}"`);
    return this.#upload(key, `chunks/${fileId}/`);
  }

  #chunk(key: string, fileId: string, index: number): string {
    if (!Number.isSafeInteger(index) || index < 1) throw new RangeError(`Invalid chunk index ${index}`);
    // Zero-padded so listing order is numeric order (what `start-after` relies on).
    return this.#chunkDir(key, fileId) + String(index).padStart(10, "0");
  }

  /**
   * The file id of `key`'s upload record as this process last saw it, read if it has not: chunks
   * are stored under it. `undefined` when there is no record.
   */
  async #fileIdOf(key: string): Promise<string | undefined> {
    return this.#cache(key)?.fileId ?? (await this.getUpload(key))?.fileId;
  }

  #fileDir(fileId: string): string {
    if (!isFileId(fileId)) throw new TypeError(`Invalid file id "${fileId}"`);
    return `${this.#prefix}files/${fileId}/`;
  }

  async #getJson<T>(key: string): Promise<{ value: T; etag: string } | undefined> {
    const response = await this.#client.send("GET", key);
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) return this.#client.fail("GET", key, response);
    const etag = response.headers.get("etag") ?? "";
    return { value: JSON.parse(await response.text()) as T, etag };
  }

  /** PUTs JSON under a condition; resolves `false` when another writer won. */
  async #putJson(key: string, value: unknown, condition: Record<string, string> = {}): Promise<boolean> {
    const response = await this.#client.send("PUT", key, {
      headers: { "content-type": "application/json", ...condition },
      body: JSON.stringify(value),
    });
    await response.body?.cancel();
    if (response.ok) return true;
    if (Object.keys(condition).length > 0 && isLost(response.status)) return false;
    return this.#client.fail("PUT", key, response);
  }

  async #keysUnder(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const item of this.#client.list(prefix)) keys.push(item.key);
    return keys;
  }

  /**
   * Creates the upload record unless one exists (`If-None-Match: *`). Every chunk's request calls
   * this, and all but the first find the record: so it is read first, one GET, where trying to
   * create it first would cost a refused PUT (slower, and billed as a write) and then the GET.
   */
  async createUpload(record: UploadRecord): Promise<UploadRecord> {
    const key = this.#upload(record.key, "upload.json");
    // A 409 or 429 from a racing writer, then a GET that sees nothing yet, is rare but possible: both
    // writers may have been refused. Retry, a little later each time, so they do not collide again.
    for (let attempt = 0; attempt < 5; attempt++) {
      if (attempt > 1) await new Promise((resolve) => setTimeout(resolve, 100 * attempt * Math.random()));
      const existing = attempt === 0
        ? await this.#recordAfterCheck(record.key)
        : await this.#readRecord(record.key);
      if (existing) return this.#noteRecord(existing);
      if (await this.#putJson(key, record, { "if-none-match": "*" })) return this.#noteRecord(record);
    }
    throw new Error(`Upload record "${record.key}" could not be created or read`);
  }

  /**
   * The upload record, or `undefined`. Taken from the read of a completion check within the last
   * second, when that found it (see `#recordAfterCheck`): the handler asks right after one.
   */
  async getUpload(key: string): Promise<UploadRecord | undefined> {
    const record = await this.#recordAfterCheck(key);
    if (record) this.#noteRecord(record);
    else this.#chunks.delete(key);
    return record;
  }

  async #readRecord(key: string): Promise<UploadRecord | undefined> {
    return (await this.#getJson<UploadRecord>(this.#upload(key, "upload.json")))?.value;
  }

  /** The record as read alongside the newest completion check of `key`, or a read of its own. */
  async #recordAfterCheck(key: string): Promise<UploadRecord | undefined> {
    return await this.#recordReads.take(key, () => this.#readRecord(key));
  }

  /**
   * Ties the chunk cache of `record.key` to this record: another process may have removed the upload
   * and the same file begun again under the same key, so chunks seen for any other record (or for
   * one never read) are forgotten.
   */
  #noteRecord(record: UploadRecord): UploadRecord {
    if (this.#chunks.get(record.key)?.fileId !== record.fileId) this.#chunks.delete(record.key);
    this.#cache(record.key, true)!.fileId = record.fileId;
    return record;
  }

  /** Buffers the chunk, then stores it with one PUT, so it is visible whole or not at all. */
  async putChunk(
    key: string,
    index: number,
    data: ReadableStream<Uint8Array>,
    options: PutChunkOptions = {},
  ): Promise<void> {
    const { signal } = options;
    // Which upload the chunk belongs to is settled before its body arrives: if that upload is
    // removed and begun again meanwhile, the chunk lands under the old record's file id, where
    // nothing counts it, and the removal of the new upload's chunks takes it too.
    const fileId = options.fileId ?? await this.#fileIdOf(key);
    if (fileId === undefined) {
      await data.cancel().catch(() => {});
      throw new Error(`Cannot store chunk ${index}: upload "${key}" does not exist`);
    }
    const objectKey = this.#chunk(key, fileId, index);
    const body = new Uint8Array(await new Response(data).arrayBuffer());
    signal?.throwIfAborted();
    await this.#client.text("PUT", objectKey, { body, signal });
    // Read again only if this process forgot the record meanwhile (removed here, or evicted).
    if (await this.#fileIdOf(key) !== fileId) {
      await this.#deleter.delete([objectKey]).catch(() => {});
      throw new Error(`Cannot store chunk ${index}: upload "${key}" was removed while the chunk arrived`);
    }
    this.#cache(key)!.known.add(index);
  }

  /**
   * Size of a stored chunk of the current upload record, or `undefined`. The record is read along
   * with the chunk (in parallel): what this process last saw of it may be stale, if another process
   * removed the upload and the same file began again, and the old record's late chunks must not
   * count.
   */
  async chunkSize(key: string, index: number): Promise<number | undefined> {
    const seen = this.#cache(key)?.fileId;
    const [record, size] = await Promise.all([
      this.getUpload(key),
      seen === undefined ? undefined : this.#headChunk(key, seen, index),
    ]);
    if (!record) return undefined;
    return record.fileId === seen ? size : await this.#headChunk(key, record.fileId, index);
  }

  async #headChunk(key: string, fileId: string, index: number): Promise<number | undefined> {
    const objectKey = this.#chunk(key, fileId, index);
    const response = await this.#client.send("HEAD", objectKey);
    await response.body?.cancel();
    if (response.status === 404) return undefined;
    if (!response.ok) return this.#client.fail("HEAD", objectKey, response);
    return Number(response.headers.get("content-length"));
  }

  #cache(key: string, create = false): ChunkCache | undefined {
    const now = Date.now();
    let entry = this.#chunks.get(key);
    if (entry && now - entry.touched > CACHE_IDLE_MS) entry = undefined;
    if (!entry && create) {
      entry = { fileId: undefined, known: new Set(), contiguous: 0, touched: now };
      if (this.#chunks.size >= CACHE_MAX) this.#chunks.delete(this.#chunks.keys().next().value!);
    }
    if (entry) {
      entry.touched = now;
      // Re-insert so the map stays in least-recently-used order for eviction.
      this.#chunks.delete(key);
      this.#chunks.set(key, entry);
    }
    return entry;
  }

  /**
   * Counts chunks by listing only those after the longest run `1..n` this process already saw, so
   * a steady upload lists a handful of keys per request instead of every chunk.
   *
   * The same listing reaches the completion record (it lists the upload's keys that begin with "c":
   * its chunks, `claim.json`, `complete.json`). The handler counts right after storing a chunk, so a
   * chunk stored once the upload had completed and its chunks were removed (a retry that passed the
   * completion check just before the assembly) is seen here, and removed: no cleanup would run for
   * it again until the upload expired.
   */
  async countChunks(key: string): Promise<number> {
    const fileId = await this.#fileIdOf(key);
    if (fileId === undefined) return 0;
    const entry = this.#cache(key, true)!;
    const start = entry.contiguous > 0 ? this.#chunk(key, fileId, entry.contiguous) : undefined;
    const dir = this.#chunkDir(key, fileId);
    const completeKey = this.#upload(key, "complete.json");
    let completed = false;
    for await (const item of this.#client.list(this.#upload(key, "c"), { startAfter: start })) {
      if (item.key === completeKey) completed = true;
      if (!item.key.startsWith(dir)) continue;
      const index = Number(item.key.slice(dir.length));
      if (Number.isSafeInteger(index) && index > 0) entry.known.add(index);
    }
    while (entry.known.has(entry.contiguous + 1)) entry.contiguous++;
    if (!completed) return entry.known.size;
    // Its chunks are removed, or about to be (this late one among them): none is left to count.
    await this.removeChunks(key);
    return 0;
  }

  /** Streams a stored chunk. */
  async openChunk(key: string, index: number): Promise<ReadableStream<Uint8Array>> {
    const fileId = await this.#fileIdOf(key);
    if (fileId === undefined) throw new Error(`Cannot read chunk ${index}: upload "${key}" does not exist`);
    return await this.#openChunk(key, fileId, index);
  }

  async #openChunk(key: string, fileId: string, index: number): Promise<ReadableStream<Uint8Array>> {
    const objectKey = this.#chunk(key, fileId, index);
    const response = await this.#client.send("GET", objectKey);
    if (!response.ok || !response.body) return this.#client.fail("GET", objectKey, response);
    return response.body;
  }

  /** Creates the claim with `If-None-Match: *`, or takes over an expired one with `If-Match`. */
  async claim(key: string, lease: Lease): Promise<Claim | undefined> {
    const claimKey = this.#upload(key, "claim.json");
    const first: ClaimBody = { owner: lease.owner, generation: 1, expiresAt: Date.now() + lease.ttlMs };
    if (await this.#putJsonOrReadBack(claimKey, first, { "if-none-match": "*" })) {
      return { key, owner: lease.owner, generation: 1 };
    }
    const held = await this.#getJson<ClaimBody>(claimKey);
    // Taken by an earlier call with this lease whose reply, and the read back, were lost.
    if (held?.value.owner === lease.owner) {
      return { key, owner: lease.owner, generation: held.value.generation };
    }
    if (!held || held.value.expiresAt > Date.now()) return undefined;
    const next: ClaimBody = {
      owner: lease.owner,
      generation: held.value.generation + 1,
      expiresAt: Date.now() + lease.ttlMs,
    };
    if (!await this.#putJsonOrReadBack(claimKey, next, { "if-match": held.etag })) return undefined;
    return { key, owner: lease.owner, generation: next.generation };
  }

  /**
   * `#putJson` with a condition, for writes whose loss would strand an upload (claims, renewals, the
   * completion). A PUT can apply and its reply still be lost (the request then throws; conditional
   * PUTs are never retried): the object is read back, and if it is exactly the one written, it was
   * this write, which stands. Else a claim this process took would be left to expire, its upload
   * unassembled meanwhile.
   */
  async #putJsonOrReadBack(key: string, value: unknown, condition: Record<string, string>): Promise<boolean> {
    try {
      return await this.#putJson(key, value, condition);
    } catch (error) {
      const now = await this.#getJson<unknown>(key).catch(() => undefined);
      if (now && JSON.stringify(now.value) === JSON.stringify(value)) return true;
      throw error;
    }
  }

  async #heldClaim(claim: Claim): Promise<{ value: ClaimBody; etag: string } | undefined> {
    const held = await this.#getJson<ClaimBody>(this.#upload(claim.key, "claim.json"));
    if (held?.value.generation !== claim.generation || held.value.owner !== claim.owner) return undefined;
    return held;
  }

  /** Extends the lease with `If-Match`; `false` once someone else's claim replaced it. */
  async renewClaim(claim: Claim, lease: Lease): Promise<boolean> {
    const held = await this.#heldClaim(claim);
    if (!held) return false;
    const renewed: ClaimBody = { ...held.value, expiresAt: Date.now() + lease.ttlMs };
    return await this.#putJsonOrReadBack(this.#upload(claim.key, "claim.json"), renewed, {
      "if-match": held.etag,
    });
  }

  /** Expires a claim at once (`If-Match` on the claim it still holds); the generation stays used. */
  async releaseClaim(claim: Claim): Promise<void> {
    const held = await this.#heldClaim(claim);
    if (!held) return;
    const released: ClaimBody = { ...held.value, expiresAt: 0 };
    await this.#putJson(this.#upload(claim.key, "claim.json"), released, { "if-match": held.etag });
  }

  /**
   * Whether `file` may be published under `claim`: not completed yet, the claim still the newest,
   * and the upload record still the one `file` was made from (not removed and begun again).
   */
  async #mayPublish(claim: Claim, file: StoredFile): Promise<boolean> {
    const [completed, held, record] = await Promise.all([
      this.#completion(claim.key),
      this.#heldClaim(claim),
      this.#readRecord(claim.key),
    ]);
    return !completed && !!held && record?.fileId === file.id;
  }

  /**
   * Writes the file with `write`, which completes its multipart upload only while `claim` is the
   * newest, then creates the completion record with `If-None-Match: *`: the one point where exactly
   * one committer wins. A claimant that stalled past its lease may still complete the same object
   * with the same bytes; the published file is the same either way.
   */
  async #publish(
    claim: Claim,
    file: StoredFile,
    write: (location: string, hooks: CopyPartsOptions) => Promise<number | undefined>,
  ): Promise<StoredFile | undefined> {
    const location = this.#fileDir(file.id) + sanitizeFileName(file.name);
    const marker = (uploadId: string) => this.#upload(claim.key, `multipart/${uploadId}`);
    const size = await write(location, {
      headers: {
        "content-type": MIME_TYPE.test(file.type) ? file.type : "application/octet-stream",
        "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(file.name)}`,
      },
      mayPublish: () => this.#mayPublish(claim, file),
      started: (uploadId) => this.#client.text("PUT", marker(uploadId), { body: location }).then(() => {}),
      ended: (uploadId) => this.#deleter.delete([marker(uploadId)]),
    });
    if (size === undefined) return undefined;
    const stored: StoredFile = { ...file, size, location };
    await this.#putJson(this.#fileDir(file.id) + ".file.json", stored);
    const completeKey = this.#upload(claim.key, "complete.json");
    const published = await this.#putJsonOrReadBack(completeKey, stored, { "if-none-match": "*" });
    return published ? stored : undefined;
  }

  /**
   * Streams `data` into `files/<id>/<name>`: one PUT when it fits in a part, else a multipart
   * upload of `partSize` parts. Published only while `claim` is the newest claim.
   */
  async commit(
    claim: Claim,
    data: ReadableStream<Uint8Array>,
    file: StoredFile,
  ): Promise<StoredFile | undefined> {
    if (!await this.#mayPublish(claim, file)) {
      await data.cancel().catch(() => {});
      return undefined;
    }
    const partSize = Math.max(this.#partSize, Math.ceil(file.size / MAX_PARTS));
    return await this.#publish(
      claim,
      file,
      (location, hooks) => putStream(this.#client, location, data, { ...hooks, partSize }),
    );
  }

  /**
   * Assembles with server-side copies (UploadPartCopy, one part per chunk) when every chunk but the
   * last is the same size of at least 5 MiB, so large uploads never pass through this process;
   * otherwise streams the chunks through {@linkcode S3Storage.commit}, grouping them into parts.
   * A last chunk larger than the others (the clients' default layout stretches it up to twice their
   * size) is copied as two parts, the first of the others' size: Cloudflare R2 takes a multipart
   * upload only if every part but the last has one size and the last is no larger.
   */
  async commitChunks(claim: Claim, chunkCount: number, file: StoredFile): Promise<StoredFile | undefined> {
    // The chunks of the record the file is made from, whatever this process last saw.
    const prefix = this.#chunkDir(claim.key, file.id);
    const found = new Map<number, number>();
    for await (const item of this.#client.list(prefix)) {
      found.set(Number(item.key.slice(prefix.length)), item.size);
    }
    const sizes = Array.from({ length: chunkCount }, (_, i) => found.get(i + 1));
    const missing = sizes.findIndex((size) => size === undefined);
    if (missing >= 0) {
      // What this process counted is wrong (the upload was removed and begun again elsewhere): the
      // next count lists every chunk.
      this.#chunks.delete(claim.key);
      throw new Error(`Chunk ${missing + 1} of upload "${claim.key}" is not stored`);
    }
    const total = sizes.reduce((sum: number, size) => sum + size!, 0);
    if (total !== file.size) throw new Error(`Assembled ${total} bytes, expected ${file.size}`);
    const first = sizes[0]!;
    const last = sizes[chunkCount - 1]!;
    const sources: CopySource[] = sizes.map((_, i) => ({ key: this.#chunk(claim.key, file.id, i + 1) }));
    if (chunkCount > 1 && last > first) {
      const { key } = sources.pop()!;
      sources.push({ key, range: [0, first - 1] }, { key, range: [first, last - 1] });
    }
    const copyable = sources.length <= MAX_PARTS &&
      (chunkCount === 1
        ? first >= MIN_PART
        : sizes.slice(0, -1).every((size) => size === first && first >= MIN_PART));
    if (!copyable) {
      const data = concatLazily(chunkCount, (index) => this.#openChunk(claim.key, file.id, index));
      return await this.commit(claim, expectTotalSize(data, file.size), file);
    }
    if (!await this.#mayPublish(claim, file)) return undefined;
    return await this.#publish(
      claim,
      file,
      async (location, hooks) =>
        await copyParts(this.#client, location, sources, this.#client.bucket, hooks) ? file.size : undefined,
    );
  }

  /**
   * The completion record, or `undefined`. The handler looks up the upload record next (for every
   * chunk and chunk test), so its GET is sent now too, in parallel: a chunk then costs three round
   * trips in a row (completion and record, the chunk's PUT, the count), not four.
   */
  async getCompleted(key: string): Promise<StoredFile | undefined> {
    const record = this.#readRecord(key);
    this.#recordReads.begin(key, record);
    // Both awaited, so no read outlives the request that began it; they take one round trip.
    const [completed] = await Promise.all([this.#completion(key), record.catch(() => undefined)]);
    if (completed) this.#recordReads.forget(key);
    return completed;
  }

  /** The completion record, or `undefined`; for this storage's own checks, which need no record. */
  async #completion(key: string): Promise<StoredFile | undefined> {
    return (await this.#getJson<StoredFile>(this.#upload(key, "complete.json")))?.value;
  }

  /** Opens a completed file by id. */
  async openFile(fileId: string): Promise<OpenedFile | undefined> {
    if (!isFileId(fileId)) return undefined;
    const meta = await this.#getJson<StoredFile>(this.#fileDir(fileId) + ".file.json");
    if (!meta?.value.location) return undefined;
    const response = await this.#client.send("GET", meta.value.location);
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok || !response.body) return this.#client.fail("GET", meta.value.location, response);
    return { file: meta.value, body: response.body };
  }

  /**
   * Deletes the chunk objects of a completed upload, keeping the records. Were the upload cancelled
   * and the same file begun again since it completed, the new upload's chunks stay.
   */
  async removeChunks(key: string): Promise<void> {
    this.#chunks.delete(key);
    // Listed first: the expiry sweep calls this for every completed upload it keeps, and most have
    // no chunks left, so one request answers for them.
    const keys = await this.#keysUnder(this.#upload(key, "chunks/"));
    if (keys.length === 0) return;
    const completed = await this.#completion(key);
    if (!completed) return;
    const own = this.#chunkDir(key, completed.id);
    // Chunks other records left (set aside after a cancel) go too, if the record is still the
    // completed one after the listing: then no newer upload had begun when it was made.
    const record = await this.#readRecord(key);
    const allListed = record?.fileId === completed.id;
    await this.#deleter.delete(keys.filter((objectKey) => allListed || objectKey.startsWith(own)));
  }

  /**
   * Aborts multipart uploads left by crashed assemblers, then deletes every object of the upload
   * but the markers of aborts that failed: those keep the upload listed, so the next sweep retries.
   */
  async removeUpload(key: string, options: RemoveUploadOptions = {}): Promise<void | "completed"> {
    try {
      await this.#noteRemoval(key);
      this.#chunks.delete(key);
      const completed = await this.#waitOutAssembly(key);
      if (completed && options.keepCompleted) return "completed";
      const keys = await this.#keysUnder(this.#upload(key));
      // A file written for this upload and never published (its publication failed, or its process
      // died before it) is under files/<file id>/ where nothing else would find it: it goes first,
      // while the record and chunk folders still name it. A published file stays.
      await this.#deleter.delete(await this.#unpublishedFiles(key, keys, completed));
      const markers = this.#upload(key, "multipart/");
      const kept = new Set<string>();
      for (const marker of keys.filter((k) => k.startsWith(markers))) {
        if (!await this.#abortMultipart(marker, marker.slice(markers.length))) kept.add(marker);
      }
      await this.#deleter.delete(keys.filter((k) => !kept.has(k)));
      this.#chunks.delete(key);
    } finally {
      // A record read begun before the removal ended (or failed) may have found the record not yet
      // deleted: no lookup after it may take that read.
      this.#recordReads.forget(key);
    }
  }

  /**
   * The objects under `files/<id>/` of the file ids `key`'s record and chunk folders (`keys`) name,
   * but `completed`'s, the published one.
   */
  async #unpublishedFiles(key: string, keys: string[], completed: StoredFile | undefined): Promise<string[]> {
    const record = await this.#readRecord(key);
    const chunks = this.#upload(key, "chunks/");
    const ids = new Set(record ? [record.fileId] : []);
    for (const objectKey of keys) {
      if (objectKey.startsWith(chunks)) ids.add(objectKey.slice(chunks.length).split("/")[0]!);
    }
    if (completed) ids.delete(completed.id);
    const files: string[] = [];
    for (const id of ids) if (isFileId(id)) files.push(...await this.#keysUnder(this.#fileDir(id)));
    return files;
  }

  /**
   * Waits until no assembly of the upload is under way, and keeps any from starting. An assembler
   * past its last check writes the completion record under the upload's key; were the upload removed
   * and begun again meanwhile, that record would complete the new upload with the old file. So the
   * removal takes the claim itself, once the assembler's is released or has expired (a live
   * assembler renews its own), unless the completion is already recorded. Resolves the completion
   * record if there is one, else `undefined` once the claim is the removal's.
   */
  async #waitOutAssembly(key: string): Promise<StoredFile | undefined> {
    const lease: Lease = { owner: `removal-${crypto.randomUUID()}`, ttlMs: REMOVAL_CLAIM_MS };
    const giveUpAt = Date.now() + this.#removalWaitMs;
    for (let failures = 0;;) {
      try {
        const completed = await this.#completion(key);
        if (completed) return completed;
        if (await this.claim(key, lease)) return undefined;
        failures = 0;
      } catch (error) {
        // A claim whose PUT failed on its way (conditional PUTs are not sent again): asked again,
        // like a claim held by another. A store that keeps failing fails the removal.
        if (++failures >= REMOVAL_ATTEMPTS) throw error;
      }
      if (Date.now() >= giveUpAt) {
        throw new Error(
          `Upload "${key}" is still being assembled after ${this.#removalWaitMs} ms; its removal gives up for now`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, CLAIM_POLL_MS));
    }
  }

  #removal(key: string): string {
    return `${this.#prefix}removed/${checkedKey(key)}`;
  }

  /** Notes that `key` is being removed, before anything is: see `removedAt`. */
  async #noteRemoval(key: string): Promise<void> {
    const now = preciseNow();
    await this.#client.text("PUT", this.#removal(key), { body: String(now) });
    // A note per removal: those past their use go, at most once a minute per instance (and in sweeps).
    if (Date.now() - this.#removalsPruned >= PRUNE_EVERY_MS) await this.#pruneRemovals().catch(() => {});
  }

  /** Deletes the notes of removals older than `removedAt` tells. */
  async #pruneRemovals(): Promise<void> {
    const now = Date.now();
    this.#removalsPruned = now;
    const old: string[] = [];
    for await (const item of this.#client.list(`${this.#prefix}removed/`)) {
      if (forgotten(item.lastModified, now)) old.push(item.key);
    }
    await this.#deleter.delete(old);
  }

  /** When the upload was last removed, within the last ten minutes. */
  async removedAt(key: string): Promise<number | undefined> {
    const objectKey = this.#removal(key);
    const response = await this.#client.send("GET", objectKey);
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) return this.#client.fail("GET", objectKey, response);
    return recentRemoval(Number(await response.text()));
  }

  /** Aborts the multipart upload `marker` records; `false` when that may not have happened. */
  async #abortMultipart(marker: string, uploadId: string): Promise<boolean> {
    const found = await this.#client.send("GET", marker).catch(() => undefined);
    if (found?.status === 404) {
      await found.body?.cancel();
      return true;
    }
    if (!found?.ok) {
      await found?.body?.cancel();
      return false;
    }
    const location = await found.text().catch(() => undefined);
    if (location === undefined) return false;
    const response = await this.#client.send("DELETE", location, { query: { uploadId } })
      .catch(() => undefined);
    await response?.body?.cancel();
    // 404 NoSuchUpload: it was completed or aborted already.
    return response !== undefined && (response.ok || response.status === 404);
  }

  /** Deletes a completed file and its metadata. */
  async removeFile(fileId: string): Promise<void> {
    if (!isFileId(fileId)) return;
    await this.#deleter.delete(await this.#keysUnder(this.#fileDir(fileId)));
  }

  /** Lists uploads; an upload's last activity is its newest object's `Last-Modified`. */
  async *listUploads(): AsyncIterable<UploadActivity> {
    const root = `${this.#prefix}uploads/`;
    // Best effort: old notes of removals must not stop the sweep of the uploads themselves.
    await this.#pruneRemovals().catch(() => {});
    for await (const dir of this.#client.list(root, { delimiter: "/" })) {
      if (!dir.isPrefix) continue;
      const key = dir.key.slice(root.length, -1);
      if (!isUploadKey(key)) continue;
      const activity = await this.#activity(key);
      if (activity) yield activity;
    }
  }

  /** The last activity of one upload, or `undefined` when it is gone. */
  async lastActivity(key: string): Promise<number | undefined> {
    return isUploadKey(key) ? (await this.#activity(key))?.lastActivity : undefined;
  }

  async #activity(key: string): Promise<UploadActivity | undefined> {
    let lastActivity = 0;
    let completed = false;
    for await (const item of this.#client.list(this.#upload(key))) {
      lastActivity = Math.max(lastActivity, item.lastModified);
      if (item.key.endsWith("/complete.json")) completed = true;
    }
    return lastActivity > 0 ? { key, lastActivity, completed } : undefined;
  }
}

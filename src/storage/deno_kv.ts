/**
 * An {@linkcode UploadStorage} on Deno KV: the storage for Deno Deploy, where there is no file
 * system and every isolate shares one database. Also works on a local `Deno.openKv(path)` shared by
 * several processes, and on `":memory:"` for tests.
 *
 * Bytes are split into values of 64 KiB (the KV value limit) written in commits of at most 640 KiB
 * (under the 800 KiB commit limit). A chunk's parts are written under a fresh write id first, and
 * the chunk becomes visible only when one atomic commit adds its presence key, so nobody ever sees
 * half a chunk. Claims and completion use `atomic().check()` on versionstamps: exactly one commit
 * wins, and publishing is fenced by the claim's versionstamp. Assembly copies nothing: the file is
 * published, with the completion record in one commit, as the list of its chunks' writes (its
 * manifest), whose parts then belong to the file. Chunk parts are keyed by the upload record's file
 * id, so an upload removed and begun again under the same key never shares them.
 *
 * Key layout under `prefix` (default `["resumable"]`):
 * ```
 * ["upload", key]                      upload record; while a removal deletes the upload, its tombstone
 * ["chunk", key, n]                    { size, writeId, fileId }: chunk n is visible
 * ["chunkpart", fileId, n, writeId, i] its bytes, 64 KiB per value, under the record's file id
 * ["count", key]                       Deno.KvU64 number of visible chunks
 * ["activity", key]                    last write, ms since the epoch
 * ["claim", key]                       assembly lease
 * ["complete", key]                    completion record
 * ["file", id]                         { file, manifest } of a completed file
 * ["manifest", id, publishId, i]       its chunks' [writeId, size], in order, 1000 per value
 * ["filepart", id, writeId, i]         the bytes of a file streamed in by `commit`
 * ```
 *
 * This is the only module of the library that names `Deno`.
 *
 * @example
 * ```ts ignore
 * import { createResumableHandler } from "@resumable/server";
 * import { DenoKvStorage } from "@resumable/server/deno-kv";
 *
 * const kv = await Deno.openKv();
 * Deno.serve(createResumableHandler({ storage: new DenoKvStorage({ kv }) }));
 * ```
 *
 * @module
 */

import { preciseNow, recentRemoval, REMOVAL_MEMORY_MS } from "./_removals.ts";
import { ReadsAfterCheck } from "./_reads_after_check.ts";
import { concatLazily, expectTotalSize } from "../_concat.ts";
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

// Every storage type, so that this entry point documents what its exports refer to.
export type * from "./types.ts";

/** Options of {@linkcode DenoKvStorage}. */
export interface DenoKvStorageOptions {
  /** An open database, e.g. `await Deno.openKv()`; the caller closes it. */
  kv: Deno.Kv;
  /**
   * Key prefix of everything this storage writes.
   * @default {["resumable"]}
   */
  prefix?: Deno.KvKey;
  /**
   * Where completed files go instead of KV, e.g. a bucket or a disk. KV still holds the chunks, the
   * claims and the completion record, which decides exactly once.
   * @default {undefined} (files are stored in KV)
   */
  files?: KvFileTarget;
  /**
   * How often to retry an operation that failed transiently ("database is locked" when several
   * processes share a local database file). A listing resumes after the last entry it read.
   * @default {8}
   */
  retries?: number;
}

/**
 * A place outside KV for completed files, for {@linkcode DenoKvStorageOptions.files}.
 *
 * @example Keeping completed files in a Map (a real target writes to a bucket or a disk)
 * ```ts
 * import { DenoKvStorage, type KvFileTarget } from "@resumable/server/deno-kv";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Map<string, Uint8Array<ArrayBuffer>>();
 * const files: KvFileTarget = {
 *   async write(file, data) {
 *     const body = new Uint8Array(await new Response(data).arrayBuffer());
 *     bytes.set(file.id, body);
 *     return { size: body.byteLength, location: `memory:${file.id}` };
 *   },
 *   open: (file) => Promise.resolve(bytes.has(file.id) ? new Blob([bytes.get(file.id)!]).stream() : undefined),
 *   remove: (file) => Promise.resolve(void bytes.delete(file.id)),
 * };
 * using kv = await Deno.openKv(":memory:");
 * const storage = new DenoKvStorage({ kv, files });
 * assert.ok(storage);
 * ```
 */
export interface KvFileTarget {
  /**
   * Writes the bytes of `file` (named by `file.id`) and resolves their size and location. May be
   * called again for the same id, always with the same bytes (a retried or taken-over assembly).
   */
  write(file: StoredFile, data: ReadableStream<Uint8Array>): Promise<{ size: number; location?: string }>;
  /** Opens the bytes of a file written before, or resolves `undefined`. */
  open(file: StoredFile): Promise<ReadableStream<Uint8Array> | undefined>;
  /** Deletes the bytes of a file. Idempotent. */
  remove(file: StoredFile): Promise<void>;
}

interface ClaimValue {
  owner: string;
  generation: number;
  expiresAt: number;
}

interface ChunkValue {
  size: number;
  writeId: string;
  /** The file id of the upload record the chunk was stored for: its parts are keyed by it. */
  fileId: string;
}

interface FileValue {
  file: StoredFile;
  /** The bytes were streamed into `["filepart", id, writeId]` (by `commit`). */
  writeId?: string;
  /** The bytes are the chunks listed under `["manifest", id, manifest]` (by `commitChunks`). */
  manifest?: string;
  /** The bytes are in the file target, not in KV. */
  external?: boolean;
}

/** A chunk of an assembled file: the write whose parts hold it, and its size. */
type ManifestEntry = [writeId: string, size: number];

/** Largest KV value. */
const PART = 64 * 1024;
/** Chunks per manifest value: about 45 bytes each, well under the 64 KiB value limit. */
const MANIFEST_ENTRIES = 1000;
/** Parts per commit: 10 x 64 KiB stays well under the 800 KiB commit limit with keys. */
const PARTS_PER_COMMIT = 10;
const DELETES_PER_COMMIT = 500;
/**
 * Parts listed at a time to delete them: a listing returns values too, and 500 parts of 64 KiB
 * held at once made removing a large upload cost 32 MiB of memory.
 */
const PARTS_PER_LISTING = 16;
/** Upload records a handle keeps the last read of (see `#records`): about 300 bytes each. */
const RECORDS_NOTED = 1000;
/** Publishing commits to try while only our own lease renewals get in the way. */
const PUBLISH_ATTEMPTS = 5;
const TRANSIENT = /database is locked|busy|timed? ?out|temporar|unavailable|connection/i;

function writeId(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

/**
 * What the upload record's key holds while a removal deletes the upload's chunks, in place of the
 * record: no new upload of the key can begin before the removal is done (its deletes would take
 * the new upload's chunks and counter), and the removal's deletes stop if another takes it over.
 * `until`: when a removal that died is to be taken over (a new upload of the key finishes it).
 */
interface Tombstone {
  removing: string;
  key: string;
  fileIds: string[];
  at: number;
  until: number;
}

/** How long a removal may take before a new upload of its key takes it over. */
const REMOVAL_LEASE_MS = 60_000;
/** How long `createUpload` waits for a removal of its key under way, before failing (retryable). */
const REMOVAL_WAIT_MS = 5_000;

function isTombstone(value: unknown): value is Tombstone {
  return typeof (value as Tombstone | null)?.removing === "string";
}

/** The upload record's entry, if there is a record (not nothing, nor a removal's tombstone). */
function found(entry: Deno.KvEntryMaybe<UploadRecord | Tombstone>): Deno.KvEntry<UploadRecord> | undefined {
  return entry.value === null || isTombstone(entry.value) ? undefined : entry as Deno.KvEntry<UploadRecord>;
}

/** `entry` if it is the claim `claim` took, still held: neither taken over nor released. */
function heldBy(entry: Deno.KvEntryMaybe<ClaimValue>, claim: Claim): Deno.KvEntry<ClaimValue> | undefined {
  const value = entry.value;
  if (value?.generation !== claim.generation || value.owner !== claim.owner) return undefined;
  return entry as Deno.KvEntry<ClaimValue>;
}

/**
 * Stores uploads in a Deno KV database.
 *
 * @example Storing a chunk in an in-memory database
 * ```ts
 * import { DenoKvStorage } from "@resumable/server/deno-kv";
 * import assert from "node:assert/strict";
 *
 * using kv = await Deno.openKv(":memory:");
 * const storage = new DenoKvStorage({ kv });
 * const key = "0".repeat(32);
 * await storage.createUpload({
 *   key,
 *   fileId: "0".repeat(24),
 *   identifier: "5-hello",
 *   fileName: "hello.txt",
 *   relativePath: "hello.txt",
 *   type: "text/plain",
 *   totalSize: 5,
 *   chunkSize: 5,
 *   createdAt: Date.now(),
 * });
 * await storage.putChunk(key, 1, new Blob(["hello"]).stream());
 * assert.equal(await storage.chunkSize(key, 1), 5);
 * assert.equal(await storage.countChunks(key), 1);
 * ```
 */
export class DenoKvStorage implements UploadStorage {
  #kv: Deno.Kv;
  #prefix: Deno.KvKey;
  #retries: number;
  #files: KvFileTarget | undefined;
  /**
   * The upload records this handle last read, with their versionstamps, so that storing a chunk need
   * not read its record again right after `createUpload` did: the chunk's commit checks the
   * versionstamp anyway, and fails if the record changed since. Least recently read first; bounded.
   */
  #records = new Map<string, Deno.KvEntry<UploadRecord>>();
  /**
   * The upload records read along with the newest completion check of each upload (see
   * `getCompleted`), for the record lookups that follow it in the same request.
   */
  #recordReads = new ReadsAfterCheck<Deno.KvEntry<UploadRecord>>();

  /**
   * Creates a storage over an open database.
   *
   * @param options The database and key prefix.
   */
  constructor(options: DenoKvStorageOptions) {
    this.#kv = options.kv;
    this.#prefix = options.prefix ?? ["resumable"];
    this.#retries = options.retries ?? 8;
    this.#files = options.files;
  }

  #key(...parts: Deno.KvKeyPart[]): Deno.KvKey {
    return [...this.#prefix, ...parts];
  }

  /** Runs `operation`, retrying transient failures with jittered exponential backoff. */
  async #retry<T>(operation: () => Promise<T>): Promise<T> {
    for (let attempt = 0;; attempt++) {
      try {
        return await operation();
      } catch (error) {
        await this.#backOff(error, attempt);
      }
    }
  }

  /** Waits before retry `attempt` of an operation that failed with `error`, or throws it. */
  async #backOff(error: unknown, attempt: number): Promise<void> {
    if (attempt >= this.#retries || !TRANSIENT.test(String((error as Error)?.message ?? error))) {
      throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 10 * 2 ** attempt) * Math.random()));
  }

  /**
   * `kv.list`, retried like every other operation: after a transient failure it resumes at the
   * cursor of the last entry it yielded, so no entry is skipped or repeated.
   */
  async *#list<T>(selector: Deno.KvListSelector, options: Deno.KvListOptions = {}): AsyncGenerator<
    Deno.KvEntry<T>
  > {
    let cursor: string | undefined;
    for (let attempt = 0;; attempt++) {
      const entries = this.#kv.list<T>(selector, cursor === undefined ? options : { ...options, cursor });
      try {
        for await (const entry of entries) {
          cursor = entries.cursor;
          attempt = 0;
          yield entry;
        }
        return;
      } catch (error) {
        await this.#backOff(error, attempt);
      }
    }
  }

  #get<T>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>> {
    return this.#retry(() => this.#kv.get<T>(key));
  }

  #commit(build: (op: Deno.AtomicOperation) => Deno.AtomicOperation): Promise<boolean> {
    return this.#retry(async () => (await build(this.#kv.atomic()).commit()).ok);
  }

  /**
   * Runs a checked commit whose outcome `applied` can tell afterwards. A commit may apply and still
   * fail (its reply lost), and a retry of it is then refused by its own checks: without asking,
   * the caller would take its own write for someone else's, and undo or abandon it.
   */
  async #commitChecked(
    build: (op: Deno.AtomicOperation) => Deno.AtomicOperation,
    applied: () => Promise<boolean>,
  ): Promise<boolean> {
    let ok: boolean;
    try {
      ok = await this.#commit(build);
    } catch (error) {
      if (await applied().catch(() => false)) return true;
      throw error;
    }
    return ok || await applied();
  }

  /**
   * Writes `data` as 64 KiB values under `base`, and returns the byte count. With `last`, the final
   * values go in one commit with what `last` adds (given the byte count), and `added` tells whether
   * that commit's checks passed; on `false`, or if that commit fails, the values written stay for the
   * caller to remove or keep (the commit may have applied). On any other failure every value written
   * is removed.
   */
  async #writeParts(
    base: Deno.KvKey,
    data: ReadableStream<Uint8Array>,
    signal?: AbortSignal,
    last?: (op: Deno.AtomicOperation, size: number) => Deno.AtomicOperation,
  ): Promise<{ size: number; added: boolean }> {
    let batch: Uint8Array[] = [];
    let written = 0;
    let size = 0;
    let buffer = new Uint8Array(PART);
    let filled = 0;
    let added = true;
    let lastCommitted = false;
    const flush = async (final: boolean) => {
      if (final && filled > 0) {
        batch.push(buffer.slice(0, filled));
        filled = 0;
      }
      if (batch.length === PARTS_PER_COMMIT || (final && (batch.length > 0 || last))) {
        const parts = batch;
        batch = [];
        lastCommitted = final && last !== undefined;
        const ok = await this.#commit((op) => {
          parts.forEach((part, i) => op.set([...base, written + i], part));
          return final && last ? last(op, size) : op;
        });
        written += parts.length;
        if (final) added = ok;
      }
    };
    try {
      for await (const piece of data) {
        signal?.throwIfAborted();
        size += piece.byteLength;
        let offset = 0;
        while (offset < piece.byteLength) {
          // A full batch is committed only once a byte follows it: else it is the last, and goes
          // with `last`.
          if (batch.length === PARTS_PER_COMMIT) await flush(false);
          const n = Math.min(PART - filled, piece.byteLength - offset);
          buffer.set(piece.subarray(offset, offset + n), filled);
          filled += n;
          offset += n;
          if (filled === PART) {
            batch.push(buffer);
            buffer = new Uint8Array(PART);
            filled = 0;
          }
        }
      }
      signal?.throwIfAborted();
      await flush(true);
      return { size, added };
    } catch (error) {
      if (!lastCommitted) await this.#deletePrefix(base).catch(() => {});
      throw error;
    }
  }

  /** Streams the values under `base` in order, a few at a time. */
  #readParts(base: Deno.KvKey): ReadableStream<Uint8Array> {
    return ReadableStream.from(this.#partsUnder(base));
  }

  async *#partsUnder(base: Deno.KvKey): AsyncGenerator<Uint8Array> {
    for await (const part of this.#list<Uint8Array>({ prefix: base }, { batchSize: 4 })) yield part.value;
  }

  /**
   * Deletes every key under `prefix`, a batch per commit. With `only`, each batch also checks that
   * entry unchanged, and the deleting stops once a batch finds it changed: false then.
   */
  async #deletePrefix(prefix: Deno.KvKey, only?: Deno.AtomicCheck): Promise<boolean> {
    let keys: Deno.KvKey[] = [];
    const flush = async () => {
      const batch = keys;
      keys = [];
      return await this.#commit((op) => {
        if (only) op.check(only);
        for (const key of batch) op.delete(key);
        return op;
      });
    };
    const kind = prefix[this.#prefix.length];
    const batchSize = kind === "chunkpart" || kind === "filepart" ? PARTS_PER_LISTING : DELETES_PER_COMMIT;
    for await (const entry of this.#list({ prefix }, { batchSize })) {
      keys.push(entry.key);
      if (keys.length === DELETES_PER_COMMIT && !await flush()) return false;
    }
    return keys.length === 0 || await flush();
  }

  /**
   * Creates the upload record if absent (one winner by `check({ versionstamp: null })`). Every chunk
   * calls this and all but the first find the record, so it is read first: a commit refused by its
   * check costs a write round trip (to the primary region on Deno Deploy), then the read anyway.
   */
  async createUpload(record: UploadRecord): Promise<UploadRecord> {
    const key = this.#key("upload", record.key);
    const waitUntil = Date.now() + REMOVAL_WAIT_MS;
    for (let attempt = 0;; attempt++) {
      if (attempt === 0) {
        const existing = await this.#recordAfterCheck(record.key);
        if (existing) return this.#noteRecord(record.key, existing);
      } else {
        const slot = await this.#get<UploadRecord | Tombstone>(key);
        const existing = found(slot);
        if (existing) return this.#noteRecord(record.key, existing);
        if (isTombstone(slot.value)) {
          // A removal of this key is under way: its deletes must end before this upload begins.
          if (slot.value.until <= Date.now()) {
            await this.#remove(record.key, {}, slot as Deno.KvEntry<Tombstone>);
          } else if (Date.now() >= waitUntil) {
            throw new Error(`Upload "${record.key}" is still being removed; try again`);
          } else {
            await new Promise((resolve) => setTimeout(resolve, 25 + 50 * Math.random()));
          }
          continue;
        }
      }
      const ok = await this.#commit((op) =>
        op.check({ key, versionstamp: null }).set(key, record).set(
          this.#key("activity", record.key),
          Date.now(),
        )
      );
      if (ok) return record;
    }
  }

  /**
   * The record as read with the newest completion check of `key`, or a read of its own; putChunk's
   * commit checks its versionstamp anyway.
   */
  async #recordAfterCheck(key: string): Promise<Deno.KvEntry<UploadRecord> | undefined> {
    return await this.#recordReads.take(key, () => this.#readRecord(key));
  }

  /** The upload record's entry, read now, if there is a record. */
  async #readRecord(key: string): Promise<Deno.KvEntry<UploadRecord> | undefined> {
    return found(await this.#get(this.#key("upload", key)));
  }

  #noteRecord(key: string, entry: Deno.KvEntry<UploadRecord>): UploadRecord {
    this.#records.delete(key);
    if (this.#records.size >= RECORDS_NOTED) this.#records.delete(this.#records.keys().next().value!);
    this.#records.set(key, entry);
    return entry.value;
  }

  /**
   * The upload record, or `undefined`. Taken from the read of a completion check within the last
   * second, when that found it (see `#recordAfterCheck`): the handler asks right after one.
   */
  async getUpload(key: string): Promise<UploadRecord | undefined> {
    return (await this.#recordAfterCheck(key))?.value;
  }

  /**
   * Writes the chunk's parts under a new write id, then makes it visible and counts it in one
   * commit. A chunk already stored stays as it is (readers may be streaming it); this copy is dropped.
   * The commit checks the upload record read first, so a chunk of an upload removed meanwhile (and
   * perhaps begun again under the same key) is refused rather than left behind or inherited.
   */
  async putChunk(
    key: string,
    index: number,
    data: ReadableStream<Uint8Array>,
    { signal, fileId }: PutChunkOptions = {},
  ): Promise<void> {
    if (!Number.isSafeInteger(index) || index < 1) throw new RangeError(`Invalid chunk index ${index}`);
    const uploadKey = this.#key("upload", key);
    // The record createUpload read for this chunk's request, if it is the one the chunk is for.
    const noted = fileId === undefined ? undefined : this.#records.get(key);
    const upload = noted !== undefined && noted.value.fileId === fileId
      ? noted
      : found(await this.#get<UploadRecord | Tombstone>(uploadKey));
    const missing = () => new Error(`Cannot store chunk ${index}: upload "${key}" does not exist`);
    // The commit below checks that the record is still this one.
    if (!upload || (fileId !== undefined && upload.value.fileId !== fileId)) {
      await data.cancel().catch(() => {});
      throw missing();
    }
    const id = writeId();
    const parts = this.#key("chunkpart", upload.value.fileId, index, id);
    const chunkKey = this.#key("chunk", key, index);
    // Made visible and counted in the commit of its last parts (one commit for a chunk of up to
    // 640 KiB, one per 640 KiB above), and only while the upload is not complete: its chunks may be
    // removed already, and a late copy would be left behind, counted, and never removed.
    const visible = (op: Deno.AtomicOperation, size: number) =>
      op.check(upload).check({ key: chunkKey, versionstamp: null })
        .check({ key: this.#key("complete", key), versionstamp: null })
        .set(chunkKey, { size, writeId: id, fileId: upload.value.fileId } satisfies ChunkValue)
        .sum(this.#key("count", key), 1n)
        .set(this.#key("activity", key), Date.now());
    // A commit that failed, or was retried after losing its reply, may have applied all the same:
    // the chunk is then this very copy, and its parts must stay.
    const ours = async () => (await this.#get<ChunkValue>(chunkKey)).value?.writeId === id;
    let added: boolean;
    try {
      ({ added } = await this.#writeParts(parts, data, signal, visible));
    } catch (error) {
      const mine = await ours().catch(() => undefined);
      if (mine) return; // the commit applied: the chunk is stored
      // Parts of a chunk that may be visible (unknown) stay: an orphan costs less than a torn chunk.
      if (mine === false) await this.#dropCopy(parts, upload.value.fileId, index, id).catch(() => {});
      throw error;
    }
    if (added) return;
    const [mine, record] = await Promise.all([ours(), this.#get(uploadKey)]);
    if (mine) return;
    await this.#dropCopy(parts, upload.value.fileId, index, id);
    // Either the chunk was stored already (fine) or the upload record changed under us.
    if (record.versionstamp !== upload.versionstamp) {
      this.#records.delete(key);
      throw missing();
    }
  }

  /**
   * Deletes the parts of copy `writeId` of chunk `index`, a copy that is not the upload's chunk now.
   * "Not the chunk now" may mean that it was, and the upload was assembled from it and its chunks
   * removed since (a visibility commit whose reply was lost): then the published file's manifest
   * lists this copy, and its parts stay with the file. While no file is published, each batch of
   * deletes checks that none is; a published file never changes, and reads no copy it does not list.
   */
  async #dropCopy(parts: Deno.KvKey, fileId: string, index: number, writeId: string): Promise<void> {
    const fileKey = this.#key("file", fileId);
    const file = await this.#get<FileValue>(fileKey);
    if (file.value === null) {
      await this.#deletePrefix(parts, { key: fileKey, versionstamp: null });
      return;
    }
    if (file.value.manifest !== undefined && await this.#lists(fileId, file.value.manifest, index, writeId)) {
      return;
    }
    await this.#deletePrefix(parts);
  }

  /** Whether manifest `manifest` of file `fileId` lists copy `writeId` of chunk `index`. */
  async #lists(fileId: string, manifest: string, index: number, writeId: string): Promise<boolean> {
    const slot = index - 1;
    const value = Math.floor(slot / MANIFEST_ENTRIES);
    const entries = await this.#get<ManifestEntry[]>(this.#key("manifest", fileId, manifest, value));
    return entries.value?.[slot % MANIFEST_ENTRIES]?.[0] === writeId;
  }

  /** Size of a stored chunk, or `undefined`. */
  async chunkSize(key: string, index: number): Promise<number | undefined> {
    return (await this.#get<ChunkValue>(this.#key("chunk", key, index))).value?.size;
  }

  /** Reads the chunk counter: one get. */
  async countChunks(key: string): Promise<number> {
    const count = await this.#get<Deno.KvU64>(this.#key("count", key));
    return count.value ? Number(count.value.value) : 0;
  }

  /** Streams a stored chunk out of its parts. */
  async openChunk(key: string, index: number): Promise<ReadableStream<Uint8Array>> {
    const chunk = await this.#get<ChunkValue>(this.#key("chunk", key, index));
    if (!chunk.value) throw new Error(`Chunk ${index} of upload "${key}" is not stored`);
    return this.#readParts(this.#key("chunkpart", chunk.value.fileId, index, chunk.value.writeId));
  }

  /** Takes the claim if there is none or it expired, checking the versionstamp it read. */
  async claim(key: string, lease: Lease): Promise<Claim | undefined> {
    const claimKey = this.#key("claim", key);
    const completeKey = this.#key("complete", key);
    const [held, done] = await this.#retry(() =>
      this.#kv.getMany<[ClaimValue, StoredFile]>([claimKey, completeKey])
    );
    if (done.value || (held.value && held.value.expiresAt > Date.now())) return undefined;
    const value: ClaimValue = {
      owner: lease.owner,
      generation: (held.value?.generation ?? 0) + 1,
      expiresAt: Date.now() + lease.ttlMs,
    };
    const ok = await this.#commitChecked(
      (op) => op.check(held).check(done).set(claimKey, value).set(this.#key("activity", key), Date.now()),
      async () => (await this.#get<ClaimValue>(claimKey)).value?.owner === lease.owner,
    );
    return ok ? { key, owner: lease.owner, generation: value.generation } : undefined;
  }

  async #held(claim: Claim): Promise<Deno.KvEntry<ClaimValue> | undefined> {
    return heldBy(await this.#get<ClaimValue>(this.#key("claim", claim.key)), claim);
  }

  /** Extends the lease unless it was taken over; a renewal is activity, so sweeps keep the upload. */
  async renewClaim(claim: Claim, lease: Lease): Promise<boolean> {
    const held = await this.#held(claim);
    if (!held) return false;
    const renewed = { ...held.value, expiresAt: Date.now() + lease.ttlMs };
    return await this.#commitChecked(
      (op) => op.check(held).set(held.key, renewed).set(this.#key("activity", claim.key), Date.now()),
      async () => (await this.#held(claim))?.value.expiresAt === renewed.expiresAt,
    );
  }

  /** Expires a claim at once, unless it was taken over meanwhile; the generation stays used. */
  async releaseClaim(claim: Claim): Promise<void> {
    const held = await this.#held(claim);
    if (held) await this.#commit((op) => op.check(held).set(held.key, { ...held.value, expiresAt: 0 }));
  }

  /**
   * Streams `data` into file parts, then publishes the file and the completion record in one commit
   * that checks the claim's versionstamp (true fencing: a stale claimant can never publish).
   */
  async commit(
    claim: Claim,
    data: ReadableStream<Uint8Array>,
    file: StoredFile,
  ): Promise<StoredFile | undefined> {
    if (!await this.#mayAssemble(claim)) {
      await data.cancel().catch(() => {});
      return undefined;
    }
    const id = writeId();
    const parts = this.#key("filepart", file.id, id);
    let stored: StoredFile;
    if (this.#files) {
      const { size, location } = await this.#files.write(file, data);
      stored = location === undefined ? { ...file, size } : { ...file, size, location };
    } else {
      stored = { ...file, size: (await this.#writeParts(parts, data)).size };
    }
    const value: FileValue = this.#files
      ? { file: stored, writeId: id, external: true }
      : { file: stored, writeId: id };
    const published = await this.#publish(claim, value, id);
    if (!published && !this.#files) await this.#deletePrefix(parts);
    // A target's bytes are named by the file id, so they are a winner's bytes too, and stay; unless
    // the upload was removed (a cancel wins over an assembly): nobody can publish that id then, and
    // nothing would ever delete them.
    if (!published && this.#files && await this.#unpublishable(claim.key, file.id)) {
      await this.#files.remove(stored).catch(() => {});
    }
    return published;
  }

  /** Whether no file `fileId` is published, nor can be: the upload's record is no longer its own. */
  async #unpublishable(key: string, fileId: string): Promise<boolean> {
    const [record, published] = await this.#retry(() =>
      this.#kv.getMany<[UploadRecord | Tombstone, FileValue]>([
        this.#key("upload", key),
        this.#key("file", fileId),
      ])
    );
    if (published.value !== null) return false;
    return !record.value || isTombstone(record.value) || record.value.fileId !== fileId;
  }

  /**
   * Assembles without copying a byte: publishes the file as the list of its chunks' writes, whose
   * parts then belong to it (removals keep them; `removeFile` deletes them). With a file target, the
   * chunks are streamed into it instead.
   */
  async commitChunks(claim: Claim, chunkCount: number, file: StoredFile): Promise<StoredFile | undefined> {
    if (this.#files) {
      const data = concatLazily(chunkCount, (index) => this.openChunk(claim.key, index));
      return await this.commit(claim, expectTotalSize(data, file.size), file);
    }
    if (!await this.#mayAssemble(claim)) return undefined;
    const manifest = await this.#manifestOf(claim.key, chunkCount, file);
    // Chunks gone because a removal (which deletes the claim first) is under way: not an error, a
    // lost claim.
    if (typeof manifest === "string") {
      if (!await this.#held(claim)) return undefined;
      throw new Error(manifest);
    }
    const id = writeId();
    const base = this.#key("manifest", file.id, id);
    for (let value = 0; value * MANIFEST_ENTRIES < manifest.length; value += PARTS_PER_COMMIT) {
      await this.#commit((op) => {
        for (let i = value; i < value + PARTS_PER_COMMIT && i * MANIFEST_ENTRIES < manifest.length; i++) {
          op.set([...base, i], manifest.slice(i * MANIFEST_ENTRIES, (i + 1) * MANIFEST_ENTRIES));
        }
        return op;
      });
    }
    const published = await this.#publish(claim, { file, manifest: id }, id);
    if (!published) await this.#deletePrefix(base);
    return published;
  }

  /** The writes and sizes of chunks `1..chunkCount` of `key`, or why they cannot make `file`. */
  async #manifestOf(key: string, chunkCount: number, file: StoredFile): Promise<ManifestEntry[] | string> {
    const manifest: ManifestEntry[] = [];
    let size = 0;
    for await (
      const entry of this.#list<ChunkValue>({ prefix: this.#key("chunk", key) }, { batchSize: 500 })
    ) {
      const index = entry.key.at(-1);
      if (typeof index !== "number" || index > chunkCount) continue;
      if (index !== manifest.length + 1) break;
      if (entry.value.fileId !== file.id) return `Chunk ${index} of "${key}" belongs to another upload`;
      manifest.push([entry.value.writeId, entry.value.size]);
      size += entry.value.size;
    }
    if (manifest.length !== chunkCount) return `Chunk ${manifest.length + 1} of "${key}" is not stored`;
    if (size !== file.size) return `Chunks of "${key}" hold ${size} bytes, not ${file.size}`;
    return manifest;
  }

  /** Whether `claim` is still held and the upload not completed. */
  async #mayAssemble(claim: Claim): Promise<boolean> {
    return await this.#held(claim) !== undefined &&
      (await this.#get(this.#key("complete", claim.key))).value === null;
  }

  /**
   * Publishes `value` with the completion record in one commit that checks the claim, the record
   * and that nobody completed. `id` is the write's own (`value.writeId` or `value.manifest`).
   */
  async #publish(claim: Claim, value: FileValue, id: string): Promise<StoredFile | undefined> {
    const { file } = value;
    const completeKey = this.#key("complete", claim.key);
    const fileKey = this.#key("file", file.id);
    const ours = (found: FileValue | null) => (found?.writeId ?? found?.manifest) === id;
    // Our own lease renewal (every lease/3) also changes the claim's versionstamp: retry while the
    // claim is still ours and nobody completed; only a takeover or a completion loses.
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      // One read of the three, where reads in a row cost a round trip each to a remote database.
      const [claimEntry, record, completed] = await this.#retry(() =>
        this.#kv.getMany<[ClaimValue, UploadRecord, StoredFile]>([
          this.#key("claim", claim.key),
          this.#key("upload", claim.key),
          completeKey,
        ])
      );
      const held = heldBy(claimEntry, claim);
      // The record must still be the one the file was made from (not removed and begun again).
      if (!held || record.value?.fileId !== file.id || completed.value) break;
      const ok = await this.#commitChecked(
        (op) =>
          op.check(held).check(record).check({ key: completeKey, versionstamp: null })
            .set(completeKey, file)
            .set(fileKey, value)
            .set(this.#key("activity", claim.key), Date.now()),
        async () => ours((await this.#get<FileValue>(fileKey)).value),
      );
      if (ok) return file;
    }
    return undefined;
  }

  /**
   * The completion record, or `undefined`. The upload record is read in the same `getMany`, for the
   * record lookups the handler makes next: a chunk then costs one read before its commit, not two.
   */
  async getCompleted(key: string): Promise<StoredFile | undefined> {
    const both = this.#retry(() =>
      this.#kv.getMany<[StoredFile, UploadRecord]>([this.#key("complete", key), this.#key("upload", key)])
    );
    this.#recordReads.begin(key, both.then(([, record]) => found(record)));
    const [completed] = await both;
    if (completed.value) this.#recordReads.forget(key);
    return completed.value ?? undefined;
  }

  /** Opens a completed file by id, streaming it out of KV. */
  async openFile(fileId: string): Promise<OpenedFile | undefined> {
    const entry = await this.#get<FileValue>(this.#key("file", fileId));
    if (!entry.value) return undefined;
    if (entry.value.external) {
      const body = await this.#files?.open(entry.value.file);
      return body && { file: entry.value.file, body };
    }
    const { file, manifest, writeId } = entry.value;
    return {
      file,
      body: manifest === undefined
        ? this.#readParts(this.#key("filepart", fileId, writeId!))
        : this.#readChunks(fileId, manifest),
    };
  }

  /**
   * Streams the chunks a file's manifest lists, in order, a few parts at a time. A chunk whose parts
   * do not add up to its size errors the stream: a short file must not pass for a whole one.
   */
  #readChunks(fileId: string, manifest: string): ReadableStream<Uint8Array> {
    return ReadableStream.from(this.#chunksOf(fileId, manifest));
  }

  async *#chunksOf(fileId: string, manifest: string): AsyncGenerator<Uint8Array> {
    let index = 0;
    for await (
      const entries of this.#list<ManifestEntry[]>({ prefix: this.#key("manifest", fileId, manifest) })
    ) {
      for (const [writeId, size] of entries.value) {
        index++;
        let read = 0;
        for await (const part of this.#partsUnder(this.#key("chunkpart", fileId, index, writeId))) {
          read += part.byteLength;
          yield part;
        }
        if (read !== size) {
          throw new Error(`Chunk ${index} of file "${fileId}" has ${read} bytes, not ${size}`);
        }
      }
    }
  }

  /** Whether the file `fileId` is published as its chunks' parts (see `commitChunks`). */
  async #madeOfChunks(fileId: string): Promise<boolean> {
    return (await this.#get<FileValue>(this.#key("file", fileId))).value?.manifest !== undefined;
  }

  /**
   * Deletes the chunks and the counter of a completed upload, keeping the records and the parts its
   * file is made of (with any stray copy among them, which goes with the file: finding one would mean
   * reading every part). Every batch checks the completion record: were the upload cancelled and the
   * same file begun again since, the chunks here are the new upload's, and they stay.
   */
  async removeChunks(key: string): Promise<void> {
    const completed = await this.#get<StoredFile>(this.#key("complete", key));
    if (completed.value === null) return;
    await this.#removeChunks(key, [completed.value.id], completed);
  }

  /**
   * Deletes every chunk and the counter of `key`, and the parts under the file ids in `fileIds` and
   * those the chunks name, but not the parts a published file is made of; with `only`, while that
   * entry is unchanged. The chunk keys go first, so no chunk is visible without its parts.
   */
  async #removeChunks(key: string, fileIds: string[], only?: Deno.AtomicCheck): Promise<boolean> {
    const ids = new Set(fileIds);
    for await (const entry of this.#list<ChunkValue>({ prefix: this.#key("chunk", key) })) {
      if (entry.value.fileId) ids.add(entry.value.fileId);
    }
    if (!await this.#deletePrefix(this.#key("chunk", key), only)) return false;
    for (const fileId of ids) {
      if (await this.#madeOfChunks(fileId)) continue;
      if (!await this.#deletePrefix(this.#key("chunkpart", fileId), only)) return false;
      // A manifest an assembler wrote and never published (it lost, or died).
      if (!await this.#deletePrefix(this.#key("manifest", fileId), only)) return false;
    }
    // Read first: every sweep cleans each completed upload it keeps, and a write (to the primary
    // region on Deno Deploy) for a counter long gone would cost one per upload per sweep.
    if ((await this.#get(this.#key("count", key))).value === null) return true;
    return await this.#commit((op) => (only ? op.check(only) : op).delete(this.#key("count", key)));
  }

  /**
   * Deletes everything of the upload but a completed file; with `keepCompleted`, nothing of a
   * completed upload. A completion committed while this runs is seen by the records' deletion,
   * which checks that there is none.
   */
  async removeUpload(key: string, options: RemoveUploadOptions = {}): Promise<void | "completed"> {
    try {
      return await this.#removeUpload(key, options);
    } finally {
      // A record read begun before the removal ended may have found the record not yet deleted: no
      // lookup after it may take that read.
      this.#recordReads.forget(key);
    }
  }

  async #removeUpload(key: string, options: RemoveUploadOptions): Promise<void | "completed"> {
    this.#records.delete(key);
    // Noted first, so a chunk request that reaches createUpload after the record is gone sees it.
    await this.#commit((op) =>
      op.set(this.#key("removed", key), preciseNow(), { expireIn: REMOVAL_MEMORY_MS })
    );
    return await this.#remove(key, options);
  }

  /**
   * Replaces the record (or `stale`, the tombstone of a removal that died) with this removal's
   * tombstone, in one commit with the deletion of the claim and the completion: with the claim and
   * the record gone, no assembly can publish a file of this upload, so the parts a file is made of
   * are known before any is deleted, and a chunk's commit, which checks the record, can no longer
   * make a chunk visible. Then deletes the chunks, each batch only while the tombstone is this one,
   * and last the tombstone.
   */
  async #remove(
    key: string,
    options: RemoveUploadOptions,
    stale?: Deno.KvEntry<Tombstone>,
  ): Promise<void | "completed"> {
    const uploadKey = this.#key("upload", key);
    const completeKey = this.#key("complete", key);
    const owner = writeId();
    let tombstone: Deno.KvEntry<Tombstone> | undefined;
    for (let attempt = 0; !tombstone; attempt++) {
      const [slot, completed] = await this.#retry(() =>
        this.#kv.getMany<[UploadRecord | Tombstone, StoredFile]>([uploadKey, completeKey])
      );
      if (stale && slot.versionstamp !== stale.versionstamp) return; // taken over, or done, meanwhile
      if (options.keepCompleted && completed.value) return "completed";
      if (attempt === 5) throw new Error(`Upload "${key}" could not be marked as being removed`);
      const fileIds = isTombstone(slot.value) ? [...slot.value.fileIds] : [];
      for (const id of [(slot.value as UploadRecord | null)?.fileId, completed.value?.id]) {
        if (id !== undefined && !fileIds.includes(id)) fileIds.push(id);
      }
      const now = Date.now();
      const value: Tombstone = { removing: owner, key, fileIds, at: now, until: now + REMOVAL_LEASE_MS };
      const result = await this.#retry(() => {
        const op = this.#kv.atomic().check(slot).check(completed).set(uploadKey, value);
        for (const kind of ["claim", "complete", "activity"]) op.delete(this.#key(kind, key));
        return op.commit();
      }).catch(() => undefined);
      if (result?.ok) {
        tombstone = { key: uploadKey, value, versionstamp: result.versionstamp };
        continue;
      }
      // Refused, or failed: read back, since a commit can apply and lose its reply.
      const mine = await this.#get<UploadRecord | Tombstone>(uploadKey);
      if (isTombstone(mine.value) && mine.value.removing === owner) {
        tombstone = mine as Deno.KvEntry<Tombstone>;
      }
    }
    const only: Deno.AtomicCheck = { key: uploadKey, versionstamp: tombstone.versionstamp };
    if (!await this.#removeChunks(key, tombstone.value.fileIds, only)) return;
    await this.#commit((op) => op.check(only).delete(uploadKey));
  }

  /** When the upload was last removed, within the last ten minutes. */
  async removedAt(key: string): Promise<number | undefined> {
    // Expired entries are deleted some time after they expire, not at once.
    return recentRemoval((await this.#get<number>(this.#key("removed", key))).value);
  }

  /** Deletes a completed file and its parts. */
  async removeFile(fileId: string): Promise<void> {
    const entry = await this.#get<FileValue>(this.#key("file", fileId));
    if (entry.value?.external) await this.#files?.remove(entry.value.file);
    await this.#commit((op) => op.delete(this.#key("file", fileId)));
    // The parts are deleted even when the entry is gone: a call that failed among them, or whose
    // isolate died, deleted the entry first, and its retry must finish what it began.
    await this.#deletePrefix(this.#key("filepart", fileId));
    // The parts of the chunks it was made of, and any stray copy among them: its upload completed, so
    // no chunk of it is still to come.
    await this.#deletePrefix(this.#key("chunkpart", fileId));
    await this.#deletePrefix(this.#key("manifest", fileId));
  }

  /** Lists uploads with their last write and whether they completed. */
  async *listUploads(): AsyncIterable<UploadActivity> {
    for await (const entry of this.#list<UploadRecord | Tombstone>({ prefix: this.#key("upload") })) {
      const key = entry.value.key;
      // A removal that died: the sweep finishes it once it is as old as an abandoned upload.
      if (isTombstone(entry.value)) {
        yield { key, lastActivity: entry.value.at, completed: false };
        continue;
      }
      const [activity, done] = await this.#retry(() =>
        this.#kv.getMany<[number, StoredFile]>([this.#key("activity", key), this.#key("complete", key)])
      );
      yield {
        key,
        lastActivity: Math.max(entry.value.createdAt, activity.value ?? 0),
        completed: done.value !== null,
      };
    }
  }

  /** The last activity of one upload, or `undefined` when it is gone. */
  async lastActivity(key: string): Promise<number | undefined> {
    const [upload, activity] = await this.#retry(() =>
      this.#kv.getMany<[UploadRecord | Tombstone, number]>([
        this.#key("upload", key),
        this.#key("activity", key),
      ])
    );
    if (!upload.value) return undefined;
    if (isTombstone(upload.value)) return upload.value.at;
    return Math.max(upload.value.createdAt, activity.value ?? 0);
  }
}

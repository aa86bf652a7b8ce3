/**
 * The storage seam. The handler speaks only this interface; file system, memory, S3 and KV
 * storages implement it. Keys are opaque hex strings made by the handler, never client text.
 *
 * @module
 */

/** What the first chunk of an upload records; every later chunk must agree with it. */
export interface UploadRecord {
  /** Storage key of the upload: 32 lowercase hex characters. */
  key: string;
  /** Id the completed file will get: 24 lowercase hex characters. */
  fileId: string;
  /** The client's identifier, kept as metadata only. */
  identifier: string;
  /** The client's file name, kept as metadata only. */
  fileName: string;
  /** The client's relative path (folder uploads), kept as metadata only. */
  relativePath: string;
  /**
   * MIME type the client reported (`resumableType`; for flow.js, which sends none, the chunks'
   * `Content-Type`), possibly empty.
   */
  type: string;
  /** File size in bytes. */
  totalSize: number;
  /** Nominal chunk size in bytes. */
  chunkSize: number;
  /** When the upload was created, in ms since the epoch. */
  createdAt: number;
  /** Opaque tag of the scope (user) that started it, for per-scope limits; absent in old records. */
  scope?: string;
}

/**
 * Options of {@linkcode UploadStorage.putChunk}.
 *
 * @example
 * ```ts
 * import type { PutChunkOptions } from "@resumable/server";
 *
 * const options: PutChunkOptions = { fileId: "0123456789abcdef01234567", signal: AbortSignal.timeout(30_000) };
 * ```
 */
export interface PutChunkOptions {
  /** Stops the write; nothing is stored. */
  signal?: AbortSignal;
  /**
   * The file id of the upload record the caller got from `createUpload`. If the upload has been
   * removed and begun again since (a new record under the same key, another file id), the chunk
   * is one the client sent for the old upload: `putChunk` must then reject and store nothing in
   * the new one. The handler always passes it.
   */
  fileId?: string;
}

/**
 * Options of {@linkcode UploadStorage.removeUpload}.
 *
 * @example
 * ```ts
 * import type { RemoveUploadOptions } from "@resumable/server";
 *
 * // What the handler passes for a cancel: an upload complete by then is kept.
 * const options: RemoveUploadOptions = { keepCompleted: true };
 * ```
 */
export interface RemoveUploadOptions {
  /**
   * Keep the upload if it is complete once any assembly under way has ended, and resolve
   * `"completed"`: a cancel that arrives as the last chunk completes the upload then answers that
   * it completed, and the next file of that name and size is told so. Without it (expiry sweeps), a
   * completed upload's records go too; its file always stays.
   */
  keepCompleted?: boolean;
}

/** A completed, assembled file. */
export interface StoredFile {
  /** Stable id of the file, 24 lowercase hex characters; use it to fetch the file. */
  id: string;
  /** Original file name as the client sent it (display only, never a path). */
  name: string;
  /** Size in bytes. */
  size: number;
  /**
   * MIME type the client reported (`resumableType`; for flow.js, which sends none, the chunks'
   * `Content-Type`), possibly empty.
   */
  type: string;
  /** The client's upload identifier. */
  identifier: string;
  /** The client's relative path (folder uploads). */
  relativePath: string;
  /** Storage key of the upload it came from. */
  uploadKey: string;
  /** When assembly finished, in ms since the epoch. */
  completedAt: number;
  /** Where the storage keeps it (a file path, an object key), when that is meaningful. */
  location?: string;
}

/** A held right to assemble one upload. Only the holder of the newest claim may commit. */
export interface Claim {
  /** Storage key of the upload. */
  key: string;
  /** Who holds it; unique per attempt. */
  owner: string;
  /** Increases by one with every takeover of an expired claim. */
  generation: number;
}

/** Terms of a claim: who asks, and how long the claim lasts without renewal. */
export interface Lease {
  /** Unique per attempt. */
  owner: string;
  /** A claim not renewed for this long may be taken over by another process. */
  ttlMs: number;
}

/** A stored file and a stream of its bytes. */
export interface OpenedFile {
  /** The file's metadata. */
  file: StoredFile;
  /** Its bytes; cancel it if you stop early. */
  body: ReadableStream<Uint8Array>;
}

/** When an upload was last active; what expiry sweeps read. */
export interface UploadActivity {
  /** Storage key of the upload. */
  key: string;
  /** Last write (record, chunk, claim or completion), in ms since the epoch. */
  lastActivity: number;
  /** Whether the upload has a completion record. */
  completed: boolean;
}

/**
 * Where chunks and completed files live. Implement it to store uploads anywhere.
 *
 * Contract, checked by the conformance suite in `tests/_storage_suite.ts`:
 * - Missing things are `undefined`, never an exception.
 * - A chunk becomes visible to {@linkcode UploadStorage.chunkSize}, `countChunks` and `openChunk`
 *   only once completely written; if its stream errors, nothing becomes visible. Writing the same
 *   chunk again succeeds.
 * - A chunk belongs to the upload record whose file id `putChunk` is given (else to the record that
 *   existed when it was called). If that upload is removed and another record created under the same
 *   key before or while the chunk's body arrives (a cancel, then another file of the same name and
 *   size), the chunk must never count for the new record, nor change its bytes.
 * - `removeUpload` notes when it began, before it removes anything, and `removedAt` tells it for at
 *   least ten minutes: a chunk request that arrived before a cancel and reaches `createUpload` only
 *   after it must not start the upload again with the old file's bytes.
 * - `createUpload` and `claim` are atomic create-if-absent: with any number of concurrent callers,
 *   in any number of processes sharing the storage, exactly one wins.
 * - `commit` publishes the file atomically and only for the holder of the newest claim, while the
 *   upload's record is the one the file was made from (`file.id` is its `fileId`): a request of a
 *   removed upload must not publish the chunks of the upload begun again since as its file.
 * - A removal and an assembly of the same upload never interleave so that the assembly completes
 *   the upload begun again after the removal: where publishing writes by key after its last check
 *   (the file system, S3), `removeUpload` first waits for a live claim to end, or for the completion.
 *   `removeChunks` removes only a completed upload's chunks.
 * - A copy of a chunk that arrives after its upload completed and `removeChunks` ran (a retry sent
 *   just before the assembly) leaves nothing, once `countChunks` has run after it as the handler
 *   does: it is refused, dropped, or removed there.
 *
 * @example A storage is passed to the handler
 * ```ts
 * import { createResumableHandler } from "@resumable/server";
 * import { MemoryStorage } from "@resumable/server/memory";
 *
 * const handler = createResumableHandler({ storage: new MemoryStorage() });
 * ```
 */
export interface UploadStorage {
  /** Creates the upload record if absent; returns the record that is stored (maybe another caller's). */
  createUpload(record: UploadRecord): Promise<UploadRecord>;
  /** The upload record, or `undefined`. */
  getUpload(key: string): Promise<UploadRecord | undefined>;
  /**
   * Stores chunk `index` (1-based) from `data`. Visible only after the stream ends without error;
   * an erroring or aborted stream leaves nothing behind. With `options.fileId`, stores it only in
   * the upload whose record has that file id.
   */
  putChunk(
    key: string,
    index: number,
    data: ReadableStream<Uint8Array>,
    options?: PutChunkOptions,
  ): Promise<void>;
  /** Size of a stored chunk, or `undefined` when it is not (completely) stored. */
  chunkSize(key: string, index: number): Promise<number | undefined>;
  /**
   * How many chunks are stored. Must be exact once every chunk is stored (that is how the handler
   * knows the upload is complete); before that it may lag, for example behind chunks another
   * process stored, but never to 0 after a chunk this process stored, unless the chunks were removed
   * since: 0 tells the handler to look for a completion. Cheap: O(1) amortised per call, never a
   * lookup of every chunk.
   */
  countChunks(key: string): Promise<number>;
  /** Streams a stored chunk. Rejects if it is not stored. */
  openChunk(key: string, index: number): Promise<ReadableStream<Uint8Array>>;
  /** Takes the right to assemble, or `undefined` when another live claim holds it. */
  claim(key: string, lease: Lease): Promise<Claim | undefined>;
  /** Extends a claim's lease; `false` when it was taken over. */
  renewClaim(claim: Claim, lease: Lease): Promise<boolean>;
  /**
   * Gives up a claim whose assembly failed, so the next request may claim at once instead of
   * waiting for the lease to expire. Optional: without it, the lease simply runs out.
   */
  releaseClaim?(claim: Claim): Promise<void>;
  /**
   * Streams `data` into the final file and publishes it with the completion record, atomically and
   * only if `claim` is still the newest. Returns `undefined` when the claim was lost (nothing published).
   */
  commit(
    claim: Claim,
    data: ReadableStream<Uint8Array>,
    file: StoredFile,
  ): Promise<StoredFile | undefined>;
  /**
   * Optional fast path instead of {@linkcode UploadStorage.commit}: assembles chunks `1..chunkCount`
   * inside the storage (e.g. S3 UploadPartCopy) so their bytes need not pass through this process,
   * with the same contract as `commit`. Must reject when a chunk is missing or the chunks do not
   * add up to `file.size`.
   */
  commitChunks?(claim: Claim, chunkCount: number, file: StoredFile): Promise<StoredFile | undefined>;
  /** The completion record of an upload, or `undefined`. */
  getCompleted(key: string): Promise<StoredFile | undefined>;
  /** Opens a completed file by id, or `undefined`. */
  openFile(fileId: string): Promise<OpenedFile | undefined>;
  /**
   * Deletes the chunks of a completed upload, keeping its records (called after a successful
   * commit). Does nothing to an upload that is not complete: by then it may be a new upload of the
   * same file, begun after a cancel, whose chunks must stay.
   */
  removeChunks(key: string): Promise<void>;
  /**
   * Deletes everything of an upload except a completed file. Idempotent. Notes the time it began
   * first, for {@linkcode UploadStorage.removedAt}. With `keepCompleted`, resolves `"completed"`
   * and removes nothing if the upload is complete (a storage without the option removes it, as
   * before).
   */
  removeUpload(key: string, options?: RemoveUploadOptions): Promise<void | "completed">;
  /**
   * When `removeUpload(key)` last began, in ms since the epoch, or `undefined` if it did not (a
   * storage may forget removals older than ten minutes). Read only when a chunk request finds an
   * upload record younger than itself. Optional: without it, a chunk sent before a cancel that
   * reaches the storage after it can begin the upload again with that chunk.
   */
  removedAt?(key: string): Promise<number | undefined>;
  /** Deletes a completed file. Idempotent. */
  removeFile(fileId: string): Promise<void>;
  /** Lists every upload with its last activity, for expiry sweeps. Optional. */
  listUploads?(): AsyncIterable<UploadActivity>;
  /**
   * The last activity of one upload, as {@linkcode UploadStorage.listUploads} tells it, or
   * `undefined` when it is gone. A sweep asks again right before it removes an upload it listed as
   * expired: another process may have resumed it since, and a sweep can take minutes. Optional:
   * without it, chunks stored in that time go with the upload.
   */
  lastActivity?(key: string): Promise<number | undefined>;
}

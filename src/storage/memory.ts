/**
 * An in-memory {@linkcode UploadStorage}: for tests, demos and ephemeral hosts. Everything is lost
 * when the process exits, and only one process can use it.
 *
 * @example
 * ```ts
 * import { createResumableHandler } from "@resumable/server";
 * import { MemoryStorage } from "@resumable/server/memory";
 *
 * const handler = createResumableHandler({ storage: new MemoryStorage() });
 * ```
 *
 * @module
 */

import { collectBytes } from "../_bytes.ts";
import { RemovalLog } from "./_removals.ts";
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

interface UploadState {
  record: UploadRecord;
  chunks: Map<number, Uint8Array>;
  claim?: { claim: Claim; expiresAt: number };
  completed?: StoredFile;
  /** Last write of any kind, in ms since the epoch; what expiry sweeps read. */
  lastActivity: number;
}

function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      if (bytes.byteLength > 0) controller.enqueue(bytes.slice());
      controller.close();
    },
  });
}

/**
 * Keeps uploads in process memory. Operations are atomic because no `await` separates a check from
 * the update that depends on it.
 *
 * @example Storing a chunk
 * ```ts
 * import { MemoryStorage } from "@resumable/server/memory";
 * import assert from "node:assert/strict";
 *
 * const storage = new MemoryStorage();
 * await storage.createUpload({
 *   key: "0".repeat(32), fileId: "1".repeat(24), identifier: "id", fileName: "a.txt",
 *   relativePath: "a.txt", type: "", totalSize: 3, chunkSize: 3, createdAt: Date.now(),
 * });
 * await storage.putChunk("0".repeat(32), 1, new Blob(["abc"]).stream());
 * assert.equal(await storage.chunkSize("0".repeat(32), 1), 3);
 * ```
 */
export class MemoryStorage implements UploadStorage {
  #uploads = new Map<string, UploadState>();
  #removals = new RemovalLog();
  #files = new Map<string, { file: StoredFile; bytes: Uint8Array }>();

  /** Creates the upload record if absent. */
  createUpload(record: UploadRecord): Promise<UploadRecord> {
    const existing = this.#uploads.get(record.key);
    if (existing) return Promise.resolve(existing.record);
    this.#uploads.set(record.key, { record, chunks: new Map(), lastActivity: Date.now() });
    return Promise.resolve(record);
  }

  /** The upload record, or `undefined`. */
  getUpload(key: string): Promise<UploadRecord | undefined> {
    return Promise.resolve(this.#uploads.get(key)?.record);
  }

  /** Stores a chunk once its stream has ended without error. */
  async putChunk(
    key: string,
    index: number,
    data: ReadableStream<Uint8Array>,
    { signal, fileId }: PutChunkOptions = {},
  ): Promise<void> {
    // The upload the chunk belongs to: one removed and started again while the body arrived is another.
    const upload = this.#uploads.get(key);
    if (upload && fileId !== undefined && upload.record.fileId !== fileId) {
      await data.cancel().catch(() => {});
      throw new Error(`Cannot store chunk ${index}: upload "${key}" was removed and begun again`);
    }
    // A chunk being received counts as activity from its first byte to its last.
    const touch = () => {
      if (upload) upload.lastActivity = Date.now();
    };
    touch();
    const bytes = await collectBytes(data.pipeThrough(
      new TransformStream({
        transform(part, controller) {
          touch();
          controller.enqueue(part);
        },
      }),
    ));
    signal?.throwIfAborted();
    const state = this.#uploads.get(key);
    if (!state || state !== upload) {
      throw new Error(
        state
          ? `Cannot store chunk ${index}: upload "${key}" was removed while the chunk arrived`
          : `Cannot store chunk ${index}: upload "${key}" does not exist`,
      );
    }
    // A late copy (a retry that passed the completion check just before the assembly) would stay
    // after the cleanup: the file has its bytes already.
    if (state.completed) return;
    state.chunks.set(index, bytes);
    state.lastActivity = Date.now();
  }

  /** Size of a stored chunk, or `undefined`. */
  chunkSize(key: string, index: number): Promise<number | undefined> {
    return Promise.resolve(
      this.#uploads.get(key)?.chunks.get(index)?.byteLength,
    );
  }

  /** Number of stored chunks. */
  countChunks(key: string): Promise<number> {
    return Promise.resolve(this.#uploads.get(key)?.chunks.size ?? 0);
  }

  /** Streams a stored chunk. */
  openChunk(key: string, index: number): Promise<ReadableStream<Uint8Array>> {
    const bytes = this.#uploads.get(key)?.chunks.get(index);
    if (!bytes) {
      return Promise.reject(
        new Error(`Chunk ${index} of upload "${key}" is not stored`),
      );
    }
    return Promise.resolve(streamOf(bytes));
  }

  /** Takes the right to assemble unless a live claim holds it. */
  claim(key: string, lease: Lease): Promise<Claim | undefined> {
    const state = this.#uploads.get(key);
    if (!state || state.completed) return Promise.resolve(undefined);
    const now = Date.now();
    if (state.claim && state.claim.expiresAt > now) {
      return Promise.resolve(undefined);
    }
    const claim = {
      key,
      owner: lease.owner,
      generation: (state.claim?.claim.generation ?? 0) + 1,
    };
    state.claim = { claim, expiresAt: now + lease.ttlMs };
    state.lastActivity = now;
    return Promise.resolve(claim);
  }

  /** Extends a claim unless it was taken over. */
  renewClaim(claim: Claim, lease: Lease): Promise<boolean> {
    const held = this.#uploads.get(claim.key)?.claim;
    if (
      !held || held.claim.generation !== claim.generation ||
      held.claim.owner !== claim.owner
    ) {
      return Promise.resolve(false);
    }
    held.expiresAt = Date.now() + lease.ttlMs;
    this.#uploads.get(claim.key)!.lastActivity = Date.now();
    return Promise.resolve(true);
  }

  /** Expires a claim at once. */
  releaseClaim(claim: Claim): Promise<void> {
    const held = this.#uploads.get(claim.key)?.claim;
    if (held && held.claim.generation === claim.generation && held.claim.owner === claim.owner) {
      held.expiresAt = 0;
    }
    return Promise.resolve();
  }

  /** Publishes the file if `claim` is still the newest claim. */
  async commit(
    claim: Claim,
    data: ReadableStream<Uint8Array>,
    file: StoredFile,
  ): Promise<StoredFile | undefined> {
    const bytes = await collectBytes(data);
    const state = this.#uploads.get(claim.key);
    const held = state?.claim?.claim;
    // The record must still be the one the file was made from (not removed and begun again).
    if (
      !state || state.completed || held?.generation !== claim.generation ||
      held.owner !== claim.owner || state.record.fileId !== file.id
    ) {
      return undefined;
    }
    const stored = { ...file, size: bytes.byteLength };
    this.#files.set(file.id, { file: stored, bytes });
    state.completed = stored;
    state.lastActivity = Date.now();
    return stored;
  }

  /** The completion record, or `undefined`. */
  getCompleted(key: string): Promise<StoredFile | undefined> {
    return Promise.resolve(this.#uploads.get(key)?.completed);
  }

  /** Opens a completed file. */
  openFile(fileId: string): Promise<OpenedFile | undefined> {
    const entry = this.#files.get(fileId);
    return Promise.resolve(
      entry && { file: entry.file, body: streamOf(entry.bytes) },
    );
  }

  /** Deletes the chunks of a completed upload, keeping the records. */
  removeChunks(key: string): Promise<void> {
    // Only a completed upload's: one begun again since (a cancel, then the same file) keeps its own.
    const state = this.#uploads.get(key);
    if (state?.completed) state.chunks.clear();
    return Promise.resolve();
  }

  /** Deletes the upload and its chunks, noting when; with `keepCompleted`, not a completed one. */
  removeUpload(key: string, options: RemoveUploadOptions = {}): Promise<void | "completed"> {
    this.#removals.note(key);
    if (options.keepCompleted && this.#uploads.get(key)?.completed) return Promise.resolve("completed");
    this.#uploads.delete(key);
    return Promise.resolve();
  }

  /** When the upload was last removed, within the last ten minutes. */
  removedAt(key: string): Promise<number | undefined> {
    return Promise.resolve(this.#removals.at(key));
  }

  /** Lists every upload with its last activity. */
  async *listUploads(): AsyncIterable<UploadActivity> {
    // A snapshot, so callers may remove uploads while iterating.
    for (const [key, state] of [...this.#uploads]) {
      yield { key, lastActivity: state.lastActivity, completed: state.completed !== undefined };
    }
  }

  /** The last activity of one upload, or `undefined` when it is gone. */
  lastActivity(key: string): Promise<number | undefined> {
    return Promise.resolve(this.#uploads.get(key)?.lastActivity);
  }

  /** Deletes a completed file. */
  removeFile(fileId: string): Promise<void> {
    this.#files.delete(fileId);
    return Promise.resolve();
  }
}

/**
 * What the handler does once a request is parsed: answer a chunk test, store a chunk, and assemble
 * the upload when its last chunk is in. Knows storage and protocol, not HTTP.
 *
 * @module
 */

import { preciseNow } from "./_clock.ts";
import { assembleOnce } from "./assemble.ts";
import { verifiedStream } from "./checksum.ts";
import { exactSizeStream } from "./_limit_stream.ts";
import { ResumableError } from "./errors.ts";
import { newFileId, uploadKey } from "./identifier.ts";
import type { AuthorizeInfo, ResolvedOptions } from "./options.ts";
import { readProgress } from "./progress.ts";
import { Quota } from "./quota.ts";
import { completedStatus, type UploadStatus, viaStorage } from "./response.ts";
import type { StoredFile, UploadRecord, UploadStorage } from "./storage/types.ts";
import type { ChunkRequest } from "./validate.ts";

/** Outcome of a test: `present` answers 200 with the status, `missing` answers 204. */
export type TestOutcome = { present: true; status: UploadStatus } | {
  present: false;
};

/** What a cancel request did. */
export interface CancelOutcome {
  identifier: string;
  /** `true` when the upload was in progress (or unknown) and is now gone. */
  cancelled: boolean;
  /** `true` when the upload had completed: a cancel keeps a completed upload. */
  complete: boolean;
}

/** Test and upload logic over one storage. */
export class ChunkService {
  #storage: UploadStorage;
  #options: ResolvedOptions;
  /** Limits on uploads in progress. */
  readonly quota: Quota;
  // Upload keys with a request in flight here: expiry never removes them.
  #active = new Map<string, number>();

  /**
   * @param storage Where chunks are.
   * @param options Resolved handler options.
   */
  constructor(storage: UploadStorage, options: ResolvedOptions) {
    this.#storage = storage;
    this.#options = options;
    this.quota = new Quota(storage, options, (key) => this.#active.has(key));
  }

  /** The storage this service works on. */
  get storage(): UploadStorage {
    return this.#storage;
  }

  /** Whether a request of this process is working on the upload `key` right now. */
  isActive(key: string): boolean {
    return this.#active.has(key);
  }

  async #tracked<T>(key: string, work: () => Promise<T>): Promise<T> {
    this.#active.set(key, (this.#active.get(key) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const left = this.#active.get(key)! - 1;
      if (left === 0) this.#active.delete(key);
      else this.#active.set(key, left);
    }
  }

  /** The scope, checked with `authorize`, and the upload key it yields. */
  async #key(
    request: Request,
    info: Omit<AuthorizeInfo, "scope">,
  ): Promise<{ key: string; scope: string }> {
    const scope = await this.#options.scope(request);
    if (typeof scope !== "string") {
      throw new TypeError("Option scope must return a string");
    }
    const authorize = this.#options.authorize;
    if (authorize) {
      const verdict = await authorize(request, { ...info, scope });
      if (verdict === "unauthorized") {
        throw new ResumableError("unauthorized", "Authentication is required to upload");
      }
      if (verdict !== true) {
        throw new ResumableError("forbidden", `Not allowed to ${info.action} "${clip(info.identifier)}"`);
      }
    }
    return { key: uploadKey(scope, info.identifier), scope };
  }

  #chunkKey(request: Request, chunk: ChunkRequest, action: "test" | "upload") {
    return this.#key(request, {
      action,
      identifier: chunk.identifier,
      fileName: chunk.fileName,
      totalSize: chunk.totalSize,
      chunkNumber: chunk.chunkNumber,
    });
  }

  /** Removes an upload in progress and its chunks; keeps a completed one. Idempotent. */
  async cancel(request: Request, identifier: string): Promise<CancelOutcome> {
    const { key } = await this.#key(request, { action: "cancel", identifier });
    const storage = this.#storage;
    // Complete already, or by the time the removal has waited out an assembly under way: kept, and
    // said to be, as for a cancel that came a moment later.
    const complete = await viaStorage(() => storage.getCompleted(key)) !== undefined ||
      await viaStorage(() => storage.removeUpload(key, { keepCompleted: true })) === "completed";
    if (complete) return { identifier, cancelled: false, complete: true };
    this.quota.release(key);
    return { identifier, cancelled: true, complete: false };
  }

  #completed(file: StoredFile, totalChunks: number): UploadStatus {
    return completedStatus(file, totalChunks, this.#options.fileUrl?.(file));
  }

  /** Answers a chunk test: present only when that chunk is completely stored, or the upload is done. */
  async test(request: Request, chunk: ChunkRequest): Promise<TestOutcome> {
    const { key } = await this.#chunkKey(request, chunk, "test");
    return await this.#tracked(key, () => this.#test(request, chunk, key));
  }

  async #test(request: Request, chunk: ChunkRequest, key: string): Promise<TestOutcome> {
    const storage = this.#storage;
    const completed = await viaStorage(() => storage.getCompleted(key));
    if (completed) {
      // A file of another size or name under a finished upload's identifier is not that file (one
      // of the same name and size cannot be told apart): "complete" would have the client skip
      // every chunk and report it stored. Its chunks are then refused (see #store).
      if (fileDisagreement(completed, chunk)) return { present: false };
      return {
        present: true,
        status: this.#completed(completed, chunk.layout.floorCount),
      };
    }
    const size = await viaStorage(() => storage.chunkSize(key, chunk.chunkNumber));
    if (size === undefined || !chunk.allowedSizes.includes(size)) {
      return { present: false };
    }
    const record = await viaStorage(() => storage.getUpload(key));
    if (!record || disagreement(record, chunk)) return { present: false };
    // Finishing here recovers uploads whose assembler crashed: the client re-tests after a reload.
    return {
      present: true,
      status: await this.#advance(request, record, chunk),
    };
  }

  /**
   * Stores one chunk from `body` and assembles the upload if it is now complete. With `digest`, the
   * chunk is stored only if its SHA-256 matches.
   */
  async store(
    request: Request,
    chunk: ChunkRequest,
    body: ReadableStream<Uint8Array>,
    digest: Uint8Array | undefined,
    /** When the request arrived, before its body was read: a cancel after it is one it was sent before. */
    arrived: number,
  ): Promise<UploadStatus> {
    let scoped;
    try {
      scoped = await this.#chunkKey(request, chunk, "upload");
    } catch (error) {
      await body.cancel().catch(() => {});
      throw error;
    }
    const { key, scope } = scoped;
    return await this.#tracked(key, () => this.#store(request, chunk, body, { key, scope, digest, arrived }));
  }

  async #store(
    request: Request,
    chunk: ChunkRequest,
    body: ReadableStream<Uint8Array>,
    { key, scope, digest, arrived }: { key: string; scope: string; digest?: Uint8Array; arrived: number },
  ): Promise<UploadStatus> {
    const storage = this.#storage;
    const completed = await viaStorage(() => storage.getCompleted(key));
    if (completed) {
      // A duplicate or late chunk of a finished upload: nothing to store.
      await body.cancel().catch(() => {});
      const conflict = fileDisagreement(completed, chunk);
      if (conflict) {
        const name = clip(chunk.identifier);
        throw new ResumableError(
          "upload_mismatch",
          `Chunk ${chunk.chunkNumber} does not match the completed upload "${name}": ${conflict}; ` +
            "send this file under another identifier",
        );
      }
      return this.#completed(completed, chunk.layout.floorCount);
    }
    const tag = uploadKey(scope, "");
    try {
      // In memory and idempotent per upload: chunks of an upload already counted pass at once.
      await this.quota.reserve(key, tag, chunk.totalSize);
    } catch (error) {
      await body.cancel().catch(() => {});
      throw error;
    }
    const record = await viaStorage(() => storage.createUpload(newRecord(key, chunk, tag)));
    const conflict = disagreement(record, chunk);
    if (conflict) {
      await body.cancel().catch(() => {});
      throw new ResumableError(
        "upload_mismatch",
        `Chunk ${chunk.chunkNumber} does not match upload "${clip(chunk.identifier)}": ${conflict}`,
      );
    }
    // createdAt is whole milliseconds: a record made in the millisecond the request arrived counts.
    if (record.createdAt >= Math.floor(arrived) && await this.#removedSince(key, arrived)) {
      await body.cancel().catch(() => {});
      throw sentBeforeRemoval(chunk);
    }
    const label = `chunk ${chunk.chunkNumber} of "${clip(chunk.identifier)}"`;
    let checked = exactSizeStream(body, chunk.allowedSizes, label);
    // Verified before the storage gets a byte of it: a mismatch stores nothing.
    if (digest) checked = verifiedStream(checked, digest, label);
    try {
      // No `request.signal`: Deno.serve aborts it after every response, and following it costs; a
      // client that goes away errors the body instead.
      // With the record's file id: if the upload was cancelled and begun again since createUpload,
      // this chunk is the old file's and must not land in the new upload.
      await viaStorage(() => storage.putChunk(key, chunk.chunkNumber, checked, { fileId: record.fileId }));
    } catch (error) {
      // The upload may have completed (and its chunk folder been removed) while this duplicate was
      // in flight; that is a success for the client.
      const done = await storage.getCompleted(key).catch(() => undefined);
      if (
        done &&
        !(error instanceof ResumableError &&
          error.code !== "storage_unavailable")
      ) {
        // The storage may have failed before it read the body: let go of it, as for a chunk found
        // complete at once. (A stream the storage still holds is its to cancel.)
        await checked.cancel().catch(() => {});
        return this.#completed(done, chunk.layout.floorCount);
      }
      // A storage refuses a chunk of an upload removed while the chunk was on its way: say that,
      // rather than report (and log) a storage failure.
      if (
        error instanceof ResumableError && error.code === "storage_unavailable" &&
        await this.#removedSince(key, arrived).catch(() => false)
      ) {
        throw sentBeforeRemoval(chunk, error.cause);
      }
      // A chunk refused before anything of its upload is stored (a body of the wrong size, one that
      // broke off or stalled) must not hold the room the upload declared: ten one-byte requests
      // declaring a gigabyte each would refuse every other upload for a day. The empty record stays
      // until it expires; the next chunk of it that arrives reserves the room again. Not while
      // another request of the upload is under way here: its chunk may be stored yet.
      if (this.#active.get(key) === 1 && await storage.countChunks(key).catch(() => 1) === 0) {
        this.quota.release(key);
      }
      throw error;
    }
    return this.#advance(request, record, chunk);
  }

  /**
   * Whether the upload was removed after `since`, the chunk's arrival. Asked when its record is
   * younger than the request (once per upload, normally): the request may then have been sent before
   * a cancel and have created the record again after it, which would start the next upload of the
   * same file name and size with this old chunk. Asked too when the storage refused the chunk.
   */
  async #removedSince(key: string, since: number): Promise<boolean> {
    const storage = this.#storage;
    if (!storage.removedAt) return false;
    const removed = await viaStorage(() => storage.removedAt!(key));
    return removed !== undefined && removed >= since;
  }

  async #advance(
    request: Request,
    record: UploadRecord,
    chunk: ChunkRequest,
  ): Promise<UploadStatus> {
    const storage = this.#storage;
    const progress = await viaStorage(() => readProgress(storage, record, chunk.declaredTotalChunks));
    const status: UploadStatus = {
      identifier: record.identifier,
      fileName: record.fileName,
      totalSize: record.totalSize,
      chunksReceived: Math.min(progress.received, progress.total),
      totalChunks: progress.total,
      status: "uploading",
      complete: false,
    };
    if (!progress.ready) {
      // None counted, though this chunk is stored: the upload's chunks are gone. Another request
      // completed it while this one was on its way (the last two chunks together, or a copy of a
      // stored chunk), and its cleanup removed them; or the upload was cancelled. Answering
      // "uploading" would give resumable.js a last response that says the file is not complete.
      if (progress.received === 0) {
        const done = await viaStorage(() => storage.getCompleted(record.key));
        if (done) return this.#completed(done, progress.total);
      }
      return status;
    }
    const result = await viaStorage(() =>
      assembleOnce(
        storage,
        record,
        progress.total,
        this.#options.assemblyLeaseMs,
      )
    );
    if (result.kind === "busy") {
      const done = await viaStorage(() => storage.getCompleted(record.key));
      return done ? this.#completed(done, progress.total) : { ...status, status: "assembling" };
    }
    await this.#finish(request, result.file);
    return this.#completed(result.file, progress.total);
  }

  async #finish(request: Request, file: StoredFile): Promise<void> {
    const storage = this.#storage;
    this.quota.release(file.uploadKey);
    // The hook first: a process that dies from here on (a deploy's restart, say) misses it, and
    // removing the chunks can take a while (a request per 1000 chunks on S3, a DELETE per chunk on a
    // store without DeleteObjects); chunks left go in a sweep.
    await this.#notify(request, file);
    try {
      await storage.removeChunks(file.uploadKey);
    } catch (error) {
      this.#options.onError(error, request);
    }
  }

  async #notify(request: Request, file: StoredFile): Promise<void> {
    const onComplete = this.#options.onComplete;
    if (!onComplete) return;
    const storage = this.#storage;
    try {
      await onComplete({
        file,
        request,
        async open() {
          const opened = await storage.openFile(file.id);
          if (!opened) {
            throw new Error(`Stored file "${file.id}" cannot be opened`);
          }
          return opened.body;
        },
      });
    } catch (error) {
      this.#options.onError(error, request);
    }
  }
}

/** The refusal of a chunk whose request arrived before its upload was removed (cancelled or expired). */
function sentBeforeRemoval(chunk: ChunkRequest, cause?: unknown): ResumableError {
  return new ResumableError(
    "upload_removed",
    `Chunk ${chunk.chunkNumber} of "${clip(chunk.identifier)}" was sent before its upload was cancelled`,
    cause === undefined ? undefined : { cause },
  );
}

function newRecord(key: string, chunk: ChunkRequest, scope: string): UploadRecord {
  return {
    key,
    scope,
    fileId: newFileId(),
    identifier: chunk.identifier,
    fileName: chunk.fileName,
    relativePath: chunk.relativePath,
    type: chunk.type,
    totalSize: chunk.totalSize,
    chunkSize: chunk.chunkSize,
    // The clock requests' arrival is read with, so the two compare in this process (see #store).
    createdAt: Math.floor(preciseNow()),
  };
}

/** Why a chunk cannot belong to an upload, or `undefined` when it agrees. */
function disagreement(
  record: UploadRecord,
  chunk: ChunkRequest,
): string | undefined {
  if (record.totalSize !== chunk.totalSize) {
    return `total size ${chunk.totalSize} differs from ${record.totalSize}`;
  }
  if (record.chunkSize !== chunk.chunkSize) {
    return `chunk size ${chunk.chunkSize} differs from ${record.chunkSize}`;
  }
  if (record.fileName !== chunk.fileName) {
    return `file name "${clip(chunk.fileName)}" differs from "${clip(record.fileName)}"`;
  }
  return undefined;
}

/** Why a chunk cannot belong to the file an upload completed with, or `undefined` when it agrees. */
function fileDisagreement(file: StoredFile, chunk: ChunkRequest): string | undefined {
  if (file.size !== chunk.totalSize) return `total size ${chunk.totalSize} differs from ${file.size}`;
  if (file.name !== chunk.fileName) {
    return `file name "${clip(chunk.fileName)}" differs from "${clip(file.name)}"`;
  }
  return undefined;
}

function clip(text: string): string {
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

/**
 * Limits on uploads in progress: how many one scope may have, and how many bytes all of them may
 * reserve. An upload reserves its declared total size when its first chunk arrives (sizes are
 * verified against it, so a client cannot store more than it reserved) and releases it when it
 * completes, is cancelled or expires.
 *
 * The count is kept by this process: it is seeded from the storage (`listUploads`) on first use and
 * re-seeded by every `cleanup()`, so with several processes each enforces the limits on a view that
 * is at most one cleanup interval old.
 *
 * @module
 */

import { ResumableError } from "./errors.ts";
import type { UploadStorage } from "./storage/types.ts";

/** The two limits; `Infinity` turns one off. */
export interface QuotaLimits {
  maxUploadsPerScope: number;
  maxPendingBytes: number;
}

interface Reservation {
  scope: string;
  bytes: number;
  /** When a chunk of the upload last reserved (`performance.now()`). */
  touched: number;
}

/** In-process accounting of uploads in progress. */
export class Quota {
  #storage: UploadStorage;
  #limits: QuotaLimits;
  #isActive?: (key: string) => boolean;
  #reserved = new Map<string, Reservation>();
  #seeded?: Promise<void>;

  /**
   * @param storage Where uploads are listed from.
   * @param limits The limits to enforce.
   * @param isActive Whether a request of this process is working on an upload right now.
   */
  constructor(storage: UploadStorage, limits: QuotaLimits, isActive?: (key: string) => boolean) {
    this.#storage = storage;
    this.#limits = limits;
    this.#isActive = isActive;
  }

  /** Re-reads every upload in progress from the storage. */
  async reseed(): Promise<void> {
    if (!this.#storage.listUploads) return;
    const started = performance.now();
    const fresh = new Map<string, Reservation>();
    for await (const activity of this.#storage.listUploads()) {
      if (activity.completed) continue;
      const record = await this.#storage.getUpload(activity.key);
      // An upload with nothing stored holds no room (see ChunkService#store): its next chunk
      // reserves it again.
      if (record && await this.#storage.countChunks(record.key) > 0) {
        fresh.set(record.key, { scope: record.scope ?? "", bytes: record.totalSize, touched: started });
      }
    }
    // Reservations used while listing stay, as the listing may have passed them before their record
    // was created, and so do those of uploads with a request under way here (a first chunk still
    // arriving counts as nothing stored). The others the listing did not find were completed,
    // cancelled or expired, possibly by another process: keeping them would hold their room for good.
    for (const [key, reservation] of this.#reserved) {
      if (!fresh.has(key) && (reservation.touched >= started || this.#isActive?.(key))) {
        fresh.set(key, reservation);
      }
    }
    this.#reserved = fresh;
  }

  /**
   * Reserves room for a new upload, or throws when a limit would be exceeded. Idempotent per key.
   *
   * @throws {ResumableError} `too_many_uploads` or `storage_full`, or `file_too_large` for a file
   * larger than all uploads in progress may be.
   */
  async reserve(key: string, scope: string, bytes: number): Promise<void> {
    // Never room for it, however many uploads finish: a permanent refusal, not "try again later".
    if (bytes > this.#limits.maxPendingBytes) {
      throw new ResumableError(
        "file_too_large",
        `File is ${bytes} bytes, more than all uploads in progress may hold (maxPendingBytes ${this.#limits.maxPendingBytes})`,
      );
    }
    await (this.#seeded ??= this.reseed().catch(() => {}));
    // No await from here on: check and reservation are one step for this process.
    const held = this.#reserved.get(key);
    if (held) {
      held.touched = performance.now();
      return;
    }
    let inScope = 0;
    let pending = 0;
    for (const reservation of this.#reserved.values()) {
      if (reservation.scope === scope) inScope++;
      pending += reservation.bytes;
    }
    if (inScope >= this.#limits.maxUploadsPerScope) {
      throw new ResumableError(
        "too_many_uploads",
        `Too many uploads in progress (limit ${this.#limits.maxUploadsPerScope}); finish or cancel one first`,
      );
    }
    if (pending + bytes > this.#limits.maxPendingBytes) {
      throw new ResumableError(
        "storage_full",
        `Not enough room for ${bytes} more bytes of uploads in progress; try again later`,
      );
    }
    this.#reserved.set(key, { scope, bytes, touched: performance.now() });
  }

  /** Releases an upload's reservation (completed, cancelled or expired). */
  release(key: string): void {
    this.#reserved.delete(key);
  }
}

/**
 * How far an upload is: which layout it turned out to use and whether all its chunks are stored.
 * Costs one chunk count plus, for the one ambiguous layout case, two size lookups: never a lookup
 * per chunk.
 *
 * @module
 */

import { chunkLayout } from "./layout.ts";
import type { UploadRecord, UploadStorage } from "./storage/types.ts";

/** Chunks stored and needed. */
export interface Progress {
  /** Chunks stored that belong to the file. */
  received: number;
  /** Chunks the file has; a best guess until the layout is known. */
  total: number;
  /** Whether every chunk `1..total` is stored. */
  ready: boolean;
}

/**
 * Reads the progress of an upload. When the size does not divide evenly, the layout is known only
 * once chunk `floorCount` is stored: a full-size chunk there means `forceChunkSize` (one more,
 * short chunk follows), a longer one means it is the stretched last chunk.
 */
export async function readProgress(
  storage: UploadStorage,
  record: UploadRecord,
  hint?: number,
): Promise<Progress> {
  const layout = chunkLayout(record.totalSize, record.chunkSize);
  const count = await storage.countChunks(record.key);
  if (layout.floorCount === layout.ceilCount) {
    return {
      received: count,
      total: layout.floorCount,
      ready: count >= layout.floorCount,
    };
  }
  const atFloor = await storage.chunkSize(record.key, layout.floorCount);
  if (atFloor === undefined) {
    const total = hint === layout.ceilCount ? layout.ceilCount : layout.floorCount;
    return { received: count, total, ready: false };
  }
  if (atFloor === record.chunkSize) {
    return {
      received: count,
      total: layout.ceilCount,
      ready: count >= layout.ceilCount,
    };
  }
  // Stretched layout: a stray chunk `ceilCount` from a client that mixed layouts does not count.
  const stray = await storage.chunkSize(record.key, layout.ceilCount) !== undefined ? 1 : 0;
  const received = count - stray;
  return {
    received,
    total: layout.floorCount,
    ready: received >= layout.floorCount,
  };
}

/**
 * Chunk arithmetic shared by resumable.js and flow.js (docs/protocol.md §5). Pure.
 *
 * Without `forceChunkSize` the client makes `max(floor(total / chunkSize), 1)` chunks and the last
 * one absorbs the remainder (up to 2 x chunkSize - 1 bytes); with it, `max(ceil(...), 1)` chunks and
 * the last one is the short remainder. The server cannot see the client option, so both layouts are
 * legal and a chunk's size tells them apart.
 *
 * @module
 */

/** Which of the two client layouts an upload uses. */
export type LayoutKind = "floor" | "ceil";

/** Chunk counts of both layouts for one file. */
export interface ChunkLayout {
  totalSize: number;
  chunkSize: number;
  /** Chunk count without `forceChunkSize`. */
  floorCount: number;
  /** Chunk count with `forceChunkSize`; equals `floorCount` when the size divides evenly. */
  ceilCount: number;
}

/** Computes both chunk counts for a file of `totalSize` bytes cut at `chunkSize`. */
export function chunkLayout(totalSize: number, chunkSize: number): ChunkLayout {
  return {
    totalSize,
    chunkSize,
    floorCount: Math.max(Math.floor(totalSize / chunkSize), 1),
    ceilCount: Math.max(Math.ceil(totalSize / chunkSize), 1),
  };
}

/** The number of chunks of a layout. */
export function chunkCount(layout: ChunkLayout, kind: LayoutKind): number {
  return kind === "floor" ? layout.floorCount : layout.ceilCount;
}

/** Byte offset of 1-based chunk `n`; the same in both layouts. */
export function chunkOffset(layout: ChunkLayout, n: number): number {
  return (n - 1) * layout.chunkSize;
}

/** Size in bytes of 1-based chunk `n` in the given layout, or `undefined` if it has no such chunk. */
export function chunkSizeIn(
  layout: ChunkLayout,
  kind: LayoutKind,
  n: number,
): number | undefined {
  const count = chunkCount(layout, kind);
  if (!Number.isInteger(n) || n < 1 || n > count) return undefined;
  if (n < count) return layout.chunkSize;
  return layout.totalSize - (count - 1) * layout.chunkSize;
}

/**
 * The sizes chunk `n` may legally have, one per layout that has it (deduplicated).
 * Empty when `n` is out of range for both layouts.
 */
export function allowedChunkSizes(layout: ChunkLayout, n: number): number[] {
  const sizes = new Set<number>();
  for (const kind of ["floor", "ceil"] as const) {
    const size = chunkSizeIn(layout, kind, n);
    if (size !== undefined) sizes.add(size);
  }
  return [...sizes];
}

/** The largest chunk any upload within these limits can send: the stretched last chunk. */
export function largestLegalChunk(maxChunkSize: number): number {
  return 2 * maxChunkSize - 1;
}

// Pieces of a request body that nothing but the handler's own path to storage references, so the
// storage that writes one may free it at once. Detaching a piece's ArrayBuffer frees its memory now
// instead of at the next garbage collection: under Bun, whose request bodies arrive as fresh 64-512
// KiB buffers, written pieces waiting for a collection held a fifth to a quarter of a busy server's
// peak RSS (docs/performance.md). Byte-stream bodies (Deno's) are read into reused buffers instead,
// and are never marked.
//
// Only the very view objects a body's default reader handed out are marked, and only those that
// span their whole buffer: a view cut from a piece is another object and stays untouched, as does a
// piece sharing its buffer with anything else. The multipart reader, which hands out views of the
// pieces it reads, passes the mark on to the view holding a piece's last bytes (markLastView).

const owned = new WeakSet<Uint8Array>();

/** Whether `bytes` spans all of an ArrayBuffer that can be freed by transferring it away. */
function spansFreeableBuffer(bytes: Uint8Array): bytes is Uint8Array<ArrayBuffer> {
  const buffer = bytes.buffer;
  return bytes.byteOffset === 0 && bytes.byteLength === buffer.byteLength &&
    buffer instanceof ArrayBuffer && typeof buffer.transfer === "function";
}

/** Marks `piece`, just read from a request body the handler consumes, as freeable once stored. */
export function markOwned(piece: Uint8Array): void {
  if (piece.byteLength > 0 && spansFreeableBuffer(piece)) owned.add(piece);
}

/** Whether `piece` was marked by {@linkcode markOwned}. */
export function isOwned(piece: Uint8Array): boolean {
  return owned.has(piece);
}

/**
 * Marks `view`, the last part of `whole` (an owned piece, or a buffer of the caller's own) that the
 * caller hands out, as freeing all of `whole`'s buffer once stored. The caller must drop `whole`.
 */
export function markLastView(view: Uint8Array, whole: Uint8Array): void {
  if (view.buffer === whole.buffer && spansFreeableBuffer(whole)) {
    owned.delete(whole);
    owned.add(view);
  }
}

/** Frees `piece` if it was marked: call only once it is written and will not be read again. */
export function releaseOwned(piece: Uint8Array): void {
  if (!owned.delete(piece)) return;
  const buffer = piece.buffer as ArrayBuffer;
  if (!buffer.detached) buffer.transfer(0);
}

/**
 * Frees the buffer of `bytes`, which spans all of it and which nothing but the caller references: a
 * piece marked by {@linkcode markOwned}, or a buffer the caller made itself.
 */
export function freeBuffer(bytes: Uint8Array): void {
  owned.delete(bytes);
  if (bytes.byteLength > 0 && spansFreeableBuffer(bytes) && !bytes.buffer.detached) bytes.buffer.transfer(0);
}

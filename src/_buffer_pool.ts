// Read buffers reused across requests. Each request used to allocate its own 256 KiB buffer;
// at a thousand requests a second that is a quarter GiB/s of garbage outside the JS heap, which the
// garbage collector frees late, and which showed in peak RSS.

/** A bounded free list of equally sized buffers. */
export class BufferPool {
  readonly size: number;
  #max: number;
  #free: ArrayBuffer[] = [];

  /**
   * @param size Bytes per buffer.
   * @param max Most free buffers kept; more are left to the garbage collector.
   */
  constructor(size: number, max: number) {
    this.size = size;
    this.#max = max;
  }

  /** A buffer of `size` bytes: a free one, or a new one. */
  take(): Uint8Array<ArrayBuffer> {
    return new Uint8Array(this.#free.pop() ?? new ArrayBuffer(this.size));
  }

  /**
   * Returns a buffer for reuse. BYOB reads move a buffer into a new ArrayBuffer object each time,
   * so pass the latest; one that was moved away (detached) or has another size is ignored.
   */
  give(buffer: Uint8Array): void {
    const backing = buffer.buffer;
    if (!(backing instanceof ArrayBuffer) || backing.byteLength !== this.size) return;
    if (this.#free.length < this.#max) this.#free.push(backing);
  }
}

/** The buffers request bodies are read into, by the multipart reader and the file-system storage. */
export const readBuffers: BufferPool = new BufferPool(256 * 1024, 64);

/**
 * What the multipart reader keeps between reads of the file part into the storage's buffer (a
 * possible start of a delimiter, a few dozen bytes), and its reads of the body's end. Its own large
 * buffer goes back to the pool meanwhile, so a request holds one large buffer, not two.
 */
export const smallBuffers: BufferPool = new BufferPool(16 * 1024, 64);

/** Returns a buffer to whichever pool has its size; others are left to the garbage collector. */
export function giveBack(buffer: Uint8Array): void {
  readBuffers.give(buffer);
  smallBuffers.give(buffer);
}

// Web streams over open files, shared by the file-system storage.
import { readBuffers } from "../_buffer_pool.ts";
import { byteReaderOf } from "../_byte_tap.ts";
import { releaseOwned } from "../_owned_bytes.ts";
import type { FileReader, FileWriter } from "./_fs_file.ts";

const READ_SIZE = 256 * 1024;

/**
 * A pull-based stream of a file's bytes that closes the file when done or cancelled: the whole
 * file, or `length` bytes from `start`.
 */
export function readableFromFile(
  file: FileReader,
  range?: { start: number; length: number },
): ReadableStream<Uint8Array> {
  let position = range?.start ?? 0;
  let left = range?.length ?? Infinity;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await file.close();
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const size = Math.min(READ_SIZE, left);
        const buffer = new Uint8Array(size);
        const bytesRead = size === 0 ? 0 : await file.readAt(buffer, position);
        position += bytesRead;
        left -= bytesRead;
        if (bytesRead === 0) {
          if (left !== Infinity && left > 0) throw new Error(`File ended ${left} bytes before the range did`);
          await close();
          controller.close();
        } else {
          controller.enqueue(
            bytesRead === size ? buffer : buffer.subarray(0, bytesRead),
          );
        }
      } catch (error) {
        await close().catch(() => {});
        controller.error(error);
      }
    },
    cancel: close,
  }, { highWaterMark: 0 });
}

/**
 * Writes a stream into a file from byte `start` on (positional, so several chunks can fill one
 * file at once), each network read as it arrives: writes are synchronous (see _fs_platform.ts), so
 * gathering reads would save only system calls and cost memory. A byte stream (a request body) is
 * read into one pooled buffer; other streams' chunks are written as they come. Returns the number
 * of bytes written. Rejects (and cancels the stream) when `signal` aborts.
 */
export async function writeStreamToFile(
  file: FileWriter,
  data: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
  start = 0,
): Promise<number> {
  const byob = byteReaderOf(data);
  if (!byob) return await writeChunksToFile(file, data, signal, start);
  let buffer = readBuffers.take();
  let total = 0;
  let finished = false;
  try {
    for (;;) {
      signal?.throwIfAborted();
      const { done, value } = await byob.read(buffer);
      // The read moved the buffer into `value`; keep using it.
      if (value) buffer = new Uint8Array(value.buffer as ArrayBuffer);
      if (done) {
        finished = true;
        return total;
      }
      await file.writeAt(value!, start + total);
      total += value!.byteLength;
    }
  } catch (error) {
    await byob.cancel(error).catch(() => {});
    throw error;
  } finally {
    byob.releaseLock();
    // Only after a clean end: a failed read may still own the buffer.
    if (finished) readBuffers.give(buffer);
  }
}

/** {@linkcode writeStreamToFile} for streams that are not byte streams. */
async function writeChunksToFile(
  file: FileWriter,
  data: ReadableStream<Uint8Array>,
  signal: AbortSignal | undefined,
  start: number,
): Promise<number> {
  const reader = data.getReader();
  let total = 0;
  try {
    while (true) {
      signal?.throwIfAborted();
      const { done, value } = await reader.read();
      if (done) return total;
      await file.writeAt(value, start + total);
      total += value.byteLength;
      releaseOwned(value);
    }
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    throw error;
  } finally {
    reader.releaseLock();
  }
}

// Byte helpers shared by the core and the storages.

/** Joins byte arrays into one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let length = 0;
  for (const part of parts) length += part.byteLength;
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  return bytes;
}

/**
 * Reads a whole stream into one array. A reader loop, not `Response#arrayBuffer()`, so the stream's
 * own error (a size mismatch, a client gone) reaches the caller unchanged.
 */
export async function collectBytes(data: ReadableStream<Uint8Array>): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  for await (const part of data) parts.push(part);
  return concatBytes(parts);
}

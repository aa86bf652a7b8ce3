// Shared test helpers: chunking like the clients do, a loopback server, hashing.
import { chunkCount, chunkLayout, chunkOffset, chunkSizeIn, type LayoutKind } from "../src/layout.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import type { UploadStorage } from "../src/storage/types.ts";

/** One chunk as a client would send it. */
export interface ClientChunk {
  number: number;
  bytes: Uint8Array<ArrayBuffer>;
  params: Record<string, string>;
}

/** Options for {@linkcode clientChunks}. */
export interface ChunkingOptions {
  identifier: string;
  fileName?: string;
  chunkSize: number;
  forceChunkSize?: boolean;
  dialect?: "resumable" | "flow";
}

/** Cuts `data` the way resumable.js and flow.js do (docs/protocol.md §5), with their parameters. */
export function clientChunks(data: Uint8Array<ArrayBuffer>, options: ChunkingOptions): ClientChunk[] {
  const kind: LayoutKind = options.forceChunkSize ? "ceil" : "floor";
  const layout = chunkLayout(data.byteLength, options.chunkSize);
  const count = chunkCount(layout, kind);
  const prefix = options.dialect ?? "resumable";
  const fileName = options.fileName ?? "file.bin";
  return Array.from({ length: count }, (_, i) => {
    const number = i + 1;
    const start = chunkOffset(layout, number);
    const bytes = data.slice(start, start + chunkSizeIn(layout, kind, number)!);
    const params: Record<string, string> = {
      [`${prefix}ChunkNumber`]: String(number),
      [`${prefix}ChunkSize`]: String(options.chunkSize),
      [`${prefix}CurrentChunkSize`]: String(bytes.byteLength),
      [`${prefix}TotalSize`]: String(data.byteLength),
      [`${prefix}Identifier`]: options.identifier,
      [`${prefix}Filename`]: fileName,
      [`${prefix}RelativePath`]: fileName,
      [`${prefix}TotalChunks`]: String(count),
    };
    if (prefix === "resumable") params.resumableType = "";
    return { number, bytes, params };
  });
}

/** A request for one chunk: multipart (params in the form, like flow.js) or octet (params in the URL). */
export function chunkRequest(
  base: string,
  chunk: ClientChunk,
  mode: "multipart" | "octet" = "multipart",
): Request {
  if (mode === "octet") {
    return new Request(`${base}?${new URLSearchParams(chunk.params)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: chunk.bytes,
    });
  }
  const form = new FormData();
  for (const [key, value] of Object.entries(chunk.params)) form.set(key, value);
  form.set("file", new Blob([chunk.bytes]), "blob");
  return new Request(base, { method: "POST", body: form });
}

/** A test request (GET, params in the query string) for one chunk. */
export function testRequest(base: string, chunk: ClientChunk): Request {
  return new Request(`${base}?${new URLSearchParams(chunk.params)}`);
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function seededBytes(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** Hex SHA-256 of bytes. */
export async function sha256(bytes: Uint8Array | ArrayBuffer): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as BufferSource);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A handler served on 127.0.0.1, a free port; `close()` stops it. */
export interface LoopbackServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves `handler` on loopback until `close()`. */
export function serve(handler: (request: Request) => Promise<Response>): Promise<LoopbackServer> {
  const controller = new AbortController();
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      signal: controller.signal,
      onListen: ({ port }) =>
        resolve({
          url: `http://127.0.0.1:${port}/upload`,
          port,
          close: async () => {
            controller.abort();
            await server.finished;
          },
        }),
    }, handler);
  });
}

/** Every path below `dir`, recursively, relative to it. */
export async function listTree(dir: string, prefix = ""): Promise<string[]> {
  const paths: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${prefix}${entry.name}`;
    paths.push(path);
    if (entry.isDirectory) paths.push(...await listTree(`${dir}/${entry.name}`, `${path}/`));
  }
  return paths.sort();
}

/** A byte stream (as a request body is, so BYOB reads work) that yields `pieces`, one per read. */
export function byteStreamOf(pieces: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      if (i === pieces.length) {
        controller.close();
        controller.byobRequest?.respond(0);
      } else controller.enqueue(pieces[i++]!);
    },
  });
}

/** The two storages a behaviour is checked on in one process: memory, and a fresh directory on disk. */
export const MEMORY_AND_DISK: [
  string,
  () => Promise<{ storage: UploadStorage; cleanup(): Promise<void> }>,
][] = [
  ["memory", () => Promise.resolve({ storage: new MemoryStorage(), cleanup: () => Promise.resolve() })],
  ["file system", async () => {
    const directory = await Deno.makeTempDir({ prefix: "resumable-storage-" });
    return {
      storage: new FileSystemStorage({ directory }),
      cleanup: () => Deno.remove(directory, { recursive: true }),
    };
  }],
];

/** Sends raw bytes over TCP and returns the status line of the first response, or "" if none came. */
export async function rawExchange(
  port: number,
  head: string,
  bodyPiece: Uint8Array,
  maxPieces: number,
): Promise<{ statusLine: string; piecesSent: number }> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  const encoder = new TextEncoder();
  let piecesSent = 0;
  let response = "";
  const reading = (async () => {
    const buffer = new Uint8Array(4096);
    const read = await connection.read(buffer).catch(() => null);
    if (read) response = new TextDecoder().decode(buffer.subarray(0, read));
  })();
  try {
    await connection.write(encoder.encode(head));
    for (; piecesSent < maxPieces && response === ""; piecesSent++) {
      await connection.write(bodyPiece);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  } catch {
    // The server may close the connection after answering early; that is the point.
  }
  await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, 5000))]);
  connection.close();
  await reading;
  return { statusLine: response.split("\r\n")[0] ?? "", piecesSent };
}

/**
 * What is left under `root` in the file storage's chunk folders once a server has cleaned up after an
 * aborted body: it notices the reset asynchronously, so this waits (up to 5 s) for the list to empty.
 * The storage's writer folder is made before a body is read and holds no data, so it does not count.
 */
export async function chunkDataLeft(root: string): Promise<string[]> {
  let left: string[] = [];
  for (let i = 0; i < 100; i++) {
    left = (await listTree(root)).filter((path) =>
      path.includes("/chunks/") && !/\/\.writer-[^/]*$/.test(path)
    );
    if (left.length === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return left;
}

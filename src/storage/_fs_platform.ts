// Which file API the file-system storage runs on.
//
// Under Deno it calls Deno's synchronous file functions. Deno's asynchronous file calls each hand
// the work to a thread pool and back: two thread wake-ups per call, which cost more than the call
// itself. On the 2-core VM where bench/run.ts ran, a server writing 1 MiB chunks this way spent
// about twice the CPU of one making the same `pwrite`s on its own thread, and `node:fs` under
// Deno is a JavaScript layer over that pool that adds calls of its own (four for one
// `readFile`), converts every error and copies vectored writes twice. The synchronous calls made
// here are short: metadata calls on one directory and writes of one network read (64 KiB) into
// the page cache, like the blocking writes nginx makes when it buffers request bodies to disk.
// The trade-off: on a disk that stalls (a saturated or network file system), a stalled call holds
// up every request of the process, not only its own.
//
// Bun and Node get `node:fs`, and its synchronous calls for the same reason: the asynchronous ones
// also go through a thread pool. Under Bun in bench/run.ts a multipart upload with 1 MiB chunks, 4
// in flight, ran at about 200 MiB/s with asynchronous writes (gathering 1 MiB per write) against
// about 420 MiB/s with `writeSync`. The metadata calls of every chunk followed: a `stat` took
// 30-36 µs through `node:fs/promises` under Bun and 2-4 µs with `statSync`, and Bun's octet
// uploads of 1 MiB chunks on tmpfs ran 11-25 % faster with them synchronous. Only removing a
// tree and reading a stored file stay asynchronous there. Both APIs report failures with the same
// `code` strings (ENOENT, EEXIST, ...).

/** The subset of the Deno namespace the storage uses, typed here so this module loads anywhere. */
export interface DenoFsApi {
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  openSync(path: string, options: DenoOpenOptions): DenoFile;
  readTextFileSync(path: string): string;
  writeTextFileSync(path: string, data: string, options?: { createNew?: boolean }): void;
  readDirSync(path: string): Iterable<{ name: string }>;
  mkdirSync(path: string, options?: { recursive?: boolean }): void;
  linkSync(oldPath: string, newPath: string): void;
  renameSync(oldPath: string, newPath: string): void;
  removeSync(path: string, options?: { recursive?: boolean }): void;
  statSync(
    path: string,
  ): {
    size: number;
    mtime: Date | null;
    ctime: Date | null;
    birthtime: Date | null;
    ino: number | null;
    nlink: number | null;
  };
  utimeSync(path: string, atime: Date, mtime: Date): void;
  cwd(): string;
  build: { os: string };
  SeekMode: { Start: number };
}

/** Options of `Deno.openSync` the storage uses. */
export interface DenoOpenOptions {
  read?: boolean;
  write?: boolean;
  create?: boolean;
  createNew?: boolean;
  mode?: number;
}

/** The subset of `Deno.FsFile` the storage uses. */
export interface DenoFile {
  seekSync(offset: number, whence: number): number;
  readSync(buffer: Uint8Array): number | null;
  writeSync(bytes: Uint8Array): number;
  truncateSync(length?: number): void;
  syncSync(): void;
  statSync(): { ino: number | null };
  close(): void;
}

/** `node:fs/promises`, as far as the storage uses it. */
export type NodeFs = typeof import("node:fs/promises");

/** `node:fs`, for the synchronous calls of the chunk writes. */
export type NodeFsSync = typeof import("node:fs");

// Looked up, not named, so this module loads under Bun and Node too.
const candidate = (globalThis as { Deno?: DenoFsApi }).Deno;

/** Deno's file API when running on Deno, else `undefined`. */
export const denoFs: DenoFsApi | undefined = typeof candidate?.openSync === "function"
  ? candidate
  : undefined;

/**
 * What Bun and Node tell about their process, without importing `node:process`. Not read under
 * Deno: its `process` global is a getter that loads the Node compatibility layer.
 */
const nodeProcess = denoFs
  ? undefined
  : (globalThis as { process?: { platform: string; cwd(): string } }).process;

/**
 * Whether the runtime removes a directory tree asynchronously as a JavaScript walk of thread-pool
 * calls (Node), rather than in one native call (Deno, Bun). See `removeAll`.
 */
export const treeRemovalWalks: boolean = !denoFs &&
  typeof (globalThis as { Bun?: unknown }).Bun === "undefined";

/** Whether paths are Windows paths. */
export const windowsPaths: boolean = denoFs
  ? denoFs.build.os === "windows"
  : nodeProcess?.platform === "win32";

/** The working directory of the process. */
export function currentDirectory(): string {
  if (denoFs) return denoFs.cwd();
  if (!nodeProcess) {
    throw new Error("No working directory on this runtime: give the storage an absolute directory");
  }
  return nodeProcess.cwd();
}

let nodeFs: Promise<NodeFs> | undefined;

/** `node:fs/promises`, loaded on first use so that Deno never pays for it. */
export function loadNodeFs(): Promise<NodeFs> {
  return nodeFs ??= import("node:fs/promises");
}

let nodeFsSync: NodeFsSync | undefined;
let loadingNodeFsSync: Promise<NodeFsSync> | undefined;

/**
 * `node:fs`, loaded on first use like {@linkcode loadNodeFs}; once loaded, the module itself rather
 * than a promise, since the storage's calls on every chunk await it.
 */
export function loadNodeFsSync(): NodeFsSync | Promise<NodeFsSync> {
  return nodeFsSync ?? (loadingNodeFsSync ??= import("node:fs").then((fs) => nodeFsSync = fs));
}

// Open files of the file-system storage: positional writes and range reads, with Deno's
// synchronous calls under Deno and node:fs elsewhere, writing synchronously on both (see
// _fs_platform.ts for why).
import type { FileHandle } from "node:fs/promises";
import { type DenoFile, denoFs, loadNodeFs, loadNodeFsSync, type NodeFsSync } from "./_fs_platform.ts";

/** An open file that writes whole buffers at given offsets. */
export interface FileWriter {
  /** Writes all of `bytes` from byte `position` on, or rejects. */
  writeAt(bytes: Uint8Array, position: number): Promise<void>;
  /** Flushes the file's data to the device. */
  sync(): Promise<void>;
  /** The inode number of the open file (0 where the platform tells none): which file this is. */
  inode(): Promise<number>;
  close(): Promise<void>;
}

/** How to open: `shared` creates the file if absent and never truncates; `new` fails if it exists. */
export type OpenMode = "shared" | "new";

/** Opens `path` for positional writes with the fastest file API of the running platform. */
export async function openWriter(path: string, mode: OpenMode): Promise<FileWriter> {
  if (denoFs) {
    const file = denoFs.openSync(path, {
      write: true,
      ...(mode === "new" ? { createNew: true } : { create: true }),
      mode: 0o644,
    });
    return new DenoWriter(file, denoFs.SeekMode.Start);
  }
  const fs = await loadNodeFsSync();
  const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
  const flags = mode === "new" ? O_WRONLY | O_CREAT | O_EXCL : O_WRONLY | O_CREAT;
  return new NodeWriter(fs, fs.openSync(path, flags, 0o644));
}

/** A Deno file and the offset it is at. Each one owns its descriptor, so its offset is ours. */
class DenoPositioned {
  protected readonly file: DenoFile;
  protected position = 0;
  #seekStart: number;

  constructor(file: DenoFile, seekStart: number) {
    this.file = file;
    this.#seekStart = seekStart;
  }

  /** Moves to `position`, seeking only when not already there. */
  protected seekTo(position: number): void {
    if (position !== this.position) this.file.seekSync(position, this.#seekStart);
    this.position = position;
  }
}

class DenoWriter extends DenoPositioned implements FileWriter {
  // deno-lint-ignore require-await -- synchronous on purpose (see _fs_platform.ts); a failure rejects.
  async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    this.seekTo(position);
    let written = 0;
    while (written < bytes.byteLength) {
      const count = this.file.writeSync(written === 0 ? bytes : bytes.subarray(written));
      if (count === 0) throw new Error("File write made no progress");
      written += count;
    }
    this.position += written;
  }

  // deno-lint-ignore require-await
  async sync(): Promise<void> {
    this.file.syncSync();
  }

  // deno-lint-ignore require-await
  async inode(): Promise<number> {
    return this.file.statSync().ino ?? 0;
  }

  // deno-lint-ignore require-await
  async close(): Promise<void> {
    this.file.close();
  }
}

/** The `node:fs` calls a {@linkcode NodeWriter} makes. */
export type NodeWriterFs = Pick<NodeFsSync, "writeSync" | "fsyncSync" | "fstatSync" | "closeSync">;

/** A `node:fs` file descriptor as a {@linkcode FileWriter}, written with `pwrite`; exported for its test. */
export class NodeWriter implements FileWriter {
  #fs: NodeWriterFs;
  #fd: number;

  constructor(fs: NodeWriterFs, fd: number) {
    this.#fs = fs;
    this.#fd = fd;
  }

  // deno-lint-ignore require-await -- synchronous on purpose (see _fs_platform.ts); a failure rejects.
  async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    let written = 0;
    while (written < bytes.byteLength) {
      const count = this.#fs.writeSync(
        this.#fd,
        bytes,
        written,
        bytes.byteLength - written,
        position + written,
      );
      if (count === 0) throw new Error("File write made no progress");
      written += count;
    }
  }

  // deno-lint-ignore require-await
  async sync(): Promise<void> {
    this.#fs.fsyncSync(this.#fd);
  }

  // deno-lint-ignore require-await
  async inode(): Promise<number> {
    return this.#fs.fstatSync(this.#fd).ino;
  }

  // deno-lint-ignore require-await
  async close(): Promise<void> {
    this.#fs.closeSync(this.#fd);
  }
}

/** An open file read from given offsets. */
export interface FileReader {
  /** Reads into `buffer` from byte `position`; returns how many bytes were read, 0 at the end. */
  readAt(buffer: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

/** Opens `path` for reading with the fastest file API of the running platform. */
export async function openReader(path: string): Promise<FileReader> {
  if (denoFs) return new DenoReader(denoFs.openSync(path, { read: true }), denoFs.SeekMode.Start);
  return new NodeReader(await (await loadNodeFs()).open(path, "r"));
}

class DenoReader extends DenoPositioned implements FileReader {
  // deno-lint-ignore require-await
  async readAt(buffer: Uint8Array, position: number): Promise<number> {
    this.seekTo(position);
    const count = this.file.readSync(buffer) ?? 0;
    this.position += count;
    return count;
  }

  // deno-lint-ignore require-await
  async close(): Promise<void> {
    this.file.close();
  }
}

class NodeReader implements FileReader {
  #handle: FileHandle;

  constructor(handle: FileHandle) {
    this.#handle = handle;
  }

  async readAt(buffer: Uint8Array, position: number): Promise<number> {
    return (await this.#handle.read(buffer, 0, buffer.byteLength, position)).bytesRead;
  }

  close(): Promise<void> {
    return this.#handle.close();
  }
}

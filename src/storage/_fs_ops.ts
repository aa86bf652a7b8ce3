// Path operations of the file-system storage: Deno's synchronous calls under Deno, node:fs's
// synchronous calls elsewhere (see _fs_platform.ts for why). Asynchronous to their callers either
// way, so callers need not care; a failure is always a rejected promise, never a throw.
import { denoFs, loadNodeFs, loadNodeFsSync, type NodeFsSync, treeRemovalWalks } from "./_fs_platform.ts";
import { joinPath } from "./_path.ts";

/** What the storage reads from a `stat`. */
export interface FileStat {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Inode number and creation time: together, which file this is. */
  ino: number;
  birthtimeMs: number;
  /** Hard links; for a directory on most Unix file systems, 2 plus its subdirectories. 0 if unknown. */
  nlink: number;
}

function isMissing(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code;
  return code === "ENOENT";
}

/** The file's text, as UTF-8. */
export async function readText(path: string): Promise<string> {
  if (denoFs) return denoFs.readTextFileSync(path);
  return (await loadNodeFsSync()).readFileSync(path, "utf8");
}

/**
 * Flushes a file's data to its disk (`fsync`). Opened for writing: Windows flushes only handles
 * that may write.
 */
export async function syncFile(path: string): Promise<void> {
  if (denoFs) {
    const file = denoFs.openSync(path, { read: true, write: true });
    try {
      file.syncSync();
    } finally {
      file.close();
    }
    return;
  }
  const fs = await loadNodeFsSync();
  const fd = fs.openSync(path, "r+");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `text` to `path`, replacing it; with `exclusive`, fails with EEXIST if `path` exists. */
export async function writeText(path: string, text: string, exclusive = false): Promise<void> {
  if (denoFs) return denoFs.writeTextFileSync(path, text, exclusive ? { createNew: true } : {});
  (await loadNodeFsSync()).writeFileSync(path, text, exclusive ? { flag: "wx" } : {});
}

/** Creates a new file (EEXIST if present) of `size` bytes without writing any: a sparse file. */
export async function createSized(path: string, size: number): Promise<void> {
  if (denoFs) {
    const file = denoFs.openSync(path, { write: true, createNew: true, mode: 0o644 });
    try {
      file.truncateSync(size);
    } finally {
      file.close();
    }
    return;
  }
  const fs = await loadNodeFsSync();
  const fd = fs.openSync(path, "wx", 0o644);
  try {
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** Names in a directory. */
export async function readdir(path: string): Promise<string[]> {
  if (denoFs) {
    return Array.from(denoFs.readDirSync(path), (entry) => entry.name);
  }
  return (await loadNodeFsSync()).readdirSync(path);
}

/** Creates a directory and its parents; no error if it exists. */
export async function mkdirs(path: string): Promise<void> {
  if (denoFs) return denoFs.mkdirSync(path, { recursive: true });
  (await loadNodeFsSync()).mkdirSync(path, { recursive: true });
}

/** Creates one directory; EEXIST if it exists, ENOENT if its parent does not. */
export async function makeDir(path: string): Promise<void> {
  if (denoFs) return denoFs.mkdirSync(path);
  (await loadNodeFsSync()).mkdirSync(path);
}

/** Hard-links `target` as `path`; EEXIST if `path` exists. */
export async function link(target: string, path: string): Promise<void> {
  if (denoFs) return denoFs.linkSync(target, path);
  (await loadNodeFsSync()).linkSync(target, path);
}

/** Renames, replacing `to` if it is a file. */
export async function rename(from: string, to: string): Promise<void> {
  if (denoFs) return denoFs.renameSync(from, to);
  (await loadNodeFsSync()).renameSync(from, to);
}

/** Removes a file. */
export async function unlink(path: string): Promise<void> {
  if (denoFs) return denoFs.removeSync(path);
  (await loadNodeFsSync()).unlinkSync(path);
}

/**
 * Removes a file or a directory tree; nothing if it is absent (`rm -rf`). Asynchronous under Deno
 * too: a tree is many calls, better made on another thread than on the one serving requests.
 */
export async function removeAll(path: string): Promise<void> {
  if (denoFs) {
    try {
      await denoFs.remove(path, { recursive: true });
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
    return;
  }
  // Node's asynchronous `rm` walks the tree in JavaScript, one thread-pool call per entry, each
  // answered only when the event loop gets to it: under load (1 MiB chunks, 16 in flight) it held the
  // request completing an upload for 91-244 ms over a folder of 32 chunks. A small tree goes in one
  // synchronous walk instead, well under a millisecond; a large one stays off this thread.
  if (treeRemovalWalks) {
    const fs = await loadNodeFsSync();
    if (treeIsSmall(fs, path, SYNC_REMOVAL_ENTRIES)) return fs.rmSync(path, { recursive: true, force: true });
  }
  await (await loadNodeFs()).rm(path, { recursive: true, force: true });
}

/** The most entries a tree may have for {@linkcode removeAll} to remove it synchronously. */
export const SYNC_REMOVAL_ENTRIES = 1000;

/** Whether the tree at `path` has at most `limit` entries (a file or nothing has none). */
function treeIsSmall(fs: NodeFsSync, path: string, limit: number): boolean {
  let left = limit;
  const fits = (dir: string): boolean => {
    let entries;
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return true; // a file, or gone: `rmSync` removes or skips it, or fails as `rm` would
    }
    left -= entries.length;
    if (left < 0) return false;
    return entries.every((entry) => !entry.isDirectory() || fits(joinPath(dir, entry.name)));
  };
  return fits(path);
}

/** Size and times of a file or directory. */
export async function stat(path: string): Promise<FileStat> {
  if (denoFs) {
    const info = denoFs.statSync(path);
    return {
      size: info.size,
      mtimeMs: info.mtime?.getTime() ?? 0,
      ctimeMs: info.ctime?.getTime() ?? 0,
      ino: info.ino ?? 0,
      birthtimeMs: info.birthtime?.getTime() ?? 0,
      nlink: info.nlink ?? 0,
    };
  }
  const info = (await loadNodeFsSync()).statSync(path);
  return {
    size: info.size,
    mtimeMs: info.mtimeMs,
    ctimeMs: info.ctimeMs,
    ino: info.ino,
    birthtimeMs: info.birthtimeMs,
    nlink: info.nlink,
  };
}

/** Sets access and modification times. */
export async function utimes(path: string, atime: Date, mtime: Date): Promise<void> {
  if (denoFs) return denoFs.utimeSync(path, atime, mtime);
  (await loadNodeFsSync()).utimesSync(path, atime, mtime);
}

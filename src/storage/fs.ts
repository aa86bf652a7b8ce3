/**
 * A file-system {@linkcode UploadStorage} on `node:fs/promises`, so it runs on Deno, Bun and Node.
 * Several processes may share one directory (on one machine, or on a shared disk with POSIX
 * `link`/`rename` semantics): every create-if-absent is an `O_EXCL` open or a hard link.
 *
 * Layout under the root directory:
 * ```
 * uploads/<key>/upload.json      upload record (created once, by hard link)
 * uploads/<key>/chunks/<n>       a complete chunk (temp file + rename)
 * uploads/<key>/claim-<g>        assembly lease of generation g (O_EXCL; mtime = last renewal)
 * uploads/<key>/complete.json    completion record (created once, by hard link)
 * files/<id>/<sanitised name>    a completed file
 * files/<id>/.file.json          its metadata
 * ```
 *
 * @example
 * ```ts
 * import { createResumableHandler } from "@resumable/server";
 * import { FileSystemStorage } from "@resumable/server/fs";
 *
 * const handler = createResumableHandler({
 *   storage: new FileSystemStorage({ directory: "./uploads" }),
 * });
 * ```
 *
 * @module
 */

import {
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { join, resolve } from "node:path";
import { isFileId, isUploadKey, sanitizeFileName } from "../identifier.ts";
import { readableFromHandle, writeStreamToHandle } from "./_fs_streams.ts";
import type { Claim, Lease, OpenedFile, StoredFile, UploadRecord, UploadStorage } from "./types.ts";

export type {
  Claim,
  Lease,
  OpenedFile,
  StoredFile,
  UploadActivity,
  UploadRecord,
  UploadStorage,
} from "./types.ts";

/** Options of {@linkcode FileSystemStorage}. */
export interface FileSystemStorageOptions {
  /**
   * Root directory; created on first use.
   * @default {"./uploads"}
   */
  directory?: string;
  /**
   * `fsync` every chunk and completed file before it becomes visible. Survives power loss, at a
   * large cost in throughput; without it a crash of the process is still safe, a crash of the
   * machine may lose the last seconds of writes.
   * @default {false}
   */
  durable?: boolean;
}

const CHUNK_NAME = /^[1-9][0-9]*$/;
const CLAIM_NAME = /^claim-([1-9][0-9]*)$/;

function errorCode(error: unknown): string | undefined {
  return (error as { code?: string } | null)?.code;
}

function isMissing(error: unknown): boolean {
  const code = errorCode(error);
  return code === "ENOENT" || code === "ENOTDIR";
}

function randomSuffix(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 12);
}

/**
 * Stores uploads in a directory. The default storage of the handler.
 *
 * @example Reading a completed file
 * ```ts
 * import { FileSystemStorage } from "@resumable/server/fs";
 *
 * const storage = new FileSystemStorage({ directory: await Deno.makeTempDir() });
 * const opened = await storage.openFile("0123456789abcdef01234567");
 * if (opened === undefined) console.log("no such file");
 * ```
 */
export class FileSystemStorage implements UploadStorage {
  /** Absolute path of the root directory. */
  readonly directory: string;
  #durable: boolean;

  /**
   * Creates a storage rooted at `options.directory`. Nothing touches the disk until first use.
   *
   * @param options Where to store, and how durably.
   */
  constructor(options: FileSystemStorageOptions = {}) {
    this.directory = resolve(options.directory ?? "./uploads");
    this.#durable = options.durable ?? false;
  }

  #uploadDir(key: string): string {
    // Keys are made by the handler; refusing anything else keeps every path inside the root even
    // if a custom caller passes client text.
    if (!isUploadKey(key)) throw new TypeError(`Invalid upload key "${key}"`);
    return join(this.directory, "uploads", key);
  }

  #fileDir(fileId: string): string {
    if (!isFileId(fileId)) throw new TypeError(`Invalid file id "${fileId}"`);
    return join(this.directory, "files", fileId);
  }

  async #readJson<T>(path: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(path, "utf8")) as T;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  /** Writes JSON under `path` only if nothing is there; returns whether this call created it. */
  async #createJson(path: string, value: unknown): Promise<boolean> {
    const temp = `${path}.${randomSuffix()}.tmp`;
    await writeFile(temp, JSON.stringify(value), { flag: "wx" });
    try {
      // A hard link publishes complete content atomically and fails if the name exists.
      await link(temp, path);
      return true;
    } catch (error) {
      if (errorCode(error) === "EEXIST") return false;
      throw error;
    } finally {
      await unlink(temp).catch(() => {});
    }
  }

  /** Creates the upload record if absent. */
  async createUpload(record: UploadRecord): Promise<UploadRecord> {
    const dir = this.#uploadDir(record.key);
    await mkdir(join(dir, "chunks"), { recursive: true });
    const path = join(dir, "upload.json");
    if (await this.#createJson(path, record)) return record;
    const existing = await this.#readJson<UploadRecord>(path);
    if (!existing) {
      throw new Error(
        `Upload record "${record.key}" vanished while being created`,
      );
    }
    return existing;
  }

  /** The upload record, or `undefined`. */
  getUpload(key: string): Promise<UploadRecord | undefined> {
    return this.#readJson<UploadRecord>(
      join(this.#uploadDir(key), "upload.json"),
    );
  }

  /** Writes a chunk to a temp file and renames it into place once complete. */
  async putChunk(
    key: string,
    index: number,
    data: ReadableStream<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<void> {
    if (!Number.isSafeInteger(index) || index < 1) {
      throw new RangeError(`Invalid chunk index ${index}`);
    }
    const chunks = join(this.#uploadDir(key), "chunks");
    const temp = join(chunks, `.${index}.${randomSuffix()}.tmp`);
    const handle = await open(temp, "wx");
    let published = false;
    try {
      await writeStreamToHandle(handle, data, signal);
      if (this.#durable) await handle.sync();
      await handle.close();
      signal?.throwIfAborted();
      await rename(temp, join(chunks, String(index)));
      published = true;
    } finally {
      if (!published) {
        await handle.close().catch(() => {});
        await unlink(temp).catch(() => {});
      }
    }
  }

  /** Size of a stored chunk, or `undefined`. */
  async chunkSize(key: string, index: number): Promise<number | undefined> {
    try {
      return (await stat(join(this.#uploadDir(key), "chunks", String(index))))
        .size;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  /** Counts chunks with one directory listing. */
  async countChunks(key: string): Promise<number> {
    try {
      const names = await readdir(join(this.#uploadDir(key), "chunks"));
      return names.filter((name) => CHUNK_NAME.test(name)).length;
    } catch (error) {
      if (isMissing(error)) return 0;
      throw error;
    }
  }

  /** Streams a stored chunk. */
  async openChunk(
    key: string,
    index: number,
  ): Promise<ReadableStream<Uint8Array>> {
    const handle = await open(
      join(this.#uploadDir(key), "chunks", String(index)),
      "r",
    );
    return readableFromHandle(handle);
  }

  async #newestClaim(dir: string): Promise<number> {
    let newest = 0;
    for (const name of await readdir(dir)) {
      const match = CLAIM_NAME.exec(name);
      if (match) newest = Math.max(newest, Number(match[1]));
    }
    return newest;
  }

  /** Takes the next claim generation if the newest one has expired; one creator wins per generation. */
  async claim(key: string, lease: Lease): Promise<Claim | undefined> {
    const dir = this.#uploadDir(key);
    const newest = await this.#newestClaim(dir);
    if (newest > 0) {
      // A claim lives for its own holder's ttl past its last renewal (the file's mtime). A claim
      // file still being written reads as unparsable and counts as live.
      const path = join(dir, `claim-${newest}`);
      try {
        const { mtimeMs } = await stat(path);
        const held = await this.#readJson<Lease>(path).catch(() => undefined);
        if (Date.now() - mtimeMs < (held?.ttlMs ?? lease.ttlMs)) return undefined;
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    }
    const generation = newest + 1;
    try {
      await writeFile(join(dir, `claim-${generation}`), JSON.stringify(lease), { flag: "wx" });
      return { key, owner: lease.owner, generation };
    } catch (error) {
      if (errorCode(error) === "EEXIST") return undefined;
      throw error;
    }
  }

  /** Touches the claim file so others see it alive; `false` once a newer generation exists. */
  async renewClaim(claim: Claim, _lease: Lease): Promise<boolean> {
    const dir = this.#uploadDir(claim.key);
    if (await this.#newestClaim(dir) !== claim.generation) return false;
    const now = new Date();
    await utimes(join(dir, `claim-${claim.generation}`), now, now);
    return true;
  }

  /** Expires a claim at once by dating its renewal to the epoch; the generation number stays used. */
  async releaseClaim(claim: Claim): Promise<void> {
    const dir = this.#uploadDir(claim.key);
    if (await this.#newestClaim(dir) !== claim.generation) return;
    await utimes(join(dir, `claim-${claim.generation}`), new Date(0), new Date(0)).catch(() => {});
  }

  /**
   * Streams into a temp file, then, if the claim is still the newest: renames it to
   * `files/<id>/<name>` and creates the completion record by hard link (one winner).
   */
  async commit(
    claim: Claim,
    data: ReadableStream<Uint8Array>,
    file: StoredFile,
  ): Promise<StoredFile | undefined> {
    const dir = this.#uploadDir(claim.key);
    const fileDir = this.#fileDir(file.id);
    const tempDir = join(this.directory, "files", ".tmp");
    await mkdir(tempDir, { recursive: true });
    const temp = join(
      tempDir,
      `${file.id}.${claim.generation}.${randomSuffix()}`,
    );
    const handle = await open(temp, "wx");
    let size: number;
    try {
      size = await writeStreamToHandle(handle, data);
      if (this.#durable) await handle.sync();
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw error;
    } finally {
      await handle.close().catch(() => {});
    }
    if (
      await this.#newestClaim(dir) !== claim.generation ||
      await this.getCompleted(claim.key)
    ) {
      await unlink(temp).catch(() => {});
      return undefined;
    }
    const location = join(fileDir, sanitizeFileName(file.name));
    const stored: StoredFile = { ...file, size, location };
    await mkdir(fileDir, { recursive: true });
    await writeFile(join(fileDir, ".file.json"), JSON.stringify(stored));
    await rename(temp, location);
    // The completion record is the linearisation point: whoever links it first has completed the
    // upload. A rare loser (a claimant that stalled past its lease) has renamed identical bytes
    // over the same name, so the published file is unchanged either way.
    if (!await this.#createJson(join(dir, "complete.json"), stored)) {
      return undefined;
    }
    return stored;
  }

  /** The completion record, or `undefined`. */
  getCompleted(key: string): Promise<StoredFile | undefined> {
    return this.#readJson<StoredFile>(
      join(this.#uploadDir(key), "complete.json"),
    );
  }

  /** Opens a completed file by id. */
  async openFile(fileId: string): Promise<OpenedFile | undefined> {
    if (!isFileId(fileId)) return undefined;
    const file = await this.#readJson<StoredFile>(
      join(this.#fileDir(fileId), ".file.json"),
    );
    if (!file?.location) return undefined;
    try {
      return { file, body: readableFromHandle(await open(file.location, "r")) };
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  /** Deletes the chunks, keeping the records. */
  async removeChunks(key: string): Promise<void> {
    await rm(join(this.#uploadDir(key), "chunks"), {
      recursive: true,
      force: true,
    });
  }

  /** Deletes the upload directory. */
  async removeUpload(key: string): Promise<void> {
    await rm(this.#uploadDir(key), { recursive: true, force: true });
  }

  /** Deletes a completed file and its metadata. */
  async removeFile(fileId: string): Promise<void> {
    if (!isFileId(fileId)) return;
    await rm(this.#fileDir(fileId), { recursive: true, force: true });
  }
}

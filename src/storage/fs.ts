/**
 * A file-system {@linkcode UploadStorage} for Deno, Bun and Node: Deno's own file API under Deno,
 * `node:fs` elsewhere.
 *
 * Under Deno its file calls are synchronous: a chunk's bytes go from the request straight into the
 * page cache, and an asynchronous call would cost two thread hand-offs, which measured more than the
 * work itself. They are short on a local disk; on a disk that stalls (a saturated or network file
 * system) a stalled call holds up every request of the process. See docs/performance.md.
 * Several processes may share one directory (on one machine, or on a shared disk with POSIX
 * `link`/`rename` semantics): every create-if-absent is an `O_EXCL` open or a hard link.
 *
 * Layout under the root directory:
 * ```
 * uploads/<key>/upload.json      upload record (created once, by hard link)
 * uploads/<key>/data             the file's bytes: every chunk is written at its final offset
 * uploads/<key>/chunks/<n>       marker of a complete chunk: an empty (sparse) file whose size is
 *                                the chunk's, published once its bytes are written, as a hard
 *                                link to chunks/.size-<bytes>-<group>-<file id>, made only in the
 *                                folder of the record with that file id
 * uploads/<key>/chunks/.writer-<id>/  made by each storage instance before its first marker there
 * uploads/<key>/chunks/.sealed/  made before the completion record (see `#alone`)
 * uploads/<key>/claim-<g>        assembly lease of generation g (O_EXCL; mtime = last renewal)
 * uploads/<key>/complete.json    completion record: a hard link to files/<id>/.file.json (one winner)
 * uploads/.removed-<key>.<r>/    a removed upload's folder, moved aside in one rename, being deleted
 * uploads/.removals/<key>        when the upload was last removed (ms since the epoch), kept ten minutes
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

import { absolutePath, joinPath } from "./_path.ts";
import { isFileId, isUploadKey, sanitizeFileName } from "../identifier.ts";
import { chunkLayout } from "../layout.ts";
import { type FileWriter, openReader, openWriter } from "./_fs_file.ts";
import { windowsPaths } from "./_fs_platform.ts";
import {
  createSized,
  type FileStat,
  link,
  makeDir,
  mkdirs,
  readdir,
  readText,
  removeAll,
  rename,
  stat,
  unlink,
} from "./_fs_ops.ts";
import { forgotten, preciseNow, PRUNE_EVERY_MS, recentRemoval } from "./_removals.ts";
import { newestClaim, takeClaim, touchClaim } from "./_fs_claims.ts";
import {
  createJson,
  errorCode,
  isMissing,
  randomSuffix,
  readJson,
  replaceJson,
  sizeOf,
  TornJsonError,
} from "./_fs_json.ts";
import { readableFromFile, writeStreamToFile } from "./_fs_streams.ts";
import type {
  Claim,
  Lease,
  OpenedFile,
  PutChunkOptions,
  RemoveUploadOptions,
  StoredFile,
  UploadActivity,
  UploadRecord,
  UploadStorage,
} from "./types.ts";

// Every storage type, so that this entry point documents what its exports refer to.
export type * from "./types.ts";

/** Options of {@linkcode FileSystemStorage}. */
export interface FileSystemStorageOptions {
  /**
   * Root directory; created on first use.
   * @default {"./uploads"}
   */
  directory?: string;
  /**
   * `fsync` every chunk, completed file, upload record and file metadata before it becomes
   * visible. Survives power loss, at a large cost in throughput; without it a crash of the process
   * is still safe, a crash of the machine may lose the last seconds of writes.
   * @default {false}
   */
  durable?: boolean;
}

const CHUNK_NAME = /^[1-9][0-9]*$/;
// Removed uploads are renamed to `uploads/<TRASH_PREFIX><key>.<suffix>` before being deleted.
const TRASH_PREFIX = ".removed-";
// Notes of recent removals (see `removedAt`), one file per upload key.
const REMOVALS_DIR = ".removals";
// How old a removed upload's folder must be before a sweep deletes it: its removal has ended.
const TRASH_GRACE_MS = 60_000;
const DATA_NAME = "data";
const MAX_CACHED = 10_000;
// Names per file: NTFS allows 1024 (ext4 65 000), and a new source every 1000 chunks costs nothing.
const LINKS_PER_SOURCE = 1000;
// A removal's own claim (see `#waitOutAssembly`): it is held for a rename, and blocks assemblies
// for this long only if the removal dies holding it.
const REMOVAL_CLAIM_MS = 10_000;
const CLAIM_POLL_MS = 10;
// What replaceJson leaves of files/<id>/.file.json when the process dies mid-write.
const META_TEMP = /^\.file\.json\.[0-9a-f]{12}\.tmp$/;

/** What an instance knows of one upload's chunk folder. */
interface KnownChunks {
  /** Which folder: a removed and recreated upload has a new one. */
  identity: string;
  /** Chunks known to be stored. */
  chunks: Set<number>;
  /** The lowest chunk not yet known to be stored, as far as `countChunks` looked. */
  next: number;
  /** Whether this instance has made its writer folder in it (and listed it since). */
  registered: boolean;
  /** The upload record as read after registering. */
  record?: UploadRecord;
}

/** Where an upload's parts are. */
interface UploadPaths {
  dir: string;
  record: string;
  complete: string;
  data: string;
  chunks: string;
  /** This instance's writer folder in `chunks`. */
  writer: string;
  /** `chunks` reached through `writer`, for `#chunkFolder` (not used on Windows). */
  throughWriter: string;
}

/** A chunk folder's stat, and whether this instance's writer folder was in it then. */
interface ChunkFolder {
  folder: FileStat;
  /** True only when the lookup went through the writer folder (see `#chunkFolder`). */
  writerSeen: boolean;
}

function identityOf(folder: FileStat): string {
  return `${folder.ino}:${folder.birthtimeMs}`;
}

/**
 * Stores uploads in a directory. The default storage of the handler.
 *
 * @example Reading a completed file
 * ```ts
 * import { FileSystemStorage } from "@resumable/server/fs";
 *
 * const directory = await Deno.makeTempDir();
 * const storage = new FileSystemStorage({ directory });
 * const opened = await storage.openFile("0123456789abcdef01234567");
 * if (opened === undefined) console.log("no such file");
 * await Deno.remove(directory, { recursive: true });
 * ```
 */
export class FileSystemStorage implements UploadStorage {
  /** Absolute path of the root directory. */
  readonly directory: string;
  #durable: boolean;
  #known = new Map<string, KnownChunks>();
  #records = new Map<string, UploadRecord>();
  #running = new Map<string, Promise<unknown>>();
  // Built once per upload: each chunk uses them a dozen times.
  #paths = new Map<string, UploadPaths>();
  // This instance's folder in the chunk folders it writes to.
  #writer = `.writer-${randomSuffix()}`;
  /** When this instance last deleted old notes of removals. */
  #removalsPruned = 0;
  // Whether a directory's link count follows its subdirectories here: learnt at the first
  // registration (see `#knownChunks`), unknown until then.
  #linksCounted?: boolean;

  /**
   * Creates a storage rooted at `options.directory`. Nothing touches the disk until first use.
   *
   * @param options Where to store, and how durably.
   */
  constructor(options: FileSystemStorageOptions = {}) {
    this.directory = absolutePath(options.directory ?? "./uploads");
    this.#durable = options.durable ?? false;
  }

  #pathsOf(key: string): UploadPaths {
    let paths = this.#paths.get(key);
    if (paths) return paths;
    // Keys are made by the handler; refusing anything else keeps every path inside the root even
    // if a custom caller passes client text.
    if (!isUploadKey(key)) throw new TypeError(`Invalid upload key "${key}"`);
    const dir = joinPath(this.directory, "uploads", key);
    const chunks = joinPath(dir, "chunks");
    paths = {
      dir,
      record: joinPath(dir, "upload.json"),
      complete: joinPath(dir, "complete.json"),
      data: joinPath(dir, DATA_NAME),
      chunks,
      writer: joinPath(chunks, this.#writer),
      // Not joinPath: this ".." must reach the file system. POSIX only (see `#chunkFolder`).
      throughWriter: `${joinPath(chunks, this.#writer)}/..`,
    };
    if (this.#paths.size >= MAX_CACHED) this.#paths.clear();
    this.#paths.set(key, paths);
    return paths;
  }

  #uploadDir(key: string): string {
    return this.#pathsOf(key).dir;
  }

  #dataPath(key: string): string {
    return this.#pathsOf(key).data;
  }

  #fileDir(fileId: string): string {
    if (!isFileId(fileId)) throw new TypeError(`Invalid file id "${fileId}"`);
    return joinPath(this.directory, "files", fileId);
  }

  /** Creates the upload record if absent. */
  async createUpload(record: UploadRecord): Promise<UploadRecord> {
    const paths = this.#pathsOf(record.key);
    // Every chunk calls this. While this instance's writer folder is there, the upload is the one it
    // registered in (removing an upload removes the folder), whose record was read then and never
    // changes: one lookup instead of a read.
    const known = this.#known.get(record.key);
    if (known?.record && await this.#stillRegistered(record.key)) {
      return this.#remember(known.record);
    }
    const found = await readJson<UploadRecord>(paths.record).catch(unlessTorn);
    if (found) return this.#remember(found);
    // The first chunks of an upload often arrive together: one of them creates, the rest wait.
    return await this.#once(`upload:${record.key}`, () => this.#createRecord(paths, record));
  }

  async #createRecord(paths: UploadPaths, record: UploadRecord, again = false): Promise<UploadRecord> {
    await mkdirs(paths.chunks);
    if (await createJson(paths.record, record, this.#durable)) return this.#remember(record);
    const existing = await readJson<UploadRecord>(paths.record).catch(unlessTorn);
    if (existing === null && !again) {
      // The machine crashed as the record was written: which file the upload's chunks belong to is
      // lost with it. The upload is removed and begun again; its client sends the chunks anew.
      if (await this.removeUpload(record.key, { keepCompleted: true }) === "completed") {
        throw new Error(`Upload "${record.key}" completed; its record does not parse`);
      }
      return await this.#createRecord(paths, record, true);
    }
    if (!existing) {
      throw new Error(
        `Upload record "${record.key}" vanished while being created`,
      );
    }
    return this.#remember(existing);
  }

  /** Runs `work` unless a call with the same `name` is running in this process; then shares its result. */
  #once<T>(name: string, work: () => Promise<T>): Promise<T> {
    const running = this.#running.get(name) as Promise<T> | undefined;
    if (running) return running;
    const started = work().finally(() => this.#running.delete(name));
    this.#running.set(name, started);
    return started;
  }

  /** The upload record, or `undefined` (also when a crash of the machine left it torn: see createUpload). */
  async getUpload(key: string): Promise<UploadRecord | undefined> {
    const found = await readJson<UploadRecord>(this.#pathsOf(key).record).catch(unlessTorn);
    return found ? this.#remember(found) : undefined;
  }

  /**
   * Keeps the record last read, so writing the chunk that follows needs no second read. Records
   * never change once created; a removed upload is forgotten by `removeUpload`.
   */
  #remember(record: UploadRecord): UploadRecord {
    if (this.#records.size >= MAX_CACHED) this.#records.clear();
    this.#records.set(record.key, record);
    return record;
  }

  async #record(key: string): Promise<UploadRecord | undefined> {
    return this.#records.get(key) ?? await this.getUpload(key);
  }

  /**
   * Writes a chunk's bytes at its final offset in the upload's data file, then publishes a marker
   * for it (a hard link, see `#publishMarker`). Assembly is then a rename of the data file (see
   * `commitChunks`), instead of a second copy of every byte. A chunk that is already stored is read
   * to the end and kept as it was, so a torn re-send can never damage it. The upload record must
   * exist: it gives the offset.
   */
  async putChunk(
    key: string,
    index: number,
    data: ReadableStream<Uint8Array>,
    { signal, fileId }: PutChunkOptions = {},
  ): Promise<void> {
    if (!Number.isSafeInteger(index) || index < 1) {
      throw new RangeError(`Invalid chunk index ${index}`);
    }
    const record = await this.#record(key);
    if (!record) throw new Error(`Cannot store chunk ${index} of "${key}": the upload has no record`);
    const { chunks, data: dataPath } = this.#pathsOf(key);
    // Once the chunk folder is gone the upload has completed: fail rather than recreate its data.
    const seen = await this.#chunkFolder(key);
    const known = await this.#knownChunks(key, chunks, seen.folder, true);
    const stored = this.#alone(seen, known)
      ? known.chunks.has(index)
      : await this.chunkSize(key, index) !== undefined;
    if (stored) {
      await drain(data, signal);
      return;
    }
    // O_CREAT without O_TRUNC or O_APPEND: chunks written in parallel share the file, each at its
    // offset.
    const file = await openWriter(dataPath, "shared");
    let size: number;
    try {
      if (fileId !== undefined) await this.#checkRecord(key, index, fileId);
      size = await writeStreamToFile(file, data, signal, (index - 1) * record.chunkSize);
      if (this.#durable) await file.sync();
      // Checked while the file is open, so its inode cannot have been reused by a new data file.
      await this.#checkSameData(key, index, dataPath, file);
    } finally {
      await file.close().catch(() => {});
    }
    signal?.throwIfAborted();
    await this.#publishMarker(key, index, size, fileId ?? record.fileId);
    // Noted for the folder the chunk went to (its entry may have been listed again meanwhile), never
    // for a newer upload's folder found since.
    const current = this.#known.get(key);
    if (current?.identity === known.identity) current.chunks.add(index);
  }

  /**
   * Fails unless the upload's record is the one with `fileId`. Checked once the data file is open:
   * the upload may have been removed and begun again since the caller read its record, and the
   * file just opened (or created) would then be the new upload's, which this chunk's bytes must not
   * touch. A removal after this check leaves the open file the old one (see `#checkSameData`).
   */
  async #checkRecord(key: string, index: number, fileId: string): Promise<void> {
    if (!await this.#recordIs(key, fileId)) {
      throw new Error(`Upload "${key}" was removed and begun again before chunk ${index} was written`);
    }
  }

  /** Whether the upload's record, read now, is the one with `fileId` (not removed and begun again). */
  async #recordIs(key: string, fileId: string): Promise<boolean> {
    return (await readJson<UploadRecord>(this.#pathsOf(key).record).catch(unlessTorn))?.fileId === fileId;
  }

  /**
   * Fails unless `file` is still the upload's data file. The upload may have been removed (cancelled
   * or expired) while the chunk's body arrived, and started again by the same client: a marker in
   * the new chunk folder would then vouch for bytes written into the old, removed file.
   */
  async #checkSameData(key: string, index: number, dataPath: string, file: FileWriter): Promise<void> {
    const written = await file.inode();
    if (written === 0) return; // the platform tells no inode numbers
    let current: number | undefined;
    try {
      current = (await stat(dataPath)).ino;
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
    if (current !== written) {
      throw new Error(`Upload "${key}" was removed or completed while chunk ${index} was being written`);
    }
  }

  /**
   * Publishes chunk `index`'s marker as a hard link to a sparse file of the chunk's size, made once
   * per size. A link only adds a name, where creating a file allocates an inode: on ext4 while
   * chunk data is being written back, about 10 µs against 20 to 700 µs.
   *
   * The source is named after the record whose data file holds the chunk's bytes, and is only made
   * in that record's chunk folder. So the marker can only be linked there: if the upload was removed
   * and begun again since its bytes were checked, the path leads to the new upload's folder, which
   * has no such source, and the chunk fails instead of vouching for bytes the new file lacks.
   */
  async #publishMarker(key: string, index: number, size: number, fileId: string): Promise<void> {
    const { chunks } = this.#pathsOf(key);
    // A few sizes per upload (full chunks, a short or stretched last one); a new source file every
    // LINKS_PER_SOURCE chunks stays below per-file link limits (1024 on NTFS).
    const group = Math.floor(index / LINKS_PER_SOURCE);
    const source = joinPath(chunks, `.size-${size}-${group}-${fileId}`);
    const marker = joinPath(chunks, String(index));
    try {
      await link(source, marker);
      return;
    } catch (error) {
      // EEXIST: a concurrent copy of this chunk published first; its bytes and size are the same.
      if (errorCode(error) === "EEXIST") return;
      if (!isMissing(error)) throw error;
    }
    await this.#once(`source:${source}`, async () => {
      const temp = joinPath(chunks, `.${index}.${randomSuffix()}.tmp`);
      try {
        // The chunk folder is gone if the upload completed meanwhile: then this fails, as it should.
        await createSized(temp, size);
        // The temp file is in the folder that held this record just now (a removed upload's folder
        // never comes back), and linking it below finds it only if that folder is still in place.
        if (!await this.#recordIs(key, fileId)) {
          throw new Error(`Upload "${key}" was removed and begun again before chunk ${index} was published`);
        }
        // Linked into place, never renamed over an existing source: Linux refuses to link an inode
        // whose last name has just been replaced (ENOENT), which would fail a concurrent chunk.
        await link(temp, source).catch((error) => {
          if (errorCode(error) !== "EEXIST") throw error;
        });
      } finally {
        await unlink(temp).catch(() => {});
      }
    });
    try {
      await link(source, marker);
    } catch (error) {
      if (errorCode(error) !== "EEXIST") throw error;
    }
  }

  /** Size of a stored chunk, or `undefined`. */
  async chunkSize(key: string, index: number): Promise<number | undefined> {
    try {
      return (await stat(joinPath(this.#pathsOf(key).chunks, String(index))))
        .size;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  /**
   * Counts the stored chunks of an upload without listing its chunk folder each time: a listing per
   * chunk costs O(chunks), so O(chunks²) per upload (seconds of CPU for 10 000 chunks). This
   * process remembers the chunks it knows are stored (it stored them, or saw them once), and
   * checks the folder only for the next chunk it does not know, in order: each chunk is looked up
   * once, plus one lookup per call. Readiness is exact: the upload is complete only when every
   * chunk up to the last was found. The count can lag chunks other processes stored beyond the
   * first one missing here, until they are found in turn.
   */
  async countChunks(key: string): Promise<number> {
    const { chunks } = this.#pathsOf(key);
    let seen: ChunkFolder;
    try {
      seen = await this.#chunkFolder(key);
    } catch (error) {
      if (!isMissing(error)) throw error;
      this.#known.delete(key);
      return 0;
    }
    const known = await this.#knownChunks(key, chunks, seen.folder, false);
    if (this.#alone(seen, known)) return known.chunks.size;
    const record = await this.#record(key);
    const last = record ? chunkLayout(record.totalSize, record.chunkSize).ceilCount : 0;
    // A local cursor: concurrent calls share `known`, and each may only vouch for what it checked.
    let next = known.next;
    while (next <= last) {
      if (!known.chunks.has(next)) {
        if (await sizeOf(joinPath(chunks, String(next))) === undefined) break;
        known.chunks.add(next);
      }
      next++;
    }
    if (next > known.next) known.next = next;
    return known.chunks.size;
  }

  /**
   * What this instance knows of the chunk folder `chunks`, whose stat is `folder`: listed once per
   * folder (a removed and recreated upload has a new one), then kept up to date by this instance.
   * With `register`, this instance first makes its writer folder there, as it must before it
   * publishes a marker (see `#alone`).
   */
  async #knownChunks(key: string, chunks: string, folder: FileStat, register: boolean): Promise<KnownChunks> {
    const identity = identityOf(folder);
    let known = this.#known.get(key);
    if (known?.identity === identity && (known.registered || !register)) return known;
    if (register) {
      try {
        await makeDir(this.#pathsOf(key).writer);
        if (this.#linksCounted === undefined) {
          // One more link for one more subdirectory; another registration at the same moment makes
          // it two, and the next registration checks again.
          const added = (await stat(chunks)).nlink - folder.nlink;
          if (added === 1) this.#linksCounted = true;
          else if (added === 0) this.#linksCounted = false;
        }
      } catch (error) {
        if (errorCode(error) !== "EEXIST") throw error;
      }
    }
    // Listed after registering: markers published before are in the listing, and those published
    // after come from writers whose folders show in the link count.
    const listed = (await readdir(chunks)).filter((name) => CHUNK_NAME.test(name)).map(Number);
    const record = register
      ? await readJson<UploadRecord>(this.#pathsOf(key).record).catch(unlessTorn) ?? undefined
      : undefined;
    // Here the folder is new to this instance, or it registers in it for the first time. Then what it
    // saw before is dropped, not merged: without birth times (NFS v3, ext3) a removed upload's folder
    // and the next one's can share an inode number, and the listing just made holds every marker
    // that was there anyway.
    known = { identity, chunks: new Set(listed), next: 1, registered: register, record };
    if (this.#known.size >= MAX_CACHED) this.#known.clear();
    this.#known.set(key, known);
    return known;
  }

  /**
   * Whether this instance is the only one that has published in the chunk folder, so that `known`
   * holds exactly its markers and no completion has been recorded: then no marker or completion
   * record need be looked up, and a lookup that finds nothing costs about four times one that finds
   * something under Deno (an error is built), three times per chunk. Every instance makes its
   * writer folder before its first marker, and every completion makes `.sealed` first; a folder's
   * link count is 2 plus its subdirectories, so 3 with this instance's own folder present means
   * nobody else has. File systems whose directory link count ignores subdirectories (btrfs keeps it
   * at 1) show it at the first registration and are always looked up; one that counted files too
   * would read 3 only for a folder holding nothing but this instance's own folder.
   */
  #alone(seen: ChunkFolder, known: KnownChunks): boolean {
    return known.registered && seen.writerSeen && seen.folder.nlink === 3 && this.#linksCounted === true;
  }

  /**
   * Looks up the upload's chunk folder; rejects as `stat` does when it is gone. While this instance
   * is registered there, one lookup also tells whether its writer folder still is: the path
   * `<writer>/..` goes through the writer folder, which POSIX path resolution must find first (the
   * lookups of a chunk were seven, are four). Windows resolves ".." in the text of a path, so there
   * the writer folder is never seen this way, and `#alone` is false.
   */
  async #chunkFolder(key: string): Promise<ChunkFolder> {
    const paths = this.#pathsOf(key);
    if (this.#known.get(key)?.registered && !windowsPaths) {
      try {
        return { folder: await stat(paths.throughWriter), writerSeen: true };
      } catch (error) {
        if (!isMissing(error)) throw error;
        // Removed with the upload, or the chunk folder is gone: forget, and look up the folder itself.
        this.#known.delete(key);
      }
    }
    return { folder: await stat(paths.chunks), writerSeen: false };
  }

  /**
   * Whether this instance's writer folder is still in the upload's chunk folder; if not, forgets
   * what it knew of the upload. The folder's identity can survive a removal and re-creation (reused
   * inode, no birth time): the writer folder cannot. (`#chunkFolder` answers this too, with the
   * folder's stat.)
   */
  async #stillRegistered(key: string): Promise<boolean> {
    if (await sizeOf(this.#pathsOf(key).writer) !== undefined) return true;
    this.#known.delete(key);
    return false;
  }

  /** Makes `.sealed` in the chunk folder: every instance's `#alone` is false from then on. */
  async #seal(key: string): Promise<void> {
    try {
      await makeDir(joinPath(this.#pathsOf(key).chunks, ".sealed"));
    } catch (error) {
      // Gone: a completion was recorded and the chunks removed; the caller finds out.
      if (errorCode(error) !== "EEXIST" && !isMissing(error)) throw error;
    }
  }

  /** Streams a stored chunk from its range of the data file. */
  async openChunk(
    key: string,
    index: number,
  ): Promise<ReadableStream<Uint8Array>> {
    const { chunks } = this.#pathsOf(key);
    const { size } = await stat(joinPath(chunks, String(index)));
    const record = await this.#record(key);
    if (!record) throw new Error(`Upload "${key}" has no record`);
    const file = await openReader(this.#dataPath(key));
    return readableFromFile(file, { start: (index - 1) * record.chunkSize, length: size });
  }

  /** Takes the next claim generation if the newest one has expired; one creator wins per generation. */
  claim(key: string, lease: Lease): Promise<Claim | undefined> {
    return takeClaim(this.#uploadDir(key), key, lease);
  }

  /** Touches the claim file so others see it alive; `false` once a newer generation exists. */
  renewClaim(claim: Claim, _lease: Lease): Promise<boolean> {
    return touchClaim(this.#uploadDir(claim.key), claim);
  }

  /** Expires a claim at once by dating its renewal to the epoch; the generation number stays used. */
  async releaseClaim(claim: Claim): Promise<void> {
    await touchClaim(this.#uploadDir(claim.key), claim, true).catch(() => {});
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
    const fileDir = this.#fileDir(file.id);
    const tempDir = joinPath(this.directory, "files", ".tmp");
    await mkdirs(tempDir);
    const temp = joinPath(
      tempDir,
      `${file.id}.${claim.generation}.${randomSuffix()}`,
    );
    const writer = await openWriter(temp, "new");
    let size: number;
    try {
      size = await writeStreamToFile(writer, data);
      if (this.#durable) await writer.sync();
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw error;
    } finally {
      await writer.close().catch(() => {});
    }
    if (!await this.#mayPublish(claim, file)) {
      await unlink(temp).catch(() => {});
      return undefined;
    }
    const location = joinPath(fileDir, sanitizeFileName(file.name));
    const stored: StoredFile = { ...file, size, location };
    await this.#seal(claim.key);
    const meta = await this.#writeFileMeta(stored);
    await rename(temp, location);
    // A rare loser (a claimant that stalled past its lease) has renamed identical bytes over the
    // same name, so the published file is unchanged either way.
    if (!await this.#recordCompletion(this.#pathsOf(claim.key).complete, meta)) return undefined;
    // Temp files of earlier attempts that crashed mid-assembly are garbage now.
    await this.#removeTempFiles(file.id);
    return stored;
  }

  /**
   * Removes what crashed attempts left of one upload's file: partial assemblies
   * (`files/.tmp/<fileId>.*`) and metadata never renamed into place (`files/<fileId>/.file.json.*.tmp`).
   */
  async #removeTempFiles(fileId: string): Promise<void> {
    await removeMatching(joinPath(this.directory, "files", ".tmp"), (name) => name.startsWith(`${fileId}.`));
    await removeMatching(this.#fileDir(fileId), (name) => META_TEMP.test(name));
  }

  /** Latest mtime among `paths` (missing ones ignored), in ms since the epoch. */
  async #latestChange(paths: string[]): Promise<number> {
    let latest = 0;
    for (const path of paths) {
      try {
        latest = Math.max(latest, (await stat(path)).mtimeMs);
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    }
    return latest;
  }

  /**
   * Lists every upload with its last activity: the newest mtime of its directory and the files in it
   * (records, claim files renewed while assembling, the data file a chunk being received is written
   * into), and of its chunk folder (a chunk's marker linked in).
   */
  async *listUploads(): AsyncIterable<UploadActivity> {
    const root = joinPath(this.directory, "uploads");
    const keys = await namesIn(root);
    await this.#pruneRemovals();
    let listed = 0;
    for (const key of keys) {
      if (key.startsWith(TRASH_PREFIX)) {
        await this.#sweepTrash(joinPath(root, key));
        continue;
      }
      if (!isUploadKey(key)) continue;
      // The calls below are synchronous under Deno: let requests run between uploads of a long sweep.
      if (++listed % 32 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
      const activity = await this.#activity(key);
      if (activity) yield activity; // else removed meanwhile
    }
  }

  /** The last activity of one upload, or `undefined` when it is gone. */
  async lastActivity(key: string): Promise<number | undefined> {
    return isUploadKey(key) ? (await this.#activity(key))?.lastActivity : undefined;
  }

  async #activity(key: string): Promise<UploadActivity | undefined> {
    const dir = this.#uploadDir(key);
    const chunks = joinPath(dir, "chunks");
    let names: string[];
    let chunkNames: string[];
    try {
      names = await readdir(dir);
      chunkNames = await namesIn(chunks);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    const paths = [dir, chunks, ...names.map((name) => joinPath(dir, name))];
    for (const name of chunkNames) if (name.endsWith(".tmp")) paths.push(joinPath(chunks, name));
    return {
      key,
      lastActivity: await this.#latestChange(paths),
      completed: names.includes("complete.json"),
    };
  }

  /** Deletes a folder a removal left behind (it crashed), once the removal can no longer be running. */
  async #sweepTrash(path: string): Promise<void> {
    try {
      // The rename that made it set its ctime.
      if (Date.now() - (await stat(path)).ctimeMs < TRASH_GRACE_MS) return;
      await removeAll(path);
    } catch {
      // Removed meanwhile, or not removable now: the next sweep tries again.
    }
  }

  /**
   * Publishes the file from its chunks without copying them: they already sit at their final
   * offsets in the data file, so this checks its size and renames it, under the same claim rules
   * as {@linkcode FileSystemStorage.commit}.
   */
  async commitChunks(claim: Claim, chunkCount: number, file: StoredFile): Promise<StoredFile | undefined> {
    const location = joinPath(this.#fileDir(file.id), sanitizeFileName(file.name));
    let size = await sizeOf(this.#dataPath(claim.key));
    // A claimant that died between renaming the data file into place and recording completion left a
    // complete file at its final, deterministic location: finish its work instead of failing forever.
    let published = false;
    if (size === undefined) {
      if (await this.getCompleted(claim.key)) return undefined;
      size = await sizeOf(location);
      if (size === undefined) throw new Error(`Cannot assemble "${claim.key}": its data file is missing`);
      published = true;
    }
    if (size !== file.size) throw new Error(`Assembled ${size} bytes, expected ${file.size}`);
    // Each chunk's range is fully written before its marker appears, and the ranges of chunks
    // 1..chunkCount cover the file: with every marker present, every byte is in place.
    const names = new Set(await readdir(this.#pathsOf(claim.key).chunks));
    for (let index = 1; index <= chunkCount; index++) {
      if (!names.has(String(index))) {
        throw new Error(`Cannot assemble "${claim.key}": chunk ${index} is missing`);
      }
    }
    if (!await this.#mayPublish(claim, file)) return undefined;
    const stored: StoredFile = { ...file, size, location };
    await this.#seal(claim.key);
    const meta = await this.#writeFileMeta(stored);
    if (!published) {
      try {
        await rename(this.#dataPath(claim.key), location);
      } catch (error) {
        if (isMissing(error) && await this.getCompleted(claim.key)) return undefined;
        throw error;
      }
    }
    if (!await this.#recordCompletion(this.#pathsOf(claim.key).complete, meta)) return undefined;
    // A streamed assembly that crashed earlier (e.g. before an upgrade to this path) left a temp file.
    await this.#removeTempFiles(file.id);
    return stored;
  }

  /**
   * Whether `file` may be published under `claim`: the claim still the newest, the upload not
   * completed, and its record still the one `file` was made from. A request of a removed upload
   * that counted the chunks of the upload begun again since must not publish them as its file.
   */
  async #mayPublish(claim: Claim, file: StoredFile): Promise<boolean> {
    return await newestClaim(this.#uploadDir(claim.key)) === claim.generation &&
      !await this.getCompleted(claim.key) &&
      await this.#recordIs(claim.key, file.id);
  }

  /** Writes `files/<id>/.file.json`, replacing any a crashed attempt left; returns its path. */
  async #writeFileMeta(stored: StoredFile): Promise<string> {
    const fileDir = this.#fileDir(stored.id);
    await mkdirs(fileDir);
    const meta = joinPath(fileDir, ".file.json");
    await replaceJson(meta, stored, this.#durable);
    return meta;
  }

  /**
   * Creates `complete.json` as a hard link to the file's metadata, which holds the same JSON: one
   * inode for both, where every new inode costs up to a millisecond on a busy ext4 journal. The
   * link is the linearisation point: whoever creates it first has completed the upload.
   */
  async #recordCompletion(complete: string, meta: string): Promise<boolean> {
    for (let attempt = 1;; attempt++) {
      try {
        await link(meta, complete);
        return true;
      } catch (error) {
        if (errorCode(error) === "EEXIST") return false;
        // A stalled claimant renamed its identical metadata over ours just as we linked it (Linux
        // will not link an inode whose last name is gone): link the new one.
        if (!isMissing(error) || attempt === 3 || await sizeOf(meta) === undefined) throw error;
      }
    }
  }

  /** The completion record, or `undefined`. */
  async getCompleted(key: string): Promise<StoredFile | undefined> {
    const paths = this.#pathsOf(key);
    const known = this.#known.get(key);
    if (known?.registered) {
      const seen = await this.#chunkFolder(key).catch((error) =>
        isMissing(error) ? undefined : Promise.reject(error)
      );
      if (seen && identityOf(seen.folder) === known.identity && this.#alone(seen, known)) {
        return undefined;
      }
    }
    return this.#located(await readJson<StoredFile>(paths.complete));
  }

  /**
   * `file` with its location under this storage's root as it is now: the metadata keeps the path of
   * when the file was written, which a root moved, mounted elsewhere, or given relative to another
   * working directory no longer reaches.
   */
  #located(file: StoredFile | undefined): StoredFile | undefined {
    if (!file?.location || !isFileId(file.id)) return file;
    const name = file.location.slice(
      Math.max(file.location.lastIndexOf("/"), file.location.lastIndexOf("\\")) + 1,
    );
    return { ...file, location: joinPath(this.#fileDir(file.id), name) };
  }

  /** Opens a completed file by id. */
  async openFile(fileId: string): Promise<OpenedFile | undefined> {
    if (!isFileId(fileId)) return undefined;
    const file = this.#located(await readJson<StoredFile>(joinPath(this.#fileDir(fileId), ".file.json")));
    if (!file?.location) return undefined;
    try {
      return { file, body: readableFromFile(await openReader(file.location)) };
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  /**
   * Deletes the chunks of a completed upload, keeping the records. The chunks of an upload not
   * completed stay: by the time this runs, its folder may be a new upload's (see below).
   */
  async removeChunks(key: string): Promise<void> {
    this.#known.delete(key);
    const { dir, chunks, complete, data } = this.#pathsOf(key);
    // The folder goes first, in one rename: a late chunk then fails instead of recreating the data
    // file. Its many markers are then removed by one call that Deno runs on another thread.
    const removed = joinPath(dir, `.removed-${randomSuffix()}`);
    let moved = true;
    try {
      await rename(chunks, removed);
    } catch (error) {
      if (!isMissing(error)) throw error;
      moved = false;
    }
    // Only a completed upload's chunks go. Were it cancelled in the instant after it completed and a
    // new upload of that name and size begun, the folder renamed was the new upload's: put it back.
    if (await sizeOf(complete) === undefined) {
      if (moved) await rename(removed, chunks).catch(() => {});
      return;
    }
    if (moved) await removeAll(removed);
    await removeAll(data);
  }

  /**
   * Deletes the upload directory, and what assemblies left of its file. The directory is first moved
   * aside in one rename: chunks still arriving then fail instead of refilling a half-removed folder,
   * and a crash mid-removal leaves only a folder no upload reads (`listUploads` sweeps it). From
   * that rename on no completion can be recorded, so a file assembled without one is an orphan.
   */
  async removeUpload(key: string, options: RemoveUploadOptions = {}): Promise<void | "completed"> {
    this.#known.delete(key);
    this.#records.delete(key);
    await this.#noteRemoval(key);
    const found = await this.#waitOutAssembly(key);
    if (found === "gone") return;
    if (found === "completed" && options.keepCompleted) return "completed";
    const trash = joinPath(this.directory, "uploads", `${TRASH_PREFIX}${key}.${randomSuffix()}`);
    try {
      await rename(this.#uploadDir(key), trash);
    } catch (error) {
      if (isMissing(error)) return;
      throw error;
    }
    const record = await readJson<UploadRecord>(joinPath(trash, "upload.json")).catch(() => undefined);
    const completed = await sizeOf(joinPath(trash, "complete.json")) !== undefined;
    // Best effort: the upload is gone already, and a folder left here is swept later.
    await removeAll(trash).catch(() => {});
    if (record && isFileId(record.fileId)) {
      if (!completed) await removeAll(this.#fileDir(record.fileId));
      await this.#removeTempFiles(record.fileId);
    }
  }

  /**
   * Waits until no assembly of the upload is under way, and keeps any from starting: false when the
   * upload's folder is gone. An assembly moves the data file into place and links the completion
   * record by path; were the folder moved aside and a new upload of that name and size begun
   * meanwhile, it would publish the new upload's bytes as the old file and complete the new upload
   * with it. So the removal takes the next claim generation itself, once the newest claim is
   * released or has expired (a live assembler renews its own); once the completion is recorded there
   * is nothing left to wait for (`removeChunks` checks for itself). Tells which it found.
   */
  async #waitOutAssembly(key: string): Promise<"gone" | "completed" | "claimed"> {
    const { dir, complete } = this.#pathsOf(key);
    const lease: Lease = { owner: `removal${this.#writer}`, ttlMs: REMOVAL_CLAIM_MS };
    for (;;) {
      try {
        if (await sizeOf(complete) !== undefined) return "completed";
        if (await takeClaim(dir, key, lease)) return "claimed";
      } catch (error) {
        if (isMissing(error)) return "gone";
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, CLAIM_POLL_MS));
    }
  }

  /** Notes that `key` is being removed, before anything is: see `removedAt`. */
  async #noteRemoval(key: string): Promise<void> {
    this.#pathsOf(key); // checks the key
    const dir = this.#removalsDir();
    await mkdirs(dir);
    // A number as JSON: `removedAt` reads it back, never half written.
    await replaceJson(joinPath(dir, key), preciseNow());
    // A note per removal: those past their use go, at most once a minute per instance (and in sweeps).
    if (Date.now() - this.#removalsPruned >= PRUNE_EVERY_MS) await this.#pruneRemovals();
  }

  #removalsDir(): string {
    return joinPath(this.directory, "uploads", REMOVALS_DIR);
  }

  /** Deletes the notes of removals older than `removedAt` tells. */
  async #pruneRemovals(): Promise<void> {
    const now = Date.now();
    this.#removalsPruned = now;
    const dir = this.#removalsDir();
    for (const name of await namesIn(dir)) {
      const path = joinPath(dir, name);
      const old = await stat(path).then((found) => forgotten(found.mtimeMs, now), () => false);
      if (old) await unlink(path).catch(() => {});
    }
  }

  /** When the upload was last removed, within the last ten minutes. */
  async removedAt(key: string): Promise<number | undefined> {
    this.#pathsOf(key); // checks the key
    let at: number;
    try {
      at = Number(await readText(joinPath(this.#removalsDir(), key)));
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    return recentRemoval(at);
  }

  /** Deletes a completed file and its metadata. */
  async removeFile(fileId: string): Promise<void> {
    if (!isFileId(fileId)) return;
    await removeAll(this.#fileDir(fileId));
  }
}

/** A `readJson` failure as `null` when the file is torn (see {@linkcode TornJsonError}), else rethrown. */
function unlessTorn(error: unknown): null {
  if (error instanceof TornJsonError) return null;
  throw error;
}

/** Names in `dir`, or none when it is gone. */
async function namesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (error) {
    if (isMissing(error)) return [];
    throw error;
  }
}

/** Removes the files in `dir` whose names pass `test`; nothing if `dir` is gone. */
async function removeMatching(dir: string, test: (name: string) => boolean): Promise<void> {
  for (const name of await namesIn(dir)) {
    if (test(name)) await unlink(joinPath(dir, name)).catch(() => {});
  }
}

/** Reads a stream to its end, discarding it; rejects if it fails or `signal` aborts. */
async function drain(data: ReadableStream<Uint8Array>, signal?: AbortSignal): Promise<void> {
  const reader = data.getReader();
  try {
    while (true) {
      signal?.throwIfAborted();
      if ((await reader.read()).done) return;
    }
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    throw error;
  } finally {
    reader.releaseLock();
  }
}

// Small JSON files of the file-system storage (records, metadata), written so that a reader sees a
// whole file or none, and the error helpers the storage's modules share.
import { link, readText, rename, stat, syncFile, unlink, writeText } from "./_fs_ops.ts";

/** The `code` of a file-system error (ENOENT, EEXIST, ...). */
export function errorCode(error: unknown): string | undefined {
  return (error as { code?: string } | null)?.code;
}

/** Whether an error means the path (or a folder on it) does not exist. */
export function isMissing(error: unknown): boolean {
  const code = errorCode(error);
  return code === "ENOENT" || code === "ENOTDIR";
}

/** A short random name part for temp files. */
export function randomSuffix(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 12);
}

/** Size of the file at `path`, or `undefined` when there is none. */
export async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

/**
 * A JSON file that does not parse. The storage writes each whole before publishing its name, so
 * only a crash of the machine leaves one (without `durable`, a name can reach the disk first).
 */
export class TornJsonError extends Error {
  constructor(path: string, options: ErrorOptions) {
    super(`${path} does not hold whole JSON; a crash of the machine can leave that`, options);
    this.name = "TornJsonError";
  }
}

/**
 * The JSON in `path`, or `undefined` when there is no such file.
 *
 * @throws {TornJsonError} when the file does not parse.
 */
export async function readJson<T>(path: string): Promise<T | undefined> {
  let text;
  try {
    text = await readText(path);
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new TornJsonError(path, { cause: error });
  }
}

/**
 * Writes JSON under `path` only if nothing is there; returns whether this call created it. With
 * `durable`, its content reaches the disk before its name: after a power loss the file is whole or
 * absent, never the empty file a name published first can leave.
 */
export async function createJson(path: string, value: unknown, durable = false): Promise<boolean> {
  const temp = `${path}.${randomSuffix()}.tmp`;
  await writeText(temp, JSON.stringify(value), true);
  try {
    if (durable) await syncFile(temp);
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

/**
 * Replaces `path` with JSON so that readers see the old or the new content, never a torn one; with
 * `durable`, after a power loss too (see {@linkcode createJson}).
 */
export async function replaceJson(path: string, value: unknown, durable = false): Promise<void> {
  const temp = `${path}.${randomSuffix()}.tmp`;
  await writeText(temp, JSON.stringify(value));
  try {
    if (durable) await syncFile(temp);
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
}

/**
 * The only place client-supplied text is made safe. Identifiers become opaque hex keys (so they
 * can never be paths), and file names are sanitised for storages that keep a readable name.
 *
 * @module
 */

import { sha256 } from "./_sha256.ts";

const encoder = new TextEncoder();

/** Storage keys are lowercase hex of this many characters (128 bits of SHA-256). */
export const KEY_LENGTH = 32;

const KEY_PATTERN = /^[0-9a-f]{32}$/;
const ID_PATTERN = /^[0-9a-f]{24}$/;

// Two hex digits per byte value: a file id is made per upload request.
const HEX_PAIRS = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

function toHex(bytes: Uint8Array): string {
  let hex = "";
  for (const byte of bytes) hex += HEX_PAIRS[byte];
  return hex;
}

/**
 * Derives the storage key of an upload from its scope and client identifier. Different scopes
 * never share a key (the scope is length-prefixed, so no choice of characters makes two pairs
 * encode alike), and no client text survives into the key.
 */
export function uploadKey(
  scope: string,
  identifier: string,
): string {
  const input = `${scope.length}:${scope}\u0000${identifier}`;
  const known = recentKeys.get(input);
  if (known !== undefined) return known;
  // Synchronous, see _sha256.ts: a chunk must not wait for another thread before its body is read.
  const key = toHex(sha256(encoder.encode(input))).slice(0, KEY_LENGTH);
  // Every chunk of an upload needs the same key: hashing it once is enough.
  if (recentKeys.size >= MAX_RECENT_KEYS) recentKeys.clear();
  recentKeys.set(input, key);
  return key;
}

const MAX_RECENT_KEYS = 4096;
const recentKeys = new Map<string, string>();

/** True for keys made by {@linkcode uploadKey}; storages check it as a second line of defence. */
export function isUploadKey(key: string): boolean {
  return KEY_PATTERN.test(key);
}

/** A new random id for a stored file: 24 hex characters. */
export function newFileId(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(12)));
}

/** True for ids made by {@linkcode newFileId}. */
export function isFileId(id: string): boolean {
  return ID_PATTERN.test(id);
}

// Windows device names are unsafe as file names on any share a user may copy files to.
const RESERVED_NAMES = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;
// Control characters, path separators, characters Windows forbids, and bidi overrides that make a
// name display differently from what it is.
// deno-lint-ignore no-control-regex
const UNSAFE_CHARACTERS = /[\u0000-\u001f\u007f<>:"/\\|?*\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const MAX_NAME_BYTES = 200;

/**
 * Turns a client file name into one safe as a single path segment on any common file system: the
 * last segment of any path, no separators or control characters, not `.`/`..`, not a Windows device
 * name, at most 200 UTF-8 bytes (keeping the extension). Never empty.
 */
export function sanitizeFileName(name: string): string {
  const lastSegment = name.split(/[/\\]/).pop() ?? "";
  let safe = lastSegment.normalize("NFC").replace(UNSAFE_CHARACTERS, "_")
    .replace(/^[\s.]+|[\s.]+$/g, "");
  if (safe === "") safe = "file";
  if (RESERVED_NAMES.test(safe)) safe = `_${safe}`;
  return truncateUtf8(safe, MAX_NAME_BYTES);
}

function truncateUtf8(name: string, maxBytes: number): string {
  if (encoder.encode(name).length <= maxBytes) return name;
  const dot = name.lastIndexOf(".");
  const extension = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : "";
  let stem = name.slice(0, name.length - extension.length);
  const budget = maxBytes - encoder.encode(extension).length;
  // Drop whole code points so a multi-byte character is never cut in half.
  const points = [...stem];
  while (points.length > 0 && encoder.encode(points.join("")).length > budget) {
    points.pop();
  }
  stem = points.join("");
  return (stem || "file") + extension;
}

/**
 * Optional per-chunk integrity: the client sends the SHA-256 of the chunk and the handler refuses the
 * chunk, storing nothing, when the bytes differ. Off unless the `checksum` option is set, because
 * `crypto.subtle.digest` is not incremental: a checked chunk is held in memory until verified.
 *
 * Where the digest comes from, first found wins:
 * 1. the parameter `checksum` (configurable; query string or form field, hex or base64), which a
 *    resumable.js `preprocess` or flow.js `query` function can add;
 * 2. in octet mode only, `Content-Digest: sha-256=:<base64>:` (RFC 9530) or `Digest: SHA-256=<base64>`
 *    (RFC 3230). In multipart mode those headers would describe the whole form, not the chunk.
 *
 * @module
 */

import { concatBytes } from "./_bytes.ts";
import { ResumableError } from "./errors.ts";
import type { ParamSource } from "./params.ts";

/** Options of the handler's `checksum` option. */
export interface ChecksumOptions {
  /**
   * Name of the parameter carrying the hex or base64 SHA-256 of the chunk (after any
   * `parameterNamespace`).
   * @default {"checksum"}
   */
  parameter?: string;
  /**
   * Refuse chunks that come without a digest (permanently, as invalid parameters).
   * @default {false}
   */
  required?: boolean;
}

/** The resolved `checksum` option. */
export interface ChecksumPolicy {
  parameter: string;
  required: boolean;
}

/**
 * Resolves the `checksum` option: `true` for the defaults, an object, or `false`/absent for off.
 *
 * @throws {TypeError} for a malformed option.
 */
export function resolveChecksum(option: boolean | ChecksumOptions | undefined): ChecksumPolicy | undefined {
  if (option === undefined || option === false) return undefined;
  if (option === true) return { parameter: "checksum", required: false };
  if (option === null || typeof option !== "object") {
    throw new TypeError("Option checksum must be a boolean or an object");
  }
  const parameter = option.parameter ?? "checksum";
  if (typeof parameter !== "string" || parameter === "") {
    throw new TypeError("Option checksum.parameter must be a non-empty string");
  }
  const required = option.required ?? false;
  if (typeof required !== "boolean") throw new TypeError("Option checksum.required must be a boolean");
  return { parameter, required };
}

const HEX = /^[0-9a-fA-F]{64}$/;

function fromBase64(text: string): Uint8Array | undefined {
  try {
    const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

function parseDigest(text: string): Uint8Array | undefined {
  const value = text.trim().replace(/^sha-?256[:=]/i, "");
  if (HEX.test(value)) return Uint8Array.from(value.match(/../g)!, (pair) => parseInt(pair, 16));
  const bytes = fromBase64(value);
  return bytes?.byteLength === 32 ? bytes : undefined;
}

/** The sha-256 member of a `Content-Digest` (`sha-256=:b64:`) or `Digest` (`SHA-256=b64`) header. */
function fromHeaders(headers: Headers): string | undefined {
  const content = headers.get("content-digest");
  if (content !== null) {
    const match = /(?:^|,)\s*sha-256\s*=\s*:([^:]*):/i.exec(content);
    if (match) return match[1];
  }
  const legacy = headers.get("digest");
  if (legacy !== null) {
    const match = /(?:^|,)\s*sha-256\s*=\s*([^,\s]+)/i.exec(legacy);
    if (match) return match[1];
  }
  return undefined;
}

/**
 * The SHA-256 the client sent for this chunk, or `undefined` when checksums are off or none was sent.
 *
 * @throws {ResumableError} `invalid_parameters` for an unreadable digest, or a missing one when required.
 */
export function expectedDigest(
  policy: ChecksumPolicy | undefined,
  request: Request,
  source: ParamSource,
  options: { namespace: string; multipart: boolean },
): Uint8Array | undefined {
  if (!policy) return undefined;
  const name = options.namespace + policy.parameter;
  const text = source.get(name) ?? (options.multipart ? undefined : fromHeaders(request.headers));
  if (text === undefined || text === "") {
    if (policy.required) {
      throw new ResumableError(
        "invalid_parameters",
        `Missing chunk digest: parameter ${name} or Content-Digest`,
      );
    }
    return undefined;
  }
  const digest = parseDigest(text);
  if (!digest) {
    throw new ResumableError(
      "invalid_parameters",
      `Chunk digest must be a SHA-256 in hex or base64, got "${text.slice(0, 80)}"`,
    );
  }
  return digest;
}

/**
 * A stream of `data`'s bytes, given only once all of them are read and their SHA-256 matches
 * `expected`. Nothing is read until the stream is, so the storage starts storing the chunk (and
 * notes which upload it belongs to) before the body arrives, as it does for an unchecked chunk.
 * `data` must already be bounded (the handler's exact-size stream is).
 *
 * The stream errors with a {@linkcode ResumableError} `checksum_mismatch` when the bytes differ,
 * before it has given any: storages store nothing of a chunk whose stream errors.
 */
export function verifiedStream(
  data: ReadableStream<Uint8Array>,
  expected: Uint8Array,
  label: string,
): ReadableStream<Uint8Array> {
  // Kept so that a cancel while the body is being read reaches it: the stream is locked by then.
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      reader = data.getReader();
      const parts: Uint8Array[] = [];
      for (let read = await reader.read(); !read.done; read = await reader.read()) parts.push(read.value);
      const bytes = concatBytes(parts);
      const actual = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
      if (!equal(actual, expected)) {
        throw new ResumableError("checksum_mismatch", `SHA-256 of ${label} does not match the digest sent`);
      }
      controller.enqueue(bytes);
      controller.close();
    },
    cancel(reason) {
      return reader ? reader.cancel(reason) : data.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let difference = 0;
  for (let i = 0; i < a.byteLength; i++) difference |= a[i]! ^ b[i]!;
  return difference === 0;
}

/**
 * The only place error codes become HTTP statuses, and the JSON bodies of every response.
 *
 * Why these statuses (docs/protocol.md §4): resumable.js 1.1.0 gives up on 400/404/415/500/501 and
 * retries everything else up to 100 times at once; flow.js gives up on 404/413/415/500/501 and, with
 * its default `maxChunkRetries: 0`, on anything that is not 200/201/202. So a refusal is 400 for
 * resumable.js (413 would be retried 100 times) and 413/415 for flow.js (400 is retried once the app
 * turns retries on). Storage trouble is 503: resumable.js retries it, and so does flow.js when the
 * app enabled retries.
 *
 * Deliberate exceptions, documented in docs/security.md: 401/403 from `authorize` say what they mean
 * (permanent only in resumable.js from GitHub master; flow.js stops on them by default); a checksum
 * mismatch (422), too many uploads (429) and a full storage (507) ask for a retry, since the same
 * request can succeed later.
 *
 * @module
 */

import { type ErrorCode, ResumableError } from "./errors.ts";
import type { Dialect } from "./params.ts";
import type { StoredFile } from "./storage/types.ts";

/** Refusals of the client's input: the only codes whose status depends on the client. */
type Refusal =
  | "invalid_parameters"
  | "invalid_identifier"
  | "chunk_out_of_range"
  | "chunk_size_mismatch"
  | "upload_mismatch"
  | "file_too_large"
  | "too_many_chunks"
  | "chunk_too_large"
  | "body_too_large"
  | "malformed_body";

// Final in resumable.js; 413 would be retried 100 times.
const RESUMABLE_REFUSALS: Record<Refusal, number> = {
  invalid_parameters: 400,
  invalid_identifier: 400,
  chunk_out_of_range: 400,
  chunk_size_mismatch: 400,
  upload_mismatch: 400,
  file_too_large: 400,
  too_many_chunks: 400,
  chunk_too_large: 400,
  body_too_large: 400,
  malformed_body: 400,
};

// Final in flow.js; 400 is retried once the app turns retries on.
const FLOW_REFUSALS: Record<Refusal, number> = {
  invalid_parameters: 415,
  invalid_identifier: 415,
  chunk_out_of_range: 415,
  chunk_size_mismatch: 415,
  upload_mismatch: 415,
  file_too_large: 413,
  too_many_chunks: 413,
  chunk_too_large: 413,
  body_too_large: 413,
  malformed_body: 415,
};

/** Statuses that mean the same to both clients. */
const SHARED_STATUS: Record<Exclude<ErrorCode, Refusal>, number> = {
  // The client has gone, or a proxy cut the body: worth a retry, never a stored chunk.
  body_incomplete: 408,
  unsupported_media_type: 415,
  method_not_allowed: 405,
  unauthorized: 401,
  forbidden: 403,
  origin_not_allowed: 403,
  // Corruption in transit: the same chunk sent again may well match.
  checksum_mismatch: 422,
  too_many_uploads: 429,
  storage_full: 507,
  storage_unavailable: 503,
  // Retryable, as a clock that differs between processes can take a new chunk for one sent before
  // the cancel; a client that did cancel has stopped listening anyway.
  upload_removed: 503,
  internal_error: 500,
};

const RESUMABLE_STATUS: Record<ErrorCode, number> = { ...SHARED_STATUS, ...RESUMABLE_REFUSALS };
const FLOW_STATUS: Record<ErrorCode, number> = { ...SHARED_STATUS, ...FLOW_REFUSALS };

/** Default HTTP status of an error code for a client dialect. */
export function defaultStatus(code: ErrorCode, dialect: Dialect): number {
  return (dialect === "flow" ? FLOW_STATUS : RESUMABLE_STATUS)[code];
}

/** Headers on every response: chunk tests must never be answered from a cache (docs/protocol.md §10). */
function baseHeaders(extra?: HeadersInit): Headers {
  const headers = new Headers(extra);
  headers.set("cache-control", "no-store");
  return headers;
}

/** A JSON response. */
export function jsonResponse(
  status: number,
  body: unknown,
  extra?: HeadersInit,
): Response {
  const headers = baseHeaders(extra);
  headers.set("content-type", "application/json; charset=utf-8");
  return new Response(JSON.stringify(body), { status, headers });
}

/** A response without a body (204 may not have one). */
export function emptyResponse(status: number, extra?: HeadersInit): Response {
  return new Response(null, { status, headers: baseHeaders(extra) });
}

/** Whether `status` is one a `Response` can carry: an integer in 200..599. */
export function isResponseStatus(status: unknown): status is number {
  return Number.isInteger(status) && (status as number) >= 200 && (status as number) <= 599;
}

/** Statuses whose response may not have a body. */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

/**
 * The error body: `{ "error": { "code", "message" } }`; none for a status that may not have one
 * (`statusFor` may choose 204, 205 or 304).
 */
export function errorResponse(
  error: ResumableError,
  status: number,
  extra?: HeadersInit,
): Response {
  if (NULL_BODY_STATUSES.has(status)) return emptyResponse(status, extra);
  return jsonResponse(status, {
    error: { code: error.code, message: error.message },
  }, extra);
}

/** Where an upload stands; the body of every successful test and upload response. */
export interface UploadStatus {
  /** The client's identifier. */
  identifier: string;
  /** The client's file name. */
  fileName: string;
  /** File size in bytes. */
  totalSize: number;
  /** Chunks stored so far. */
  chunksReceived: number;
  /** Chunks the upload has (as far as the server can tell yet). */
  totalChunks: number;
  /** `uploading`, `assembling` (all chunks are here, another request is assembling), or `complete`. */
  status: "uploading" | "assembling" | "complete";
  /** `true` once the file is assembled and stored. */
  complete: boolean;
  /** The stored file, once complete. */
  file?: { id: string; name: string; size: number; type: string; url?: string };
}

/** The status of a completed upload. */
export function completedStatus(
  file: StoredFile,
  totalChunks: number,
  url: string | undefined,
): UploadStatus {
  return {
    identifier: file.identifier,
    fileName: file.name,
    totalSize: file.size,
    chunksReceived: totalChunks,
    totalChunks,
    status: "complete",
    complete: true,
    file: {
      id: file.id,
      name: file.name,
      size: file.size,
      type: file.type,
      ...(url ? { url } : {}),
    },
  };
}

/** Maps anything thrown while handling a request to a `ResumableError`; anything else is a bug. */
export function asResumableError(error: unknown): ResumableError {
  if (error instanceof ResumableError) return error;
  return new ResumableError(
    "internal_error",
    "Internal error while handling the upload",
    { cause: error },
  );
}

/** Runs a storage operation, turning its failures into retryable `storage_unavailable` errors. */
export async function viaStorage<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof ResumableError) throw error;
    throw new ResumableError(
      "storage_unavailable",
      "Storage failed, please retry",
      { cause: error },
    );
  }
}

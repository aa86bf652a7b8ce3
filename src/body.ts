/**
 * Gets a chunk's bytes out of a request: the raw body in octet mode, or the file part of a
 * multipart body. Limits apply before anything is buffered: first `Content-Length`, then a count of
 * the streamed bytes.
 *
 * @module
 */

import { ResumableError } from "./errors.ts";
import { byteLimit, limitStream } from "./_limit_stream.ts";
import type { RequestBody } from "./_request_body.ts";
import { boundaryOf, type MultipartHead, type MultipartOptions, readMultipartStream } from "./_multipart.ts";

/** True when the request body is `multipart/form-data`. */
export function isMultipart(request: Request): boolean {
  return (request.headers.get("content-type") ?? "").toLowerCase().startsWith(
    "multipart/form-data",
  );
}

/** The declared body length, or `undefined` when absent (chunked) or malformed. */
export function contentLength(request: Request): number | undefined {
  const header = request.headers.get("content-length");
  if (header === null || !/^[0-9]+$/.test(header.trim())) return undefined;
  return Number(header.trim());
}

/** Rejects a body whose declared length is above `limit`, before reading any of it. */
export function checkDeclaredLength(request: Request, limit: number): void {
  const length = contentLength(request);
  if (length !== undefined && length > limit) {
    throw new ResumableError(
      "body_too_large",
      `Request body is ${length} bytes, the limit is ${limit}`,
    );
  }
}

/**
 * Parses `request`'s multipart body with the platform parser, reading at most `limit` bytes.
 *
 * @throws {ResumableError} `body_too_large`, `body_incomplete` or `malformed_body`.
 */
export async function readMultipart(
  request: Request,
  body: RequestBody,
  limit: number,
): Promise<FormData> {
  checkDeclaredLength(request, limit);
  const stream = body.stream();
  if (!stream) throw noBody();
  const failure: { error?: ResumableError } = {};
  const limited = limitStream(stream, limit, failure);
  try {
    const contentType = request.headers.get("content-type") ?? "";
    return await new Response(limited, {
      headers: { "content-type": contentType },
    }).formData();
  } catch (cause) {
    // A client that went away errors the body, which the limiter records as body_incomplete.
    if (failure.error) throw failure.error;
    throw new ResumableError(
      "malformed_body",
      "Multipart body cannot be parsed",
      { cause },
    );
  }
}

/** What either multipart reader throws for a multipart request without a body. */
function noBody(): ResumableError {
  return new ResumableError("malformed_body", "Multipart request has no body");
}

/** A multipart body read up to its file part, and where a later failure of the body is recorded. */
export interface StreamedMultipart extends MultipartHead {
  /** Set once the body fails (too large, broken off, malformed); the file stream errors with it. */
  failure: { error?: ResumableError };
}

/**
 * Reads `request`'s multipart body with the streaming reader, at most `limit` bytes: the fields
 * before the file part `parts.fileField`, within the text budgets of `parts`, and that part as a
 * stream read straight from the request.
 *
 * @throws {ResumableError} `body_too_large`, `body_incomplete` or `malformed_body`.
 */
export async function readMultipartStreamed(
  request: Request,
  body: RequestBody,
  limit: number,
  parts: Omit<MultipartOptions, "failure">,
): Promise<StreamedMultipart> {
  checkDeclaredLength(request, limit);
  const boundary = boundaryOf(request.headers.get("content-type") ?? "");
  const failure: { error?: ResumableError } = {};
  // Read directly, the limit checked on every read: no stream of its own (see _request_body.ts).
  const reader = body.reader(byteLimit(limit, failure));
  if (!reader) throw noBody();
  try {
    const head = await readMultipartStream(reader, boundary, { ...parts, failure });
    return { ...head, failure };
  } catch (error) {
    throw failure.error ?? error;
  }
}

/** The bytes of a chunk taken from a form, with their length. */
export interface FormChunk {
  stream: ReadableStream<Uint8Array>;
  size: number;
  /** The file part's `Content-Type`, when it is a file part. */
  type?: string;
}

/**
 * Takes the chunk out of the form field `name`: a file part, or the `data:` URL string resumable.js
 * sends with `chunkFormat: "base64"`. `undefined` when the field is absent (a test request).
 */
export function chunkFromForm(
  form: FormData,
  name: string,
): FormChunk | undefined {
  const values = form.getAll(name);
  if (values.length === 0) return undefined;
  if (values.length > 1) {
    throw new ResumableError(
      "malformed_body",
      `Field "${name}" appears ${values.length} times`,
    );
  }
  const value = values[0]!;
  if (typeof value !== "string") {
    return { stream: value.stream(), size: value.size, type: value.type };
  }
  return chunkFromDataUrl(value, name);
}

/** The chunk in a `data:` URL field (resumable.js `chunkFormat: "base64"`). */
export function chunkFromDataUrl(value: string, name: string): FormChunk {
  const bytes = decodeDataUrl(value, name);
  return { stream: new Blob([bytes]).stream(), size: bytes.byteLength };
}

function decodeDataUrl(value: string, name: string): Uint8Array<ArrayBuffer> {
  const comma = value.indexOf(",");
  if (
    !value.startsWith("data:") || comma < 0 ||
    !value.slice(0, comma).endsWith(";base64")
  ) {
    throw new ResumableError(
      "malformed_body",
      `Field "${name}" must be a file or a base64 data: URL`,
    );
  }
  try {
    const binary = atob(value.slice(comma + 1));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch (cause) {
    throw new ResumableError(
      "malformed_body",
      `Field "${name}" is not valid base64`,
      { cause },
    );
  }
}

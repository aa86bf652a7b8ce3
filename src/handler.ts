/**
 * `createResumableHandler`: routes a `Request` to a chunk test or upload, and maps every error to a
 * response in one place.
 *
 * @module
 */

import { preciseNow } from "./_clock.ts";
import {
  checkDeclaredLength,
  chunkFromDataUrl,
  chunkFromForm,
  contentLength,
  isMultipart,
  readMultipart,
  readMultipartStreamed,
} from "./body.ts";
import { expectedDigest } from "./checksum.ts";
import { ChunkService } from "./chunk_service.ts";
import { cleanupExpired, type CleanupReport } from "./cleanup.ts";
import { createCors } from "./cors.ts";
import { ResumableError } from "./errors.ts";
import { RequestBody } from "./_request_body.ts";
import { largestLegalChunk } from "./layout.ts";
import { type ResolvedOptions, resolveOptions, type ResumableHandlerOptions } from "./options.ts";
import {
  type Dialect,
  hasAnyParam,
  type ParamSource,
  paramSource,
  type RawParams,
  readParams,
  recordSource,
} from "./params.ts";
import {
  asResumableError,
  defaultStatus,
  emptyResponse,
  errorResponse,
  isResponseStatus,
  jsonResponse,
} from "./response.ts";
import type { UploadStorage } from "./storage/types.ts";
import { maxChunkBytes, validateChunkRequest } from "./validate.ts";

interface RequestContext {
  dialect: Dialect;
  /** When the handler got the request: a cancel after it is one the request was sent before. */
  arrived: number;
}

/** The handler: a function from `Request` to `Response`, plus the expiry sweep. */
export interface ResumableHandler {
  (request: Request): Promise<Response>;
  /**
   * Removes uploads in progress untouched for `expireAfter` and completion records older than
   * `completedExpireAfter`; never one a request of this process is working on. Run it periodically,
   * e.g. `setInterval(() => handler.cleanup().catch(console.error), 3600_000)`.
   *
   * @param options `now`: the time to judge ages against (ms since the epoch), for tests.
   * @throws {TypeError} when the storage has no `listUploads()`.
   * @throws {AggregateError} when some uploads could not be removed; the sweep removed the others.
   */
  cleanup(options?: { now?: number }): Promise<CleanupReport>;
}

/**
 * Creates the server side of resumable.js and flow.js uploads as a fetch-style handler.
 *
 * It answers chunk tests (200 when the chunk is stored, 204 when not), stores uploaded chunks
 * (multipart or raw octet bodies; `resumable*` and `flow*` parameters), and assembles each upload
 * exactly once when its last chunk arrives, streaming, even with concurrent final chunks and
 * several processes on one storage. Every success carries a JSON {@linkcode UploadStatus}.
 *
 * @param options Storage, limits and hooks; see {@linkcode ResumableHandlerOptions}.
 * @returns A function from `Request` to `Response` for `Deno.serve`, `Bun.serve`, Hono and others.
 * @throws {TypeError} or {RangeError} when an option makes no sense.
 *
 * @example Mounting under Deno.serve
 * ```ts ignore
 * import { createResumableHandler } from "@resumable/server";
 *
 * const upload = createResumableHandler({ maxFileSize: 2 * 1024 ** 3 });
 * Deno.serve((request) => new URL(request.url).pathname === "/upload"
 *   ? upload(request)
 *   : new Response("Not found", { status: 404 }));
 * ```
 *
 * @example A complete one-chunk upload, in memory
 * ```ts
 * import { createResumableHandler } from "@resumable/server";
 * import { MemoryStorage } from "@resumable/server/memory";
 * import assert from "node:assert/strict";
 *
 * const handler = createResumableHandler({ storage: new MemoryStorage() });
 * const query = "resumableChunkNumber=1&resumableChunkSize=1048576&resumableCurrentChunkSize=5" +
 *   "&resumableTotalSize=5&resumableIdentifier=5-hellotxt&resumableFilename=hello.txt";
 * const response = await handler(new Request(`http://localhost/upload?${query}`, {
 *   method: "POST",
 *   headers: { "content-type": "application/octet-stream" },
 *   body: "hello",
 * }));
 * assert.equal(response.status, 200);
 * assert.equal((await response.json()).complete, true);
 * ```
 */
export function createResumableHandler(
  options: ResumableHandlerOptions = {},
): ResumableHandler {
  const resolved = resolveOptions(options);
  let service: Promise<ChunkService> | undefined;
  // The file-system storage is loaded only when used, so hosts without a file system (Deno Deploy,
  // workers) can import the handler.
  const getService = () =>
    service ??= (resolved.storage ? Promise.resolve(resolved.storage) : defaultStorage())
      .then((storage) => new ChunkService(storage, resolved));
  const methods = [
    ...new Set([
      resolved.testMethod,
      resolved.uploadMethod,
      ...(resolved.cancelMethod ? [resolved.cancelMethod] : []),
    ]),
  ];
  const allow = [...methods, "OPTIONS"].join(", ");
  const cors = createCors(resolved.cors, methods);

  /** The answer to `error`: its status for `dialect` (or `statusFor`'s), and its JSON body. */
  function errorAnswer(error: ResumableError, dialect: Dialect, extra?: HeadersInit): Response {
    const custom = resolved.statusFor?.(error, dialect);
    // A status no Response can carry would make the handler throw instead of answering.
    const status = isResponseStatus(custom) ? custom : defaultStatus(error.code, dialect);
    return errorResponse(error, status, extra);
  }

  async function handle(request: Request): Promise<Response> {
    const context: RequestContext = { dialect: "resumable", arrived: preciseNow() };
    // The upload body, however it is read: once it is, the request's own body is locked to it.
    let body: RequestBody | undefined;
    try {
      const method = request.method.toUpperCase();
      if (method === "OPTIONS") return emptyResponse(204, { allow });
      if (method === resolved.cancelMethod) {
        return await cancel(request, await getService(), resolved, context);
      }
      if (method === resolved.uploadMethod) {
        body = new RequestBody(request.body, resolved.bodyTimeoutMs, resolved.detachBodyBuffers);
        return await upload(request, body, await getService(), resolved, context);
      }
      if (method === resolved.testMethod) {
        // flow.js sends a test made with another method than GET as a multipart body (docs/protocol.md §1).
        if (method !== "GET" && isMultipart(request)) {
          body = new RequestBody(request.body, resolved.bodyTimeoutMs, resolved.detachBodyBuffers);
          return await testFromForm(request, body, await getService(), resolved, context);
        }
        return await test(request, await getService(), resolved, context);
      }
      throw new ResumableError(
        "method_not_allowed",
        `Method ${method} is not allowed; use ${allow}`,
      );
    } catch (thrown) {
      const error = asResumableError(thrown);
      if (
        error.code === "internal_error" || error.code === "storage_unavailable"
      ) {
        resolved.onError(error.cause ?? error, request);
      }
      await (body ? body.cancel() : request.body?.cancel().catch(() => {}));
      return errorAnswer(error, context.dialect, error.code === "method_not_allowed" ? { allow } : undefined);
    }
  }

  async function resumableHandler(request: Request): Promise<Response> {
    // A preflight carries its own CORS headers, or deliberately none.
    const preflight = await cors?.preflight(request);
    if (preflight instanceof Response) return preflight;
    // A preflight names no client: it is answered in resumable.js' terms, as a request before its
    // parameters are read is.
    if (preflight) return errorAnswer(preflight.error, "resumable", preflight.headers);
    const response = await handle(request);
    return cors ? await cors.decorate(request, response) : response;
  }

  async function cleanup(options: { now?: number } = {}): Promise<CleanupReport> {
    const service = await getService();
    let report: CleanupReport;
    try {
      report = await cleanupExpired(service.storage, {
        now: options.now,
        expireAfter: resolved.expireAfter,
        completedExpireAfter: resolved.completedExpireAfter,
        isActive: (key) => service.isActive(key),
        onRemoved: (key) => service.quota.release(key),
      });
    } catch (error) {
      // A sweep that failed part-way still removed uploads: count afresh, and tell why it failed.
      await service.quota.reseed().catch(() => {});
      throw error;
    }
    // Uploads started or finished by other processes since the last sweep.
    await service.quota.reseed();
    return report;
  }

  return Object.assign(resumableHandler, { cleanup });
}

async function cancel(
  request: Request,
  service: ChunkService,
  options: ResolvedOptions,
  context: RequestContext,
): Promise<Response> {
  const raw = readFromQuery(new URL(request.url), options, context);
  const identifier = raw.identifier ?? "";
  if (identifier === "" || identifier.length > options.limits.maxIdentifierLength) {
    throw new ResumableError("invalid_identifier", "Cancel needs the upload identifier in the query string");
  }
  await request.body?.cancel().catch(() => {});
  return jsonResponse(200, await service.cancel(request, identifier));
}

async function defaultStorage(): Promise<UploadStorage> {
  const { FileSystemStorage } = await import("./storage/fs.ts");
  return new FileSystemStorage();
}

/** Reads the request's parameters from `source`; errors from here on answer in the client's terms. */
function readRequestParams(
  source: ParamSource,
  options: ResolvedOptions,
  context: RequestContext,
): RawParams {
  const raw = readParams(source, { namespace: options.parameterNamespace, custom: options.parameterNames });
  context.dialect = raw.dialect;
  return raw;
}

function readFromQuery(url: URL, options: ResolvedOptions, context: RequestContext): RawParams {
  return readRequestParams(paramSource(url), options, context);
}

/**
 * The query's parameters of a multipart request. flow.js puts none in its URL and resumable.js all of
 * them (docs/protocol.md §1), so a request without any is flow.js': errors raised before the fields are
 * read (too large, malformed) answer in its terms. Custom names are resumable.js' (flow.js has none).
 */
function readMultipartQuery(
  url: URL,
  options: ResolvedOptions,
  context: RequestContext,
): RawParams {
  const fromQuery = readFromQuery(url, options, context);
  if (!hasAnyParam(fromQuery) && !options.parameterNames) context.dialect = "flow";
  return fromQuery;
}

/** Room in a multipart body for all but the chunk: text fields, part headers, delimiters. */
function multipartOverhead(options: ResolvedOptions): number {
  return 64 * 1024 + 8 * (options.limits.maxNameLength + options.limits.maxIdentifierLength);
}

/**
 * The most a chunk of `size` bytes takes as resumable.js' `chunkFormat: "base64"` sends it: a
 * `data:<type>;base64,` URL, 4/3 of the bytes. Its decoded size is checked exactly afterwards.
 */
function dataUrlBytes(size: number): number {
  return 4 * Math.ceil(size / 3) + 1024;
}

async function test(
  request: Request,
  service: ChunkService,
  options: ResolvedOptions,
  context: RequestContext,
  source?: ParamSource,
): Promise<Response> {
  const raw = readRequestParams(source ?? paramSource(new URL(request.url)), options, context);
  const chunk = validateChunkRequest(raw, options.limits);
  const outcome = await service.test(request, chunk);
  // 204, not 404: 404 is fatal to flow.js (docs/protocol.md §4.1).
  return outcome.present ? jsonResponse(200, outcome.status) : emptyResponse(204);
}

/** A test whose parameters are the fields of a multipart body without a file part (flow.js). */
async function testFromForm(
  request: Request,
  body: RequestBody,
  service: ChunkService,
  options: ResolvedOptions,
  context: RequestContext,
): Promise<Response> {
  const url = new URL(request.url);
  readMultipartQuery(url, options, context);
  const fileField = options.parameterNamespace + options.fileParameterName;
  const overhead = multipartOverhead(options);
  const form = await readMultipartStreamed(request, body, overhead, { fileField, maxFieldBytes: overhead });
  const source = recordSource(url, form.fields);
  if (form.file || form.fields.has(fileField)) {
    await form.file?.stream.cancel().catch(() => {});
    // Refused in the terms of the client the fields name.
    readRequestParams(source, options, context);
    throw new ResumableError(
      "malformed_body",
      `A chunk test carries no field "${fileField}"; chunks are sent with ${options.uploadMethod}`,
    );
  }
  return await test(request, service, options, context, source);
}

async function upload(
  request: Request,
  body: RequestBody,
  service: ChunkService,
  options: ResolvedOptions,
  context: RequestContext,
): Promise<Response> {
  const url = new URL(request.url);
  const canBeTest = request.method.toUpperCase() === options.testMethod;
  if (isMultipart(request)) {
    const fromQuery = readMultipartQuery(url, options, context);
    // resumable.js also puts every parameter in the URL: refuse a bad chunk before reading its body.
    const early = hasAnyParam(fromQuery) ? validateChunkRequest(fromQuery, options.limits) : undefined;
    // Room for the largest legal chunk even as a base64 data: URL.
    const chunkText = dataUrlBytes(
      early ? maxChunkBytes(early) : largestLegalChunk(options.limits.maxChunkSize),
    );
    const limit = chunkText + multipartOverhead(options);
    if (options.multipartParser === "stream") {
      return await uploadStreamed(request, url, body, service, options, context, { limit, chunkText });
    }
    const form = await readMultipart(request, body, limit);
    const part = chunkFromForm(
      form,
      options.parameterNamespace + options.fileParameterName,
    );
    if (!part) {
      if (canBeTest) {
        return test(request, service, options, context, paramSource(url, form));
      }
      throw new ResumableError(
        "unsupported_media_type",
        `Multipart body has no file field "${options.parameterNamespace + options.fileParameterName}"`,
      );
    }
    const raw = withReportedType(readRequestParams(paramSource(url, form), options, context), part.type);
    const chunk = validateChunkRequest(raw, options.limits);
    if (!chunk.allowedSizes.includes(part.size)) {
      throw new ResumableError(
        "chunk_size_mismatch",
        `Received ${part.size} bytes for chunk ${chunk.chunkNumber}, expected ${
          chunk.allowedSizes.join(" or ")
        }`,
      );
    }
    const digest = expectedDigest(options.checksum, request, paramSource(url, form), {
      namespace: options.parameterNamespace,
      multipart: true,
    });
    return jsonResponse(200, await service.store(request, chunk, part.stream, digest, context.arrived));
  }
  const chunk = validateChunkRequest(
    withReportedType(readFromQuery(url, options, context), request.headers.get("content-type")),
    options.limits,
  );
  const length = contentLength(request);
  const empty = length === 0 || !body.present;
  // A test sent with the upload method carries no body (resumable.js/flow.js `testMethod`).
  if (empty && canBeTest && !chunk.allowedSizes.includes(0)) {
    return test(request, service, options, context);
  }
  checkDeclaredLength(request, maxChunkBytes(chunk));
  if (length !== undefined && !chunk.allowedSizes.includes(length)) {
    throw new ResumableError(
      "chunk_size_mismatch",
      `Body of chunk ${chunk.chunkNumber} is ${length} bytes, expected ${chunk.allowedSizes.join(" or ")}`,
    );
  }
  const digest = expectedDigest(options.checksum, request, paramSource(url), {
    namespace: options.parameterNamespace,
    multipart: false,
  });
  return jsonResponse(
    200,
    await service.store(request, chunk, body.stream() ?? new Blob([]).stream(), digest, context.arrived),
  );
}

/**
 * flow.js sends no type parameter, but it sends the chunk with the file's type: the file part's
 * `Content-Type`, or the request's in octet mode. That then stands for the file's type.
 */
function withReportedType(raw: RawParams, contentType: string | null | undefined): RawParams {
  if (raw.type !== undefined || !contentType) return raw;
  const semicolon = contentType.indexOf(";");
  const type = (semicolon < 0 ? contentType : contentType.slice(0, semicolon)).trim();
  // `raw` is this request's own: set in place, nothing allocated per chunk.
  if (type && type.length <= 255) raw.type = type;
  return raw;
}

/**
 * `error` of a check of the fields before the chunk, saying so when one is missing: the streaming
 * reader does not buffer the chunk, so it cannot wait for fields sent after it.
 */
function fieldsFirst(error: unknown): unknown {
  if (error instanceof ResumableError && error.message.startsWith("Missing parameter")) {
    return new ResumableError(error.code, `${error.message} (form fields must precede the file part)`);
  }
  return error;
}

/** The multipart branch with the streaming reader: the file part goes straight to storage. */
async function uploadStreamed(
  request: Request,
  // The caller's: parsing the URL and its query again cost about 1.5 KB of garbage per request.
  url: URL,
  requestBody: RequestBody,
  service: ChunkService,
  options: ResolvedOptions,
  context: RequestContext,
  { limit, chunkText }: { limit: number; chunkText: number },
): Promise<Response> {
  const fileField = options.parameterNamespace + options.fileParameterName;
  // Only the chunk itself, as a data: URL, may take more than the overhead's room, and only as
  // much as the fields before it allow: it is buffered whole before anything else checks it.
  const body = await readMultipartStreamed(request, requestBody, limit, {
    fileField,
    leadingField: options.checksum && options.parameterNamespace + options.checksum.parameter,
    maxFieldBytes: multipartOverhead(options),
    maxFileFieldBytes: (fields) => {
      let chunk;
      try {
        chunk = validateChunkRequest(
          readRequestParams(recordSource(url, fields), options, context),
          options.limits,
        );
      } catch (error) {
        throw fieldsFirst(error);
      }
      return Math.min(chunkText, dataUrlBytes(maxChunkBytes(chunk)));
    },
  });
  const source = recordSource(url, body.fields);
  let stream = body.file?.stream;
  let size: number | undefined;
  try {
    if (!stream) {
      const value = body.fields.get(fileField);
      if (value === undefined) {
        if (request.method.toUpperCase() === options.testMethod) {
          return await test(request, service, options, context, source);
        }
        throw new ResumableError(
          "unsupported_media_type",
          `Multipart body has no file field "${fileField}"`,
        );
      }
      ({ stream, size } = chunkFromDataUrl(value, fileField));
    }
    const raw = withReportedType(readRequestParams(source, options, context), body.file?.type);
    let chunk;
    try {
      chunk = validateChunkRequest(raw, options.limits);
    } catch (error) {
      throw body.file ? fieldsFirst(error) : error;
    }
    if (size !== undefined && !chunk.allowedSizes.includes(size)) {
      throw new ResumableError(
        "chunk_size_mismatch",
        `Received ${size} bytes for chunk ${chunk.chunkNumber}, expected ${chunk.allowedSizes.join(" or ")}`,
      );
    }
    const digest = expectedDigest(options.checksum, request, source, {
      namespace: options.parameterNamespace,
      multipart: true,
    });
    const status = await service.store(request, chunk, stream, digest, context.arrived);
    return jsonResponse(200, status);
  } catch (error) {
    await stream?.cancel(error).catch(() => {});
    // A body that failed mid-stream is reported as itself, not as the storage's view of it.
    throw body.failure.error ?? error;
  }
}

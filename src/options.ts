/**
 * Options of {@linkcode createResumableHandler}, their defaults, and their validation. Mistakes in
 * options throw when the handler is created, never per request.
 *
 * @module
 */

import { type ChecksumOptions, type ChecksumPolicy, resolveChecksum } from "./checksum.ts";
import type { CorsOptions } from "./cors.ts";
import type { ResumableError } from "./errors.ts";
import { type ParameterNames, RESUMABLE_NAMES } from "./params.ts";
import type { Dialect } from "./params.ts";
import type { StoredFile, UploadStorage } from "./storage/types.ts";
import type { Limits } from "./validate.ts";

/** What {@linkcode ResumableHandlerOptions.onComplete} receives: the stored file and a way to read it. */
export interface CompletedUpload {
  /** Metadata of the stored file. */
  file: StoredFile;
  /** The request whose chunk completed the upload. */
  request: Request;
  /** Opens the file's bytes; cancel the stream if you stop early. */
  open(): Promise<ReadableStream<Uint8Array>>;
}

/** What {@linkcode ResumableHandlerOptions.authorize} is asked about. */
export interface AuthorizeInfo {
  /** `test` (chunk test), `upload` (chunk upload) or `cancel`. */
  action: "test" | "upload" | "cancel";
  /** The namespace `scope` derived from the request. */
  scope: string;
  /** The client's upload identifier. */
  identifier: string;
  /** The client's file name (absent for `cancel`). */
  fileName?: string;
  /** The declared file size in bytes (absent for `cancel`). */
  totalSize?: number;
  /** The chunk number (absent for `cancel`). */
  chunkNumber?: number;
}

/**
 * Answer of {@linkcode ResumableHandlerOptions.authorize}: `true` allows, `false` refuses with 403,
 * `"unauthorized"` refuses with 401 (no or bad credentials).
 */
export type AuthorizeResult = boolean | "unauthorized";

/** Options of {@linkcode createResumableHandler}. All are optional. */
export interface ResumableHandlerOptions {
  /**
   * Where chunks and files go.
   * @default {new FileSystemStorage({ directory: "./uploads" })}
   */
  storage?: UploadStorage;
  /**
   * Largest file accepted, in bytes.
   * @default {1073741824} (1 GiB)
   */
  maxFileSize?: number;
  /**
   * Largest nominal chunk size accepted, in bytes. The last chunk may be up to twice this, less one.
   * @default {33554432} (32 MiB)
   */
  maxChunkSize?: number;
  /**
   * Most chunks one upload may have; bounds files and requests per upload. Counted as the clients
   * cut files by default (the last chunk takes the remainder): a client with `forceChunkSize`
   * sends the remainder as one more chunk, so its uploads may have one chunk over this.
   * @default {10000}
   */
  maxChunks?: number;
  /**
   * Longest identifier accepted, in characters.
   * @default {1000}
   */
  maxIdentifierLength?: number;
  /**
   * Longest file name or relative path accepted, in characters.
   * @default {4096}
   */
  maxNameLength?: number;
  /**
   * HTTP method of chunk tests (the client's `testMethod`).
   * @default {"GET"}
   */
  testMethod?: string;
  /**
   * HTTP method of chunk uploads (the client's `uploadMethod`): `POST`, `PUT` or `PATCH`.
   * @default {"POST"}
   */
  uploadMethod?: string;
  /**
   * Name of the multipart field holding the chunk (the client's `fileParameterName`).
   * @default {"file"}
   */
  fileParameterName?: string;
  /**
   * Prefix of every parameter name (resumable.js `parameterNamespace`).
   * @default {""}
   */
  parameterNamespace?: string;
  /**
   * Custom parameter names (resumable.js `*ParameterName` options). When given, only these names
   * (over the resumable.js defaults) are read; otherwise both `resumable*` and `flow*` are recognised.
   */
  parameterNames?: Partial<ParameterNames>;
  /**
   * Derives a namespace from the request, e.g. the user id, so that equal identifiers of different
   * users never share chunks.
   * @default {() => ""}
   */
  scope?: (request: Request) => string | Promise<string>;
  /** Builds the URL a completed file is served at; it is included in the JSON as `file.url`. */
  fileUrl?: (file: StoredFile) => string | undefined;
  /**
   * Called once per upload, after the file is assembled and stored, before the response is sent
   * and before the chunks are removed. An error thrown here is reported to `onError`; the upload
   * stays complete. At most once: a process that dies between storing the file and returning from
   * this call (its machine lost, say) does not make another process call it for that file; work
   * that must not be lost can be found again among the completed uploads `listUploads()` reports.
   */
  onComplete?: (upload: CompletedUpload) => void | Promise<void>;
  /**
   * Receives unexpected errors (storage failures, bugs, hook errors).
   * @default {console.error}
   */
  onError?: (error: unknown, request: Request) => void;
  /**
   * Overrides the HTTP status of an error; return `undefined` to keep the default. 204, 205 and 304
   * answer without a body; a value that is not an integer in 200..599 keeps the default.
   */
  statusFor?: (error: ResumableError, dialect: Dialect) => number | undefined;
  /**
   * How long an assembly claim lasts without renewal before another request may take over a crashed
   * assembler's work. Renewed every third of this while assembling.
   * @default {30000}
   */
  assemblyLeaseMs?: number;
  /**
   * Decides whether a request may test, upload or cancel, after its parameters are read and before
   * anything is stored. 401 and 403 are final for flow.js and for resumable.js from GitHub master,
   * but resumable.js 1.1.0 from npm retries them (docs/security.md). Throwing reports to `onError`
   * and answers 500.
   */
  authorize?: (request: Request, info: AuthorizeInfo) => AuthorizeResult | Promise<AuthorizeResult>;
  /**
   * Cross-origin access for pages on other origins; off when absent (same-origin only).
   */
  cors?: CorsOptions;
  /**
   * Per-chunk SHA-256 verification: `true` checks a digest when the client sends one; an object can
   * rename the parameter or require a digest. A mismatch answers 422 (retried by resumable.js) and
   * stores nothing. Checked chunks are held in memory while hashed.
   * @default {false}
   */
  checksum?: boolean | ChecksumOptions;
  /**
   * HTTP method that cancels an upload (deletes its chunks), or `false` for none. The client
   * libraries send nothing on cancel; the app sends it (docs/security.md).
   * @default {"DELETE"}
   */
  cancelMethod?: string | false;
  /**
   * Longest time a request body may send nothing before the request fails as incomplete (408), its
   * chunk unstored. Bounds what a stalled client holds.
   * @default {30000}
   */
  bodyTimeoutMs?: number;
  /**
   * An upload in progress not touched for this long is removed by `handler.cleanup()`.
   * @default {86400000} (24 hours)
   */
  expireAfter?: number;
  /**
   * A completed upload's record (what lets re-tests of a finished file answer 200) is removed by
   * `handler.cleanup()` this long after completion. The stored file itself is never removed.
   * @default {604800000} (7 days)
   */
  completedExpireAfter?: number;
  /**
   * Most uploads in progress one scope may have; more answer 429 (retryable) until one finishes,
   * is cancelled or expires. With the default `scope` every client shares one scope.
   * @default {1000}
   */
  maxUploadsPerScope?: number;
  /**
   * Most bytes all uploads in progress may reserve (each reserves its declared size when its first
   * chunk arrives); a new upload past it answers 507 (retryable). A file larger than this alone is
   * refused for good (`file_too_large`).
   * @default {10737418240} (10 GiB, or `maxFileSize` when that is larger)
   */
  maxPendingBytes?: number;
  /**
   * How multipart bodies are read. `"stream"` reads the fields before the file part and streams the
   * file part straight to storage: memory stays at one network read per request, and throughput
   * near the wire's (see docs/performance.md). Form fields must then precede the file part, as both
   * resumable.js and flow.js send them. `"native"` uses the platform's `Request.formData()`, which
   * buffers the whole body first and accepts fields in any order.
   * @default {"stream"}
   */
  multipartParser?: "stream" | "native";
  /**
   * Free each piece of a request body as soon as the file-system storage has written it, by
   * detaching the piece's `ArrayBuffer`, rather than when the garbage collector next runs. It applies
   * to bodies whose pieces arrive as fresh buffers, such as Bun's, where it lowered a busy server's
   * peak RSS by 15 to 40 MiB (docs/performance.md); Deno's request bodies are read into reused
   * buffers and are not affected. A multipart body's piece is freed once its last byte is stored.
   *
   * Set it to `false` when anything else reads a body's pieces after the handler: a body stream you
   * built that hands out one buffer twice, or, under Bun, a clone of the request, which shares its
   * pieces with the original there and would read them emptied.
   * @default {true}
   */
  detachBodyBuffers?: boolean;
}

/** Options after defaults and checks. */
export interface ResolvedOptions {
  storage?: UploadStorage;
  limits: Limits;
  testMethod: string;
  uploadMethod: string;
  fileParameterName: string;
  parameterNamespace: string;
  parameterNames?: ParameterNames;
  scope: (request: Request) => string | Promise<string>;
  fileUrl?: (file: StoredFile) => string | undefined;
  onComplete?: (upload: CompletedUpload) => void | Promise<void>;
  onError: (error: unknown, request: Request) => void;
  statusFor?: (error: ResumableError, dialect: Dialect) => number | undefined;
  assemblyLeaseMs: number;
  authorize?: (request: Request, info: AuthorizeInfo) => AuthorizeResult | Promise<AuthorizeResult>;
  cors?: CorsOptions;
  checksum?: ChecksumPolicy;
  cancelMethod?: string;
  bodyTimeoutMs: number;
  expireAfter: number;
  completedExpireAfter: number;
  maxUploadsPerScope: number;
  maxPendingBytes: number;
  multipartParser: "stream" | "native";
  detachBodyBuffers: boolean;
}

function positiveInteger(
  value: number | undefined,
  name: string,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(
      `Option ${name} must be a positive integer, got ${String(value)}`,
    );
  }
  return value;
}

/** A positive integer, or `Infinity` to turn a limit off. */
function limit(value: number | undefined, name: string, fallback: number): number {
  return value === Infinity ? Infinity : positiveInteger(value, name, fallback);
}

function method(
  value: string | undefined,
  name: string,
  fallback: string,
  allowed: string[],
): string {
  if (value === undefined) return fallback;
  const upper = String(value).toUpperCase();
  if (!allowed.includes(upper)) {
    throw new TypeError(
      `Option ${name} must be one of ${allowed.join(", ")}, got "${value}"`,
    );
  }
  return upper;
}

function callback<T>(value: T | undefined, name: string): T | undefined {
  if (value !== undefined && typeof value !== "function") {
    throw new TypeError(`Option ${name} must be a function`);
  }
  return value;
}

function nonEmptyName(
  value: string | undefined,
  name: string,
  fallback: string,
): string {
  if (value === undefined) return fallback;
  if (typeof value !== "string" || value === "") {
    throw new TypeError(`Option ${name} must be a non-empty string`);
  }
  return value;
}

/**
 * Applies defaults and checks every option.
 *
 * @throws {TypeError} for an option of the wrong kind.
 * @throws {RangeError} for a number out of range.
 */
export function resolveOptions(
  options: ResumableHandlerOptions = {},
): ResolvedOptions {
  if (options === null || typeof options !== "object") {
    throw new TypeError("Options must be an object");
  }
  const storage = options.storage;
  if (
    storage !== undefined &&
    (storage === null || typeof storage.putChunk !== "function")
  ) {
    throw new TypeError("Option storage must implement UploadStorage");
  }
  const limits: Limits = {
    maxFileSize: positiveInteger(options.maxFileSize, "maxFileSize", 1024 ** 3),
    maxChunkSize: positiveInteger(
      options.maxChunkSize,
      "maxChunkSize",
      32 * 1024 ** 2,
    ),
    maxChunks: positiveInteger(options.maxChunks, "maxChunks", 10_000),
    maxIdentifierLength: positiveInteger(
      options.maxIdentifierLength,
      "maxIdentifierLength",
      1000,
    ),
    maxNameLength: positiveInteger(
      options.maxNameLength,
      "maxNameLength",
      4096,
    ),
  };
  const testMethod = method(options.testMethod, "testMethod", "GET", [
    "GET",
    "POST",
    "PUT",
    "PATCH",
  ]);
  const uploadMethod = method(options.uploadMethod, "uploadMethod", "POST", [
    "POST",
    "PUT",
    "PATCH",
  ]);
  let parameterNames: ParameterNames | undefined;
  if (options.parameterNames !== undefined) {
    if (
      options.parameterNames === null ||
      typeof options.parameterNames !== "object"
    ) {
      throw new TypeError("Option parameterNames must be an object");
    }
    parameterNames = { ...RESUMABLE_NAMES };
    for (const [key, value] of Object.entries(options.parameterNames)) {
      if (!(key in RESUMABLE_NAMES)) {
        throw new TypeError(
          `Option parameterNames has an unknown key "${key}"`,
        );
      }
      parameterNames[key as keyof ParameterNames] = nonEmptyName(
        value,
        `parameterNames.${key}`,
        "",
      );
    }
  }
  const cancelMethod = options.cancelMethod === false
    ? undefined
    : method(options.cancelMethod, "cancelMethod", "DELETE", ["DELETE", "POST", "PUT", "PATCH"]);
  if (cancelMethod === testMethod || cancelMethod === uploadMethod) {
    throw new TypeError(
      `Option cancelMethod must differ from testMethod and uploadMethod, got "${cancelMethod}"`,
    );
  }
  const assemblyLeaseMs = positiveInteger(options.assemblyLeaseMs, "assemblyLeaseMs", 30_000);
  const bodyTimeoutMs = positiveInteger(options.bodyTimeoutMs, "bodyTimeoutMs", 30_000);
  const expireAfter = positiveInteger(options.expireAfter, "expireAfter", 24 * 3600_000);
  // An upload is "untouched" only if no chunk byte or lease renewal arrived for that long; below
  // these two, a live upload could look abandoned.
  if (expireAfter <= Math.max(bodyTimeoutMs, assemblyLeaseMs)) {
    throw new RangeError(
      `Option expireAfter (${expireAfter}) must be longer than bodyTimeoutMs and assemblyLeaseMs`,
    );
  }
  const multipartParser = options.multipartParser ?? "stream";
  if (multipartParser !== "stream" && multipartParser !== "native") {
    throw new TypeError(
      `Option multipartParser must be "stream" or "native", got "${String(multipartParser)}"`,
    );
  }
  const detachBodyBuffers = options.detachBodyBuffers ?? true;
  if (typeof detachBodyBuffers !== "boolean") {
    throw new TypeError("Option detachBodyBuffers must be a boolean");
  }
  const parameterNamespace = options.parameterNamespace ?? "";
  if (typeof parameterNamespace !== "string") {
    throw new TypeError("Option parameterNamespace must be a string");
  }
  return {
    storage,
    limits,
    testMethod,
    uploadMethod,
    fileParameterName: nonEmptyName(
      options.fileParameterName,
      "fileParameterName",
      "file",
    ),
    parameterNamespace,
    parameterNames,
    scope: callback(options.scope, "scope") ?? (() => ""),
    fileUrl: callback(options.fileUrl, "fileUrl"),
    onComplete: callback(options.onComplete, "onComplete"),
    onError: callback(options.onError, "onError") ??
      ((error) => console.error(error)),
    statusFor: callback(options.statusFor, "statusFor"),
    assemblyLeaseMs,
    authorize: callback(options.authorize, "authorize"),
    cors: options.cors,
    checksum: resolveChecksum(options.checksum),
    cancelMethod,
    bodyTimeoutMs,
    expireAfter,
    completedExpireAfter: positiveInteger(
      options.completedExpireAfter,
      "completedExpireAfter",
      7 * 24 * 3600_000,
    ),
    maxUploadsPerScope: limit(options.maxUploadsPerScope, "maxUploadsPerScope", 1000),
    // At least one file of the largest size allowed fits.
    maxPendingBytes: limit(
      options.maxPendingBytes,
      "maxPendingBytes",
      Math.max(10 * 1024 ** 3, limits.maxFileSize),
    ),
    multipartParser,
    detachBodyBuffers,
  };
}

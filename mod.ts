/**
 * The server side of resumable, chunked browser uploads with
 * [resumable.js](https://github.com/23/resumable.js) and [flow.js](https://github.com/flowjs/flow.js),
 * as one Web-standard `(request: Request) => Promise<Response>` handler.
 *
 * - Answers chunk tests (200 stored, 204 missing) and stores multipart or raw ("octet") chunks.
 * - Validates every size itself and refuses bad input with statuses both clients treat as final.
 * - Assembles each upload exactly once, streaming, even when the last chunks race or several
 *   processes share one storage.
 * - Stores through an {@linkcode UploadStorage}: the file system by default, memory, or your own.
 *
 * @example Serving uploads with Deno
 * ```ts ignore
 * import { createResumableHandler } from "@resumable/server";
 *
 * const handler = createResumableHandler({
 *   onComplete: ({ file }) => console.log(`stored ${file.name} (${file.size} bytes)`),
 * });
 * Deno.serve({ port: 8000 }, handler);
 * ```
 *
 * @module
 */

export { createResumableHandler, type ResumableHandler } from "./src/handler.ts";
export type {
  AuthorizeInfo,
  AuthorizeResult,
  CompletedUpload,
  ResumableHandlerOptions,
} from "./src/options.ts";
export type { CorsOptions } from "./src/cors.ts";
export type { ChecksumOptions } from "./src/checksum.ts";
export type { CleanupReport } from "./src/cleanup.ts";
export { type ErrorCode, ResumableError } from "./src/errors.ts";
export type { UploadStatus } from "./src/response.ts";
export type { Dialect, ParameterNames } from "./src/params.ts";
// Every storage type, so that this entry point documents what its exports refer to.
export type * from "./src/storage/types.ts";

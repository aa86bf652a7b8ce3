/**
 * Built-in CORS for pages on another origin (docs/protocol.md §10). Off unless the `cors` option is set.
 *
 * Every chunk upload is preflighted (both clients register an `xhr.upload` listener), and tests are
 * preflighted once the client's `headers` option adds a header, so the preflight must allow the
 * test, upload and cancel methods and `Content-Type` (octet mode) plus the app's custom headers.
 *
 * @module
 */

import { ResumableError } from "./errors.ts";

/** Options of the handler's `cors` option. */
export interface CorsOptions {
  /**
   * Origins allowed to call the handler: `"*"` (any, without credentials), one origin, a list of
   * exact origins such as `"https://app.example.com"`, or a function deciding per origin.
   */
  origin: string | readonly string[] | ((origin: string) => boolean | Promise<boolean>);
  /**
   * Allow cookies and HTTP authentication (the clients' `withCredentials: true`). The exact origin is
   * then echoed with `Access-Control-Allow-Credentials: true`; `origin: "*"` is refused.
   * @default {false}
   */
  credentials?: boolean;
  /**
   * Request headers a preflight may allow besides `Content-Type`: the keys of the client's `headers`
   * option, e.g. `["Authorization", "X-CSRF-Token"]`. Matched case-insensitively.
   * @default {[]}
   */
  allowHeaders?: readonly string[];
  /**
   * Response headers the page's own JavaScript may read (the libraries read none).
   * @default {[]}
   */
  exposeHeaders?: readonly string[];
  /**
   * Seconds a browser may cache a preflight (WebKit caps it at 600).
   * @default {600}
   */
  maxAge?: number;
}

/** A preflight the policy refuses: why, and the headers its answer carries (no CORS headers). */
export interface PreflightRefusal {
  /** Says what the preflight asked for that is not allowed. */
  error: ResumableError;
  headers: Headers;
}

/** A resolved CORS policy. */
export interface Cors {
  /**
   * Answers a preflight the policy allows, tells why it refuses one (the handler answers that like
   * any other error), or `undefined` when `request` is not a preflight.
   */
  preflight(request: Request): Promise<Response | PreflightRefusal | undefined>;
  /** Adds the CORS headers `request` earns to `response`. */
  decorate(request: Request, response: Response): Promise<Response>;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function headerList(value: readonly string[] | undefined, name: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string" || !TOKEN.test(item))) {
    throw new TypeError(`Option ${name} must be an array of header names`);
  }
  return value.map((item) => item.toLowerCase());
}

function originMatcher(origin: CorsOptions["origin"]): (origin: string) => boolean | Promise<boolean> {
  if (typeof origin === "function") return origin;
  if (origin === "*") return () => true;
  const list = typeof origin === "string" ? [origin] : origin;
  if (!Array.isArray(list) || list.some((item) => typeof item !== "string" || item === "*")) {
    throw new TypeError('Option cors.origin must be "*", an origin, a list of origins or a function');
  }
  // Origins compare exactly (scheme, host, port); a trailing slash is a common configuration slip.
  const allowed = new Set(list.map((item) => item.replace(/\/+$/, "")));
  return (candidate) => allowed.has(candidate);
}

/**
 * Resolves the `cors` option, or `undefined` when it is off.
 *
 * @param options The user's CORS options.
 * @param methods Methods the handler serves (test, upload, cancel).
 * @throws {TypeError} for a malformed option, or `origin: "*"` with credentials.
 */
export function createCors(options: CorsOptions | undefined, methods: readonly string[]): Cors | undefined {
  if (options === undefined) return undefined;
  if (options === null || typeof options !== "object") throw new TypeError("Option cors must be an object");
  const credentials = options.credentials ?? false;
  if (typeof credentials !== "boolean") throw new TypeError("Option cors.credentials must be a boolean");
  // Browsers refuse `*` with credentials, and reflecting every origin with cookies would let any
  // site act as the user: make the caller list origins instead.
  if (options.origin === "*" && credentials) {
    throw new TypeError('Option cors.origin cannot be "*" with credentials; list the allowed origins');
  }
  const matches = originMatcher(options.origin);
  const wildcard = options.origin === "*";
  const allowHeaders = ["content-type", ...headerList(options.allowHeaders, "cors.allowHeaders")];
  const exposeHeaders = headerList(options.exposeHeaders, "cors.exposeHeaders");
  const maxAge = options.maxAge ?? 600;
  if (!Number.isSafeInteger(maxAge) || maxAge < 0) {
    throw new RangeError(`Option cors.maxAge must be a non-negative integer, got ${String(maxAge)}`);
  }
  const allowMethods = [...new Set([...methods, "OPTIONS"])].join(", ");

  async function allowedOrigin(request: Request): Promise<string | undefined> {
    const origin = request.headers.get("origin");
    if (origin === null) return undefined;
    try {
      return await matches(origin) === true ? origin : undefined;
    } catch {
      // A failing origin check allows nothing; the request itself still gets its normal answer.
      return undefined;
    }
  }

  function originHeaders(origin: string, headers: Headers): void {
    if (wildcard) {
      headers.set("access-control-allow-origin", "*");
      return;
    }
    headers.set("access-control-allow-origin", origin);
    if (credentials) headers.set("access-control-allow-credentials", "true");
  }

  return {
    async preflight(request) {
      if (
        request.method.toUpperCase() !== "OPTIONS" || !request.headers.has("origin") ||
        !request.headers.has("access-control-request-method")
      ) return undefined;
      const headers = new Headers({ "cache-control": "no-store" });
      if (!wildcard) headers.set("vary", "Origin, Access-Control-Request-Headers");
      const origin = await allowedOrigin(request);
      const requested = (request.headers.get("access-control-request-headers") ?? "")
        .split(",").map((item) => item.trim().toLowerCase()).filter((item) => item !== "");
      const method = request.headers.get("access-control-request-method")!.toUpperCase();
      const header = requested.find((item) => !allowHeaders.includes(item));
      // No CORS headers: the browser blocks the real request. The answer's body tells a human why.
      const refuse = (message: string) => ({
        error: new ResumableError("origin_not_allowed", message),
        headers,
      });
      if (origin === undefined) {
        return refuse(`Uploads from ${request.headers.get("origin")} are not allowed here`);
      }
      if (!methods.includes(method)) {
        return refuse(`Method ${method} is not allowed from another origin; use ${methods.join(", ")}`);
      }
      if (header !== undefined) return refuse(`Request header ${header} is not allowed from another origin`);
      originHeaders(origin, headers);
      headers.set("access-control-allow-methods", allowMethods);
      headers.set("access-control-allow-headers", allowHeaders.join(", "));
      headers.set("access-control-max-age", String(maxAge));
      return new Response(null, { status: 204, headers });
    },

    async decorate(request, response) {
      const origin = await allowedOrigin(request);
      // The answer depends on Origin whenever it is not a literal "*", so caches must key on it.
      if (!wildcard) response.headers.append("vary", "Origin");
      if (origin === undefined) return response;
      originHeaders(origin, response.headers);
      if (exposeHeaders.length > 0) {
        response.headers.set("access-control-expose-headers", exposeHeaders.join(", "));
      }
      return response;
    },
  };
}

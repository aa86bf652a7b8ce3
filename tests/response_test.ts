import assert from "node:assert/strict";
import { ERROR_CODES, type ErrorCode } from "../src/errors.ts";
import { defaultStatus } from "../src/response.ts";

// docs/protocol.md §4.2: what each client gives up on (the rest it retries or, flow.js by default, fails).
const RESUMABLE_PERMANENT = [400, 404, 415, 500, 501];
const FLOW_PERMANENT = [404, 413, 415, 500, 501];
// Deliberately retryable: the same request can succeed later (docs/security.md).
const RETRYABLE: ErrorCode[] = [
  "storage_unavailable",
  "upload_removed",
  "body_incomplete",
  "checksum_mismatch",
  "too_many_uploads",
  "storage_full",
];
// Statuses that say what they mean (401/403/405) rather than what a client does with them.
const NOT_A_REJECTION: ErrorCode[] = [
  "method_not_allowed",
  "internal_error",
  "unauthorized",
  "forbidden",
  "origin_not_allowed",
];

Deno.test("defaultStatus() maps every error code, for both clients", () => {
  for (const code of ERROR_CODES) {
    for (const dialect of ["resumable", "flow"] as const) {
      const status = defaultStatus(code, dialect);
      assert.ok(Number.isInteger(status) && status >= 400 && status < 600, `${code}/${dialect}`);
    }
  }
});

Deno.test("defaultStatus() refuses bad input with a status permanent in the client that sent it", () => {
  for (const code of ERROR_CODES) {
    if (RETRYABLE.includes(code) || NOT_A_REJECTION.includes(code)) continue;
    const resumable = defaultStatus(code, "resumable");
    const flow = defaultStatus(code, "flow");
    assert.ok(RESUMABLE_PERMANENT.includes(resumable), `${code} → ${resumable} is retried by resumable.js`);
    assert.ok(FLOW_PERMANENT.includes(flow), `${code} → ${flow} is not permanent in flow.js`);
    assert.ok(resumable < 500 && flow < 500, `${code}: a client mistake is never a 5xx`);
  }
});

Deno.test("defaultStatus() lets resumable.js retry storage trouble, and never answers 413 to it", () => {
  assert.equal(defaultStatus("storage_unavailable", "resumable"), 503);
  assert.equal(defaultStatus("storage_unavailable", "flow"), 503);
  for (const code of ERROR_CODES) assert.notEqual(defaultStatus(code, "resumable"), 413, code);
});

Deno.test("defaultStatus() answers retryable limits and checksum mismatches with statuses no client gives up on", () => {
  const permanentSomewhere = [400, 401, 403, 404, 409, 413, 415, 500, 501];
  for (const code of RETRYABLE) {
    for (const dialect of ["resumable", "flow"] as const) {
      assert.ok(!permanentSomewhere.includes(defaultStatus(code, dialect)), `${code}/${dialect}`);
    }
  }
  assert.equal(defaultStatus("storage_full", "resumable"), 507);
  assert.equal(defaultStatus("too_many_uploads", "flow"), 429);
  assert.equal(defaultStatus("unauthorized", "flow"), 401);
  assert.equal(defaultStatus("forbidden", "resumable"), 403);
});

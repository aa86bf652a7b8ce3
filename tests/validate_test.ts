import assert from "node:assert/strict";
import { ResumableError } from "../src/errors.ts";
import type { RawParams } from "../src/params.ts";
import { type Limits, validateChunkRequest } from "../src/validate.ts";

const MiB = 1024 * 1024;
const limits: Limits = {
  maxFileSize: 100 * MiB,
  maxChunkSize: 8 * MiB,
  maxChunks: 1000,
  maxIdentifierLength: 100,
  maxNameLength: 200,
};

function raw(overrides: Partial<RawParams> = {}): RawParams {
  return {
    dialect: "resumable",
    chunkNumber: "1",
    chunkSize: String(MiB),
    currentChunkSize: String(MiB),
    totalSize: String(3 * MiB),
    identifier: "3145728-photojpg",
    fileName: "photo.jpg",
    relativePath: "photo.jpg",
    totalChunks: "3",
    ...overrides,
  };
}

function rejects(params: RawParams, code: string, pattern?: RegExp) {
  assert.throws(() => validateChunkRequest(params, limits), (error: unknown) => {
    assert.ok(error instanceof ResumableError, String(error));
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("validateChunkRequest() accepts a normal chunk and computes the layout itself", () => {
  const chunk = validateChunkRequest(raw(), limits);
  assert.equal(chunk.chunkNumber, 1);
  assert.equal(chunk.totalSize, 3 * MiB);
  assert.deepEqual(chunk.allowedSizes, [MiB]);
  assert.equal(chunk.layout.floorCount, 3);
});

Deno.test("validateChunkRequest() refuses malformed numbers", async (t) => {
  for (const value of ["-1", "1.5", "1e9", "abc", "0x10", "+1", "9007199254740993", " ", "1 2"]) {
    await t.step(`chunk number "${value}"`, () => {
      rejects(raw({ chunkNumber: value }), value === " " ? "invalid_parameters" : "invalid_parameters");
    });
  }
  rejects(raw({ totalSize: "2e3" }), "invalid_parameters", /resumableTotalSize/);
  rejects(raw({ chunkSize: "0" }), "invalid_parameters", /at least 1/);
});

Deno.test("validateChunkRequest() names each missing parameter in the client's dialect", () => {
  rejects(raw({ chunkNumber: undefined }), "invalid_parameters", /resumableChunkNumber/);
  rejects(raw({ totalSize: undefined }), "invalid_parameters", /resumableTotalSize/);
  rejects(raw({ chunkSize: undefined }), "invalid_parameters", /resumableChunkSize/);
  rejects(raw({ identifier: undefined }), "invalid_identifier", /resumableIdentifier/);
  rejects(raw({ dialect: "flow", identifier: "" }), "invalid_identifier", /flowIdentifier/);
});

Deno.test("validateChunkRequest() keeps chunk numbers within 1..N", () => {
  rejects(raw({ chunkNumber: "0" }), "chunk_out_of_range");
  rejects(raw({ chunkNumber: "4", currentChunkSize: undefined }), "chunk_out_of_range", /3 chunks/);
  assert.equal(validateChunkRequest(raw({ chunkNumber: "3" }), limits).chunkNumber, 3);
});

Deno.test("validateChunkRequest() allows the stretched last chunk up to 2 x chunkSize - 1", () => {
  const total = 3 * MiB - 1;
  const ok = validateChunkRequest(
    raw({
      chunkNumber: "2",
      totalSize: String(total),
      currentChunkSize: String(2 * MiB - 1),
      totalChunks: "2",
    }),
    limits,
  );
  assert.deepEqual(ok.allowedSizes, [2 * MiB - 1]);
  rejects(
    raw({ chunkNumber: "2", totalSize: String(total), currentChunkSize: String(2 * MiB), totalChunks: "2" }),
    "chunk_size_mismatch",
  );
});

Deno.test("validateChunkRequest() accepts the forceChunkSize layout with its short last chunk", () => {
  const total = 2.5 * MiB;
  const last = validateChunkRequest(
    raw({
      chunkNumber: "3",
      totalSize: String(total),
      currentChunkSize: String(0.5 * MiB),
      totalChunks: "3",
    }),
    limits,
  );
  assert.deepEqual(last.allowedSizes, [0.5 * MiB]);
  const middle = validateChunkRequest(
    raw({ chunkNumber: "2", totalSize: String(total), currentChunkSize: undefined, totalChunks: "3" }),
    limits,
  );
  assert.deepEqual(middle.allowedSizes.sort(), [1.5 * MiB, MiB].sort());
});

Deno.test("validateChunkRequest() tolerates an under-reported resumableTotalChunks but not an impossible one", () => {
  // resumable.js 1.1.0 may send the length of a chunk list still being built (docs/protocol.md §5).
  assert.equal(validateChunkRequest(raw({ totalChunks: "1" }), limits).declaredTotalChunks, 1);
  rejects(raw({ totalChunks: "4" }), "invalid_parameters", /at most 3/);
});

Deno.test("validateChunkRequest() accepts 0-byte and 1-byte files", () => {
  const empty = validateChunkRequest(
    raw({ dialect: "flow", totalSize: "0", currentChunkSize: "0", totalChunks: "1" }),
    limits,
  );
  assert.deepEqual(empty.allowedSizes, [0]);
  const one = validateChunkRequest(raw({ totalSize: "1", currentChunkSize: "1", totalChunks: "1" }), limits);
  assert.deepEqual(one.allowedSizes, [1]);
  rejects(raw({ totalSize: "1", currentChunkSize: "0", totalChunks: "1" }), "chunk_size_mismatch");
});

Deno.test("validateChunkRequest() applies the size and count limits at exactly the limit and one past it", () => {
  assert.ok(validateChunkRequest(raw({ totalSize: String(100 * MiB), totalChunks: "100" }), limits));
  rejects(raw({ totalSize: String(100 * MiB + 1) }), "file_too_large", /limit is 104857600/);
  assert.ok(
    validateChunkRequest(
      raw({ chunkSize: String(8 * MiB), currentChunkSize: undefined, totalChunks: undefined }),
      limits,
    ),
  );
  rejects(
    raw({ chunkSize: String(8 * MiB + 1), currentChunkSize: undefined, totalChunks: undefined }),
    "chunk_too_large",
  );
  const atLimit = {
    chunkSize: "1024",
    totalSize: String(1000 * 1024),
    currentChunkSize: "1024",
    totalChunks: "1000",
  };
  assert.ok(validateChunkRequest(raw(atLimit), limits));
  rejects(raw({ ...atLimit, totalSize: String(1001 * 1024), totalChunks: "1001" }), "too_many_chunks");
  // Counted in the default layout: with forceChunkSize, a remainder past the limit is one more chunk.
  const remainder = { ...atLimit, totalSize: String(1000 * 1024 + 5), totalChunks: "1001" };
  assert.ok(validateChunkRequest(raw({ ...remainder, chunkNumber: "1001", currentChunkSize: "5" }), limits));
  rejects(raw({ ...remainder, chunkNumber: "1002", currentChunkSize: "5" }), "chunk_out_of_range");
});

Deno.test("validateChunkRequest() refuses identifiers and names that are too long or carry control characters", () => {
  rejects(raw({ identifier: "x".repeat(101) }), "invalid_identifier", /101 characters/);
  rejects(raw({ identifier: "a\u0000b" }), "invalid_identifier", /control/);
  rejects(raw({ fileName: "a\nb" }), "invalid_parameters", /control/);
  rejects(raw({ relativePath: "d/".repeat(101) }), "invalid_parameters", /RelativePath/);
  assert.ok(
    validateChunkRequest(raw({ fileName: "../../etc/passwd" }), limits),
    "names are metadata, not paths",
  );
});

Deno.test("a file over the limit is refused with both sizes in words a person reads", () => {
  rejects(
    raw({
      totalSize: String(150 * MiB),
      chunkSize: String(MiB),
      currentChunkSize: undefined,
      totalChunks: undefined,
    }),
    "file_too_large",
    /File is 157286400 bytes \(150 MiB\), the limit is 104857600 bytes \(100 MiB\)/,
  );
});

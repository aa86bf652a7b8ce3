import assert from "node:assert/strict";
import { createResumableHandler } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";

Deno.test("createResumableHandler() throws RangeError for limits that make no sense", () => {
  for (const name of ["maxFileSize", "maxChunkSize", "maxChunks", "maxIdentifierLength", "assemblyLeaseMs"]) {
    for (const value of [0, -1, 1.5, Number.NaN, Infinity]) {
      assert.throws(() => createResumableHandler({ [name]: value }), RangeError, `${name}=${value}`);
    }
  }
});

Deno.test("createResumableHandler() throws TypeError for options of the wrong kind", () => {
  assert.throws(() => createResumableHandler({ uploadMethod: "GET" }), TypeError);
  assert.throws(() => createResumableHandler({ testMethod: "DELETE" }), TypeError);
  assert.throws(() => createResumableHandler({ fileParameterName: "" }), TypeError);
  assert.throws(() => createResumableHandler({ onComplete: "yes" as never }), TypeError);
  assert.throws(() => createResumableHandler({ storage: {} as never }), TypeError);
  assert.throws(() => createResumableHandler({ parameterNames: { bogus: "x" } as never }), TypeError);
  assert.throws(() => createResumableHandler(null as never), TypeError);
  assert.throws(() => createResumableHandler({ multipartParser: "fast" as never }), TypeError);
  assert.throws(() => createResumableHandler({ detachBodyBuffers: "no" as never }), TypeError);
});

Deno.test("createResumableHandler() accepts sensible options", () => {
  const handler = createResumableHandler({
    storage: new MemoryStorage(),
    uploadMethod: "put",
    testMethod: "POST",
    maxFileSize: 1,
    parameterNames: { identifier: "id" },
  });
  assert.equal(typeof handler, "function");
});

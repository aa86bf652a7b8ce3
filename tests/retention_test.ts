import assert from "node:assert/strict";

// Under Deno every ReadableStream survives V8's young-generation collections until a full one, and
// what a finished stream still references survives with it: that grew a busy server's young
// generation and peak RSS (docs/performance.md). The fixture needs `gc()`, so it runs in its own
// process.
Deno.test("body streams the handler made, once read or cancelled, let go of their hooks and the request body", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      new URL("./fixtures/retention.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  assert.equal(code, 0, text.decode(stderr));
  const { freed, kept } = JSON.parse(text.decode(stdout));
  assert.equal(kept, 5);
  assert.deepEqual(freed, {
    "tap read to its end through its direct reader": true,
    "tap cancelled through its direct reader": true,
    "tap read to its end through its own reader": true,
    "multipart file part read to its end through its direct reader": true,
    "multipart file part read to its end through its own reader": true,
  });
});

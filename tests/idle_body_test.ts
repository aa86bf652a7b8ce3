import assert from "node:assert/strict";
import { ResumableError } from "../src/errors.ts";
import { withIdleTimeout } from "../src/idle_body.ts";

function post(body: BodyInit): Request {
  return new Request("http://localhost/upload", { method: "POST", body });
}

Deno.test("withIdleTimeout() passes a body through unchanged, also to a BYOB reader", async () => {
  const bytes = new Uint8Array(100_000).map((_, i) => i & 255);
  assert.deepEqual(new Uint8Array(await withIdleTimeout(post(bytes), 1000).arrayBuffer()), bytes);
  const reader = withIdleTimeout(post(new Blob([bytes]).stream()), 1000).body!.getReader({ mode: "byob" });
  const parts: number[] = [];
  for (;;) {
    const { done, value } = await reader.read(new Uint8Array(4096));
    if (done) break;
    parts.push(...value!);
  }
  assert.deepEqual(new Uint8Array(parts), bytes);
});

Deno.test("withIdleTimeout() fails a body that sends nothing with body_incomplete", async () => {
  let cancelled = false;
  const stalled = new ReadableStream<Uint8Array>({
    pull: () => new Promise(() => {}),
    cancel: () => {
      cancelled = true;
    },
  });
  const error = await withIdleTimeout(post(stalled), 20).arrayBuffer().catch((error) => error);
  assert.ok(error instanceof ResumableError);
  assert.equal(error.code, "body_incomplete");
  assert.ok(cancelled, "the underlying body is cancelled");
});

Deno.test("withIdleTimeout() leaves a request without body alone", () => {
  const request = new Request("http://localhost/upload");
  assert.equal(withIdleTimeout(request, 10), request);
});

import assert from "node:assert/strict";
import { ResumableError } from "../src/errors.ts";
import { withIdleTimeout } from "../src/idle_body.ts";

/** The body of a POST carrying `body`, as the handler wraps it. */
function guarded(body: BodyInit, idleMs: number): ReadableStream<Uint8Array> {
  return withIdleTimeout(new Request("http://localhost/upload", { method: "POST", body }).body, idleMs)!;
}

function bytesOf(stream: ReadableStream<Uint8Array>): Promise<ArrayBuffer> {
  return new Response(stream).arrayBuffer();
}

Deno.test("withIdleTimeout() passes a body through unchanged, also to a BYOB reader", async () => {
  const bytes = new Uint8Array(100_000).map((_, i) => i & 255);
  assert.deepEqual(new Uint8Array(await bytesOf(guarded(bytes, 1000))), bytes);
  const reader = guarded(new Blob([bytes]).stream(), 1000).getReader({ mode: "byob" });
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
  const error = await bytesOf(guarded(stalled, 20)).catch((error) => error);
  assert.ok(error instanceof ResumableError);
  assert.equal(error.code, "body_incomplete");
  assert.ok(cancelled, "the underlying body is cancelled");
});

Deno.test("withIdleTimeout() has nothing to wrap for a request without body", () => {
  assert.equal(withIdleTimeout(new Request("http://localhost/upload").body, 10), null);
});

Deno.test("withIdleTimeout() never cuts off a body that keeps sending, however long it takes in total", async () => {
  let sent = 0;
  // 12 reads 25 ms apart: 300 ms in all, beyond the 200 ms idle limit, but never silent for long.
  // (Wide margins: timers fire late on a loaded machine.)
  const trickle = new ReadableStream<Uint8Array>({
    async pull(controller) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      if (sent++ === 12) controller.close();
      else controller.enqueue(new Uint8Array([sent]));
    },
  });
  const bytes = new Uint8Array(await bytesOf(guarded(trickle, 200)));
  assert.deepEqual([...bytes], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
});

Deno.test("withIdleTimeout() does not count time the consumer spends between reads", async () => {
  const reader = guarded(ReadableStream.from([new Uint8Array(10), new Uint8Array(7)]), 20).getReader();
  assert.equal((await reader.read()).value?.byteLength, 10);
  // A slow storage write: no read is pending, so the body is not idle.
  await new Promise((resolve) => setTimeout(resolve, 60));
  let total = 0;
  for (let next = await reader.read(); !next.done; next = await reader.read()) total += next.value.byteLength;
  assert.equal(total, 7);
});

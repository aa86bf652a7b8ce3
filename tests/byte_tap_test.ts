import assert from "node:assert/strict";
import { tapBytes } from "../src/_byte_tap.ts";
import { byteStreamOf } from "./_helpers.ts";

/** A byte stream of `pieces`, as a request body is. */
function bytesOf(...pieces: number[][]): ReadableStream<Uint8Array> {
  return byteStreamOf(pieces.map((piece) => new Uint8Array(piece)));
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<number[]> {
  return [...new Uint8Array(await new Response(stream).arrayBuffer())];
}

Deno.test("a tap of a tap nobody has read is one stream that runs both hooks, the first tap's first", async () => {
  const calls: string[] = [];
  const inner = tapBytes(bytesOf([1, 2], [3]), {
    beforeRead: () => calls.push("inner before"),
    afterRead: (bytes) => calls.push(`inner after ${bytes?.byteLength ?? "end"}`),
    finish: () => calls.push("inner finish"),
  });
  const outer = tapBytes(inner, {
    beforeRead: () => calls.push("outer before"),
    afterRead: (bytes) => calls.push(`outer after ${bytes?.byteLength ?? "end"}`),
    finish: () => calls.push("outer finish"),
  });
  // Stacked taps would have locked the first one to read it.
  assert.equal(inner.locked, false);
  assert.deepEqual(await readAll(outer), [1, 2, 3]);
  assert.deepEqual(calls.slice(0, 4), ["inner before", "outer before", "inner after 2", "outer after 2"]);
  assert.deepEqual(calls.slice(-4), ["inner after end", "outer after end", "inner finish", "outer finish"]);
});

Deno.test("a merged tap fails as stacked taps would: the first tap's error, as the second maps it", async () => {
  const inner = tapBytes(bytesOf([1], [2]), {
    afterRead: (bytes) => {
      if (bytes?.[0] === 2) throw new Error("inner refused");
    },
  });
  const outer = tapBytes(inner, {
    readError: (cause) => new Error(`outer saw: ${(cause as Error).message}`),
  });
  await assert.rejects(readAll(outer), /outer saw: inner refused/);
});

Deno.test("a tap that was read from is not merged: the next tap reads what is left through it", async () => {
  const inner = tapBytes(bytesOf([1], [2], [3]), {});
  const reader = inner.getReader();
  assert.deepEqual([...(await reader.read()).value!], [1]);
  reader.releaseLock();
  const outer = tapBytes(inner, {});
  assert.equal(inner.locked, true);
  assert.deepEqual(await readAll(outer), [2, 3]);
});

import assert from "node:assert/strict";
import { type ByteReader, byteReaderOf, hookedReader, tapBytes } from "../src/_byte_tap.ts";
import { isOwned } from "../src/_owned_bytes.ts";
import { byteStreamOf } from "./_helpers.ts";

/** A byte stream of `pieces`, as a request body is. */
function bytesOf(...pieces: number[][]): ReadableStream<Uint8Array> {
  return byteStreamOf(pieces.map((piece) => new Uint8Array(piece)));
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<number[]> {
  return [...new Uint8Array(await new Response(stream).arrayBuffer())];
}

Deno.test("a tap of a tap nobody has read is the same stream, running both hooks, the first tap's first", async () => {
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
  // No second stream: stacked taps would have cost a stream and a pull per read.
  assert.equal(outer, inner);
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

/** A byte stream that never delivers, as a stalled body; `cancelledWith()` is what cancelled it. */
function stalledBody(): { source: ReadableStream<Uint8Array>; cancelledWith: () => unknown } {
  let cancelled: unknown;
  const source = new ReadableStream<Uint8Array>({
    type: "bytes",
    pull: () => new Promise<void>(() => {}),
    cancel: (reason) => {
      cancelled = reason;
    },
  });
  return { source, cancelledWith: () => cancelled };
}

Deno.test("a tap added to an unread tap gets a start call that cancels the shared source", async () => {
  const { source, cancelledWith } = stalledBody();
  let cancelSource: ((reason: unknown) => void) | undefined;
  const merged = tapBytes(tapBytes(source, {}), { start: (cancel) => cancelSource = cancel });
  const reading = readAll(merged);
  cancelSource!("stalled");
  // A cancelled source settles the pending read as done: the stream ends.
  assert.deepEqual(await reading, []);
  assert.equal(cancelledWith(), "stalled");
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

/** Reads `reader` to the end with BYOB reads into one reused 2-byte buffer. */
async function readWith(reader: ByteReader): Promise<number[]> {
  const out: number[] = [];
  let buffer: Uint8Array = new Uint8Array(2);
  for (;;) {
    const { done, value } = await reader.read(buffer);
    if (value) buffer = new Uint8Array(value.buffer);
    if (done) return out;
    out.push(...value!);
  }
}

Deno.test("byteReaderOf() reads an unread tap's source directly, with the tap's hooks", async () => {
  const calls: string[] = [];
  const tapped = tapBytes(bytesOf([1, 2], [3]), {
    beforeRead: () => calls.push("before"),
    afterRead: (bytes) => calls.push(`after ${bytes?.byteLength ?? "end"}`),
    finish: () => calls.push("finish"),
  });
  const reader = byteReaderOf(tapped)!;
  // Not a reader of the tap stream: that one is never locked, so no stream layer runs per read.
  assert.ok(!(reader instanceof ReadableStreamBYOBReader));
  assert.equal(tapped.locked, false);
  assert.deepEqual(await readWith(reader), [1, 2, 3]);
  assert.deepEqual(calls, ["before", "after 2", "before", "after 1", "before", "after end", "finish"]);
});

Deno.test("byteReaderOf(): a hook's error fails the read, ends the tap and cancels its source", async () => {
  let cancelled: unknown;
  let finished = 0;
  const source = new ReadableStream<Uint8Array>({
    type: "bytes",
    pull(controller) {
      controller.enqueue(new Uint8Array([9, 9]));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const refusal = new Error("too many bytes");
  const tapped = tapBytes(source, {
    afterRead() {
      throw refusal;
    },
    finish: () => finished++,
  });
  const reader = byteReaderOf(tapped)!;
  await assert.rejects(reader.read(new Uint8Array(4)), (error) => error === refusal);
  assert.equal(cancelled, refusal);
  assert.equal(finished, 1);
});

Deno.test("byteReaderOf() gives a BYOB reader of other byte streams, and none of streams that are not", () => {
  assert.ok(byteReaderOf(bytesOf([1])) instanceof ReadableStreamBYOBReader);
  assert.equal(byteReaderOf(ReadableStream.from([new Uint8Array([1])])), undefined);
  // A tap of a stream that is not a byte stream is not one either.
  assert.equal(byteReaderOf(tapBytes(ReadableStream.from([new Uint8Array([1])]), {})), undefined);
  // A tap somebody already reads is read as a stream, with a BYOB reader of its own.
  const tapped = tapBytes(bytesOf([1]), {});
  tapped.getReader().releaseLock();
  assert.ok(byteReaderOf(tapped) !== undefined);
});

Deno.test("hookedReader() reads a byte stream into the caller's buffers, running every set of hooks in turn", async () => {
  const calls: string[] = [];
  const starts: ((reason: unknown) => void)[] = [];
  const setOf = (name: string) => ({
    start: (cancel: (reason: unknown) => void) => starts.push(cancel),
    beforeRead: () => calls.push(`${name} before`),
    afterRead: (bytes: Uint8Array | undefined) => calls.push(`${name} after ${bytes?.byteLength ?? "end"}`),
    finish: () => calls.push(`${name} finish`),
  });
  const reader = hookedReader(bytesOf([1, 2], [3]), [setOf("idle"), setOf("limit")]);
  assert.equal(reader.plain, undefined);
  // Each set's start, once: the idle timer cancels the source through it.
  assert.equal(starts.length, 2);
  assert.deepEqual(await readWith(reader.byob!), [1, 2, 3]);
  assert.deepEqual(calls.slice(0, 4), ["idle before", "limit before", "idle after 2", "limit after 2"]);
  assert.deepEqual(calls.slice(-4), ["idle after end", "limit after end", "idle finish", "limit finish"]);
});

Deno.test("hookedReader() hands out the chunks of a stream that is not a byte stream, marked as the body's own", async () => {
  const pieces = [new Uint8Array([1, 2]), new Uint8Array([3])];
  const reader = hookedReader(ReadableStream.from(pieces), [{}], true);
  assert.equal(reader.byob, undefined);
  const first = await reader.plain!.read();
  // The very piece, not a copy, and freeable once stored (see _owned_bytes.ts).
  assert.equal(first.value, pieces[0]);
  assert.ok(isOwned(first.value!));
  assert.equal((await reader.plain!.read()).value, pieces[1]);
  assert.equal((await reader.plain!.read()).done, true);
});

Deno.test("hookedReader(): a failed read is mapped by the hooks and finishes them once", async () => {
  let cancelled: unknown;
  let finished = 0;
  const source = new ReadableStream<Uint8Array>({
    type: "bytes",
    pull: (controller) => controller.error(new Error("connection reset")),
    cancel: (reason) => {
      cancelled = reason;
    },
  });
  const reader = hookedReader(source, [
    {
      readError: (cause) => new Error(`body broke off: ${(cause as Error).message}`),
      finish: () => finished++,
    },
  ]);
  await assert.rejects(reader.byob!.read(new Uint8Array(4)), /body broke off: connection reset/);
  assert.equal(finished, 1);
  // The source had already failed; a cancel of it is a no-op, and nothing is left pending.
  assert.equal(cancelled, undefined);
  await reader.byob!.cancel("again");
  assert.equal(finished, 1);
});

Deno.test("hookedReader(): a cancel settles a pending read as done and finishes the hooks", async () => {
  const { source, cancelledWith } = stalledBody();
  let finished = 0;
  let cancelSource: ((reason: unknown) => void) | undefined;
  const reader = hookedReader(source, [{
    start: (cancel) => cancelSource = cancel,
    finish: () => finished++,
  }]);
  const pending = reader.byob!.read(new Uint8Array(4));
  cancelSource!("stalled");
  assert.equal((await pending).done, true);
  assert.equal(cancelledWith(), "stalled");
  assert.equal(finished, 1);
});

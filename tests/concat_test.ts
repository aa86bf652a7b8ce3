import assert from "node:assert/strict";
import { concatLazily } from "../src/_concat.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

/** A stream of `pieces` that records whether it was cancelled. */
function tracked(pieces: Uint8Array[]) {
  const state = { cancelled: false };
  let next = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull: (controller) => next < pieces.length ? controller.enqueue(pieces[next++]!) : controller.close(),
    cancel: () => {
      state.cancelled = true;
    },
  });
  return { stream, state };
}

Deno.test("concatLazily() opens each stream only after the one before ends, in order", async () => {
  const opened: number[] = [];
  const stream = concatLazily(3, (index) => {
    opened.push(index);
    return Promise.resolve(tracked([bytes(index), bytes(index * 10)]).stream);
  });
  const reader = stream.getReader();
  assert.deepEqual((await reader.read()).value, bytes(1));
  assert.deepEqual(opened, [1]);
  const rest: number[] = [];
  for (let read = await reader.read(); !read.done; read = await reader.read()) rest.push(...read.value);
  assert.deepEqual(rest, [10, 2, 20, 3, 30]);
  assert.deepEqual(opened, [1, 2, 3]);
});

Deno.test("concatLazily() cancels the stream being read, and one whose opening the cancel overtook", async () => {
  const first = tracked([bytes(1), bytes(2)]);
  const reading = concatLazily(2, () => Promise.resolve(first.stream)).getReader();
  await reading.read();
  await reading.cancel("stop");
  assert.equal(first.state.cancelled, true);

  const late = tracked([bytes(1)]);
  let finishOpening!: () => void;
  const opening = new Promise<void>((resolve) => finishOpening = resolve);
  const reader = concatLazily(1, async () => {
    await opening;
    return late.stream;
  }).getReader();
  const read = reader.read();
  await new Promise((resolve) => setTimeout(resolve, 0));
  const cancelled = reader.cancel("stop");
  finishOpening();
  await cancelled;
  assert.equal((await read).done, true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(late.state.cancelled, true, "the stream opened after the cancel was cancelled too");
});

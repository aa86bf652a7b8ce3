import assert from "node:assert/strict";
import { allowedChunkSizes, chunkCount, chunkLayout, chunkSizeIn, largestLegalChunk } from "../src/layout.ts";

const MiB = 1024 * 1024;

function sizes(total: number, kind: "floor" | "ceil"): number[] {
  const layout = chunkLayout(total, MiB);
  return Array.from({ length: chunkCount(layout, kind) }, (_, i) => chunkSizeIn(layout, kind, i + 1)!);
}

Deno.test("chunkLayout() cuts files exactly as resumable.js and flow.js do (docs/protocol.md §5 table)", () => {
  const table: [number, number[], number[]][] = [
    [0, [0], [0]],
    [1, [1], [1]],
    [500_000, [500_000], [500_000]],
    [2 * MiB - 1, [2 * MiB - 1], [MiB, MiB - 1]],
    [2 * MiB, [MiB, MiB], [MiB, MiB]],
    [2.5 * MiB, [MiB, 1.5 * MiB], [MiB, MiB, 0.5 * MiB]],
    [3 * MiB, [MiB, MiB, MiB], [MiB, MiB, MiB]],
  ];
  for (const [total, normal, forced] of table) {
    assert.deepEqual(sizes(total, "floor"), normal, `normal layout of ${total}`);
    assert.deepEqual(sizes(total, "ceil"), forced, `forceChunkSize layout of ${total}`);
    assert.equal(sizes(total, "floor").reduce((a, b) => a + b, 0), total);
  }
});

Deno.test("allowedChunkSizes() admits both layouts only where they differ", () => {
  const layout = chunkLayout(2.5 * MiB, MiB);
  assert.deepEqual(allowedChunkSizes(layout, 1), [MiB]);
  assert.deepEqual(allowedChunkSizes(layout, 2).sort(), [1.5 * MiB, MiB].sort());
  assert.deepEqual(allowedChunkSizes(layout, 3), [0.5 * MiB]);
  assert.deepEqual(allowedChunkSizes(layout, 4), []);
  assert.deepEqual(allowedChunkSizes(layout, 0), []);
  assert.deepEqual(allowedChunkSizes(chunkLayout(4 * MiB, MiB), 4), [MiB]);
});

Deno.test("largestLegalChunk() is twice the chunk size less one", () => {
  assert.equal(largestLegalChunk(MiB), 2 * MiB - 1);
  assert.equal(Math.max(...sizes(3 * MiB - 1, "floor")), largestLegalChunk(MiB));
});

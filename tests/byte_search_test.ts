import assert from "node:assert/strict";
import { indexOf, needleOf } from "../src/_byte_search.ts";
import { seededBytes } from "./_helpers.ts";

const DELIMITER = "\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW";

/** The first index of `needle` in `haystack` at or after `from`, compared byte by byte. */
function naiveIndexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let start = from; start + needle.length <= haystack.length; start++) {
    for (let j = 0; j < needle.length; j++) if (haystack[start + j] !== needle[j]) continue outer;
    return start;
  }
  return -1;
}

Deno.test("indexOf() finds the first delimiter wherever it lies, across the boundaries of its four lanes", () => {
  const needle = needleOf(DELIMITER);
  const length = needle.bytes.length;
  for (const size of [20_000, 65_536 + 3]) {
    for (const from of [0, 1, 77]) {
      const quarter = (size - from) >> 2;
      const laneStarts = [from, from + quarter, from + 2 * quarter, from + 3 * quarter, size];
      for (const boundary of laneStarts) {
        for (let offset = -length - 1; offset <= length + 1; offset++) {
          const at = boundary + offset;
          if (at < from || at + length > size) continue;
          const haystack = seededBytes(size, size + at);
          haystack.set(needle.bytes, at);
          assert.equal(
            indexOf(haystack, needle, from),
            naiveIndexOf(haystack, needle.bytes, from),
            `at ${at}`,
          );
        }
      }
    }
  }
});

Deno.test("indexOf() returns the earliest of several delimiters, and -1 for none (random, with near misses)", () => {
  const needle = needleOf(DELIMITER);
  const length = needle.bytes.length;
  for (let trial = 0; trial < 400; trial++) {
    const size = 1_000 + (trial * 7_919) % 60_000;
    const haystack = seededBytes(size, trial + 1);
    const plants = trial % 4;
    for (let k = 0; k < plants; k++) haystack.set(needle.bytes, (trial * 131 + k * 9_973) % (size - length));
    // Near misses: the delimiter with one byte changed, and its last byte alone, many times.
    for (let k = 0; k < 20; k++) {
      const at = (trial * 37 + k * 2_003) % (size - length);
      const decoy = needle.bytes.slice();
      const changed = (k * 5) % (length - 1);
      decoy[changed] = decoy[changed]! ^ 0x20;
      haystack.set(decoy, at);
      haystack[(at + 1_009) % size] = needle.bytes[length - 1]!;
    }
    const from = trial % 50;
    assert.equal(
      indexOf(haystack, needle, from),
      naiveIndexOf(haystack, needle.bytes, from),
      `trial ${trial}`,
    );
  }
});

Deno.test("indexOf() finds short needles, and one at the very end", () => {
  const headersEnd = needleOf("\r\n\r\n");
  const haystack = seededBytes(30_000, 5).map((byte) => byte === 13 ? 12 : byte);
  assert.equal(indexOf(haystack, headersEnd, 0), -1);
  haystack.set([13, 10, 13, 10], haystack.length - 4);
  assert.equal(indexOf(haystack, headersEnd, 0), haystack.length - 4);
  assert.equal(indexOf(haystack, headersEnd, haystack.length - 3), -1);
  assert.throws(() => needleOf(""), RangeError);
});

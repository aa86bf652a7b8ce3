// Finding a multipart delimiter in file data: the one step of the multipart reader that touches
// (a fraction of) every byte of an upload.

/** A byte string to search for, with Horspool's table: how far the window may move when its last byte is `b`. */
export interface Needle {
  bytes: Uint8Array;
  /** Bytes, not 32-bit integers (a delimiter is at most 74 bytes): 78 against 104 µs per MiB searched. */
  shifts: Uint8Array;
}

const encoder = new TextEncoder();

/** The needle for `text`, encoded as UTF-8. */
export function needleOf(text: string): Needle {
  const bytes = encoder.encode(text);
  if (bytes.length === 0 || bytes.length > 255) throw new RangeError("A needle is 1 to 255 bytes long");
  const shifts = new Uint8Array(256).fill(bytes.length);
  for (let i = 0; i < bytes.length - 1; i++) shifts[bytes[i]!] = bytes.length - 1 - i;
  return { bytes, shifts };
}

// Below this many bytes, one lane: splitting would cost more than it saves.
const MIN_LANES_SPAN = 8 * 1024;

/**
 * Index of `needle` in `haystack` at or after `from`, or -1. Boyer-Moore-Horspool: in file data the
 * window moves by about the delimiter's length per step. (Searching for its first byte natively
 * instead stopped at every CR, once per 256 random bytes, and took a quarter of the server's time.)
 *
 * Each step waits for the byte it reads and then for the table entry that byte selects, so one scan
 * is bound by the latency of those loads, not by work. Four scans of a quarter each, interleaved,
 * take about the time of one: 2.6 times faster over 256 KiB of random data (`deno task
 * bench:search`). A match in an earlier quarter wins.
 */
export function indexOf(haystack: Uint8Array, needle: Needle, from: number): number {
  const span = haystack.length - from;
  if (span < MIN_LANES_SPAN) return indexOfOneLane(haystack, needle, from);
  const { bytes, shifts } = needle;
  const last = bytes.length - 1;
  const lastByte = bytes[last]!;
  const quarter = span >> 2;
  // Lane k checks the windows that start in its quarter; `at` is the window's last byte.
  const bStart = from + quarter, cStart = bStart + quarter, dStart = cStart + quarter;
  const aStop = bStart + last, bStop = cStart + last, cStop = dStart + last, dStop = haystack.length;
  let a = from + last, b = bStart + last, c = cStart + last, d = dStart + last;
  let foundB = -1, foundC = -1, foundD = -1;
  while (a < aStop && b < bStop && c < cStop && d < dStop) {
    const wa = haystack[a]!, wb = haystack[b]!, wc = haystack[c]!, wd = haystack[d]!;
    if (wa === lastByte && matchesAt(haystack, bytes, a - last)) return a - last;
    if (wb === lastByte && foundB < 0 && matchesAt(haystack, bytes, b - last)) foundB = b - last;
    if (wc === lastByte && foundC < 0 && matchesAt(haystack, bytes, c - last)) foundC = c - last;
    if (wd === lastByte && foundD < 0 && matchesAt(haystack, bytes, d - last)) foundD = d - last;
    a += shifts[wa]!;
    b += shifts[wb]!;
    c += shifts[wc]!;
    d += shifts[wd]!;
  }
  // One lane reached its end; the others are close to theirs. Finish them in order.
  let found = scanFrom(haystack, needle, a, aStop);
  if (found >= 0) return found;
  found = foundB >= 0 ? foundB : scanFrom(haystack, needle, b, bStop);
  if (found >= 0) return found;
  found = foundC >= 0 ? foundC : scanFrom(haystack, needle, c, cStop);
  if (found >= 0) return found;
  return foundD >= 0 ? foundD : scanFrom(haystack, needle, d, dStop);
}

/** {@linkcode indexOf} with one scan: for short haystacks, and the reference of bench/byte_search_bench.ts. */
export function indexOfOneLane(haystack: Uint8Array, needle: Needle, from: number): number {
  return scanFrom(haystack, needle, from + needle.bytes.length - 1, haystack.length);
}

/** One Horspool scan while the window's last byte `at` is before `stop`. */
function scanFrom(haystack: Uint8Array, { bytes, shifts }: Needle, at: number, stop: number): number {
  const last = bytes.length - 1;
  const lastByte = bytes[last]!;
  while (at < stop) {
    const byte = haystack[at]!;
    if (byte === lastByte && matchesAt(haystack, bytes, at - last)) return at - last;
    at += shifts[byte]!;
  }
  return -1;
}

/** Whether `bytes` but its last byte (already compared) is at `start`. */
function matchesAt(haystack: Uint8Array, bytes: Uint8Array, start: number): boolean {
  const last = bytes.length - 1;
  let j = 0;
  while (j < last && haystack[start + j] === bytes[j]) j++;
  return j === last;
}

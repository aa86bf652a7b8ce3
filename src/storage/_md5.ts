/**
 * MD5 (RFC 1321), for the `Content-MD5` header S3 requires on DeleteObjects requests. Web Crypto has
 * no MD5, and `node:crypto` would tie the S3 storage to runtimes that provide it; the bodies it
 * hashes are a few tens of KB. Not for anything that needs a secure hash.
 *
 * @module
 */

// The sines of 1..64, scaled to 32 bits (RFC 1321, 3.4).
const K = Uint32Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32));

// deno-fmt-ignore
const SHIFTS = new Uint8Array([
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
  5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
]);

/** The MD5 digest of `data`. */
export function md5(data: Uint8Array): Uint8Array {
  // Padding: a 1 bit, zeros up to 56 bytes mod 64, then the length in bits, little-endian.
  const padded = new Uint8Array((((data.byteLength + 8) >>> 6) + 1) << 6);
  padded.set(data);
  padded[data.byteLength] = 0x80;
  const view = new DataView(padded.buffer);
  const bits = data.byteLength * 8;
  view.setUint32(padded.byteLength - 8, bits >>> 0, true);
  view.setUint32(padded.byteLength - 4, Math.floor(bits / 2 ** 32), true);

  let a0 = 0x67452301, b0 = 0xefcdab89, c0 = 0x98badcfe, d0 = 0x10325476;
  const words = new Uint32Array(16);
  for (let block = 0; block < padded.byteLength; block += 64) {
    for (let i = 0; i < 16; i++) words[i] = view.getUint32(block + i * 4, true);
    let a = a0, b = b0, c = c0, d = d0;
    for (let i = 0; i < 64; i++) {
      let f: number, g: number;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) & 15;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) & 15;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) & 15;
      }
      f = (f + a + K[i]! + words[g]!) | 0;
      a = d;
      d = c;
      c = b;
      const s = SHIFTS[i]!;
      b = (b + ((f << s) | (f >>> (32 - s)))) | 0;
    }
    a0 = (a0 + a) | 0;
    b0 = (b0 + b) | 0;
    c0 = (c0 + c) | 0;
    d0 = (d0 + d) | 0;
  }
  const digest = new Uint8Array(16);
  const out = new DataView(digest.buffer);
  [a0, b0, c0, d0].forEach((word, i) => out.setUint32(i * 4, word >>> 0, true));
  return digest;
}

/** The base64 MD5 digest of `data`, as the `Content-MD5` header carries it (RFC 1864). */
export function contentMd5(data: Uint8Array): string {
  return btoa(String.fromCharCode(...md5(data)));
}

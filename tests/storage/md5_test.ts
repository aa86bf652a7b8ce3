import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { contentMd5, md5 } from "../../src/storage/_md5.ts";

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("md5() matches the RFC 1321 test suite", () => {
  const suite: [string, string][] = [
    ["", "d41d8cd98f00b204e9800998ecf8427e"],
    ["a", "0cc175b9c0f1b6a831c399e269772661"],
    ["abc", "900150983cd24fb0d6963f7d28e17f72"],
    ["message digest", "f96b697d7cb7938d525a2f31aaf161d0"],
    ["abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"],
    ["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"],
    [
      "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
      "57edf4a22be3c955ac49da2e2107b67a",
    ],
  ];
  for (const [input, expected] of suite) assert.equal(hex(md5(text(input))), expected, JSON.stringify(input));
});

Deno.test("md5() agrees with node:crypto at every length around the block and padding edges", () => {
  const data = new Uint8Array(70_000);
  for (let i = 0; i < data.byteLength; i += 65_536) crypto.getRandomValues(data.subarray(i, i + 65_536));
  for (let length = 0; length <= 70_000; length += length < 200 ? 1 : 997) {
    const input = data.subarray(0, length);
    assert.equal(hex(md5(input)), createHash("md5").update(input).digest("hex"), `length ${length}`);
  }
});

Deno.test("contentMd5() is the base64 digest the Content-MD5 header carries", () => {
  const body = text("<Delete><Object><Key>a</Key></Object></Delete>");
  assert.equal(contentMd5(body), createHash("md5").update(body).digest("base64"));
});

import assert from "node:assert/strict";
import { sha256 } from "../src/_sha256.ts";

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("sha256() matches the FIPS 180-4 examples", () => {
  const text = (s: string) => new TextEncoder().encode(s);
  assert.equal(hex(sha256(text(""))), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(hex(sha256(text("abc"))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert.equal(
    hex(sha256(text("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});

Deno.test("sha256() agrees with Web Crypto at every length around the block and padding edges", async () => {
  const data = crypto.getRandomValues(new Uint8Array(1100));
  for (let length = 0; length <= 1100; length += length < 200 ? 1 : 37) {
    const input = data.subarray(0, length);
    const expected = new Uint8Array(await crypto.subtle.digest("SHA-256", input));
    assert.equal(hex(sha256(input)), hex(expected), `length ${length}`);
  }
});

import assert from "node:assert/strict";
import { isFileId, isUploadKey, newFileId, sanitizeFileName, uploadKey } from "../src/identifier.ts";

Deno.test("uploadKey() is hex, deterministic, and different per scope", () => {
  const key = uploadKey("", "123-photojpg");
  assert.ok(isUploadKey(key));
  assert.equal(key, uploadKey("", "123-photojpg"));
  assert.notEqual(key, uploadKey("alice", "123-photojpg"));
  assert.notEqual(uploadKey("a", "b\u0000c"), uploadKey("a\u0000b", "c"));
  for (const hostile of ["../../etc", "/abs", "a%2f..%2fb", "x\u0000y", "x".repeat(10_000)]) {
    assert.ok(isUploadKey(uploadKey("", hostile)));
  }
});

Deno.test("uploadKey() is stable across versions: the first 128 bits of SHA-256 of the length-prefixed pair", () => {
  // Keys name upload folders on disk: a new release must find uploads an older one started.
  assert.equal(uploadKey("", "123-photojpg"), "f7dbe479dd71d80f22970178123b9055");
  assert.equal(uploadKey("alice", "123-photojpg"), "102efb39ca95c5f6dc909d99d465d4e7");
});

Deno.test("uploadKey() gives the same key whether it remembers it or computes it again", () => {
  const first = ["a", "b", "c"].map((id) => uploadKey("scope", id));
  // Remembered: asked again at once.
  assert.deepEqual(["a", "b", "c"].map((id) => uploadKey("scope", id)), first);
  // Computed again: more keys than it remembers pushed them out.
  const others = new Set<string>();
  for (let i = 0; i < 5000; i++) others.add(uploadKey("scope", `other-${i}`));
  assert.equal(others.size, 5000);
  assert.deepEqual(["a", "b", "c"].map((id) => uploadKey("scope", id)), first);
  assert.notEqual(uploadKey("scope2", "a"), first[0]);
});

Deno.test("newFileId() makes distinct ids that isFileId() accepts", () => {
  const ids = new Set(Array.from({ length: 1000 }, newFileId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.ok(isFileId(id));
  assert.ok(!isFileId("../x"));
});

Deno.test("sanitizeFileName() makes one safe path segment of any name", () => {
  const table: [string, string][] = [
    ["photo.jpg", "photo.jpg"],
    ["../../etc/passwd", "passwd"],
    ["C:\\Windows\\system.ini", "system.ini"],
    ["/absolute/path.txt", "path.txt"],
    ["..", "file"],
    [".", "file"],
    ["", "file"],
    ["a\u0000b\nc.txt", "a_b_c.txt"],
    ["CON", "_CON"],
    ["con.txt", "_con.txt"],
    ["evil\u202Egnp.exe", "evil_gnp.exe"],
    ['a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"],
    [".hidden", "hidden"],
    ["Fotografía.jpg", "Fotografía.jpg"],
  ];
  for (const [input, expected] of table) {
    assert.equal(sanitizeFileName(input), expected, JSON.stringify(input));
  }
});

Deno.test("sanitizeFileName() cuts long names to 200 bytes, keeping the extension and whole characters", () => {
  const long = sanitizeFileName("é".repeat(300) + ".tar.gz");
  assert.ok(new TextEncoder().encode(long).length <= 200);
  assert.ok(long.endsWith(".gz"));
  assert.ok(!long.includes("\uFFFD"));
});

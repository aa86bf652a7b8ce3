import assert from "node:assert/strict";
import { absolutePath, joinPath } from "../../src/storage/_path.ts";

Deno.test("absolutePath() resolves a relative directory against the working directory", () => {
  assert.equal(absolutePath("uploads", false), `${Deno.cwd()}/uploads`);
  assert.equal(absolutePath("./a/../uploads/", false), `${Deno.cwd()}/uploads`);
});

Deno.test("absolutePath() resolves ., .. and repeated separators of an absolute directory", () => {
  assert.equal(absolutePath("/srv//data/./x/../uploads", false), "/srv/data/uploads");
  assert.equal(absolutePath("/../..", false), "/");
  assert.equal(absolutePath("/", false), "/");
});

Deno.test("absolutePath() understands Windows drives, separators and shares", () => {
  assert.equal(absolutePath("C:\\srv\\x\\..\\uploads", true), "C:\\srv\\uploads");
  assert.equal(absolutePath("D:/srv/uploads/", true), "D:\\srv\\uploads");
  assert.equal(absolutePath("\\\\host\\share\\uploads", true), "\\\\host\\share\\uploads");
});

Deno.test("joinPath() appends names with one separator, also to a root that ends with one", () => {
  assert.equal(joinPath("/srv/uploads", "uploads", "abc", "chunks"), "/srv/uploads/uploads/abc/chunks");
  assert.equal(joinPath("/", "uploads"), "/uploads");
});

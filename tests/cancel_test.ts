import assert from "node:assert/strict";
import { createResumableHandler } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { uploadKey } from "../src/identifier.ts";
import { chunkRequest, clientChunks, seededBytes, testRequest } from "./_helpers.ts";

const BASE = "http://localhost/upload";

function cancelRequest(identifier: string, method = "DELETE", dialect = "resumable") {
  return new Request(`${BASE}?${dialect}Identifier=${encodeURIComponent(identifier)}`, { method });
}

Deno.test("cancel removes an upload's chunks and record, and says so twice (idempotent)", async () => {
  const storage = new MemoryStorage();
  const handler = createResumableHandler({ storage });
  const chunks = clientChunks(seededBytes(3000, 1), { identifier: "3000-cancel", chunkSize: 1000 });
  for (const chunk of chunks.slice(0, 2)) {
    assert.equal((await handler(chunkRequest(BASE, chunk))).status, 200);
  }
  const key = uploadKey("", "3000-cancel");
  assert.equal(await storage.countChunks(key), 2);

  for (let i = 0; i < 2; i++) {
    const response = await handler(cancelRequest("3000-cancel"));
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { identifier: "3000-cancel", cancelled: true, complete: false });
  }
  assert.equal(await storage.countChunks(key), 0);
  assert.equal(await storage.getUpload(key), undefined);
  const test = await handler(testRequest(BASE, chunks[0]!));
  assert.equal(test.status, 204);
  // The same identifier starts afresh and completes.
  for (const chunk of chunks) await (await handler(chunkRequest(BASE, chunk))).body?.cancel();
  assert.ok(await storage.getCompleted(key));
});

Deno.test("cancel keeps a completed upload, and a never-seen identifier is cancelled without error", async () => {
  const storage = new MemoryStorage();
  const handler = createResumableHandler({ storage });
  const [chunk] = clientChunks(seededBytes(500, 2), { identifier: "500-done", chunkSize: 1000 });
  await (await handler(chunkRequest(BASE, chunk!))).body?.cancel();
  const done = await handler(cancelRequest("500-done", "DELETE", "flow"));
  assert.deepEqual(await done.json(), { identifier: "500-done", cancelled: false, complete: true });
  assert.equal((await handler(testRequest(BASE, chunk!))).status, 200);
  const unknown = await handler(cancelRequest("never-seen"));
  assert.equal(unknown.status, 200);
  assert.equal((await unknown.json()).cancelled, true);
});

Deno.test("cancel is scoped: one user cannot cancel another's upload with the same identifier", async () => {
  const storage = new MemoryStorage();
  const handler = createResumableHandler({ storage, scope: (r) => r.headers.get("x-user") ?? "" });
  const [first] = clientChunks(seededBytes(3000, 3), { identifier: "shared", chunkSize: 1000 });
  const post = chunkRequest(BASE, first!);
  post.headers.set("x-user", "alice");
  await (await handler(post)).body?.cancel();
  const mallory = cancelRequest("shared");
  mallory.headers.set("x-user", "mallory");
  await (await handler(mallory)).body?.cancel();
  assert.equal(await storage.countChunks(uploadKey("alice", "shared")), 1);
});

Deno.test("cancel needs an identifier, follows cancelMethod, and can be turned off", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage() });
  const missing = await handler(new Request(BASE, { method: "DELETE" }));
  assert.equal(missing.status, 400);
  assert.equal((await missing.json()).error.code, "invalid_identifier");

  const viaPatch = createResumableHandler({ storage: new MemoryStorage(), cancelMethod: "PATCH" });
  assert.equal((await viaPatch(cancelRequest("x", "PATCH"))).status, 200);
  const deleted = await viaPatch(cancelRequest("x", "DELETE"));
  assert.equal(deleted.status, 405);
  await deleted.body?.cancel();

  const off = createResumableHandler({ storage: new MemoryStorage(), cancelMethod: false });
  const refused = await off(cancelRequest("x"));
  assert.equal(refused.status, 405);
  assert.equal(refused.headers.get("allow"), "GET, POST, OPTIONS");
  await refused.body?.cancel();
  assert.throws(() => createResumableHandler({ cancelMethod: "POST" }), TypeError);
  assert.throws(() => createResumableHandler({ cancelMethod: "GET" }), TypeError);
});

import assert from "node:assert/strict";
import { type AuthorizeInfo, createResumableHandler } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { chunkRequest, clientChunks, seededBytes, serve, sha256, testRequest } from "./_helpers.ts";

const BASE = "http://localhost/upload";

Deno.test("two users upload same-name, same-size, different files concurrently and each gets their own bytes", async () => {
  const parent = await Deno.makeTempDir({ prefix: "resumable-scope-" });
  const storage = new FileSystemStorage({ directory: `${parent}/root` });
  const handler = createResumableHandler({
    storage,
    // The namespace comes from the (here: trusted) user header; in production, a verified session.
    scope: (request) => request.headers.get("x-user") ?? "",
  });
  const server = await serve(handler);
  try {
    const users = ["alice", "bob"].map((user, i) => {
      const data = seededBytes(40_000, 100 + i);
      // Same name and size, so the clients' default identifiers are equal: "40000-reportpdf".
      const chunks = clientChunks(data, {
        identifier: "40000-reportpdf",
        fileName: "report.pdf",
        chunkSize: 4096,
      });
      return { user, data, chunks };
    });
    const results = await Promise.all(users.map(async ({ user, chunks }) => {
      let last;
      // Three at a time, as both libraries do by default, and interleaved with the other user.
      for (let i = 0; i < chunks.length; i += 3) {
        const batch = await Promise.all(
          chunks.slice(i, i + 3).map(async (chunk) => {
            const request = chunkRequest(server.url, chunk, i % 2 ? "octet" : "multipart");
            request.headers.set("x-user", user);
            const response = await fetch(request);
            const body = await response.json();
            assert.equal(response.status, 200, JSON.stringify(body));
            return body;
          }),
        );
        last = batch.find((body) => body.complete) ?? last;
      }
      return last;
    }));
    for (const [i, { data }] of users.entries()) {
      const id = results[i].file.id;
      const opened = await storage.openFile(id);
      assert.ok(opened);
      const bytes = new Uint8Array(await new Response(opened.body).arrayBuffer());
      assert.equal(await sha256(bytes), await sha256(data), `${users[i]!.user} got their own bytes`);
    }
    assert.notEqual(results[0].file.id, results[1].file.id);
  } finally {
    await server.close();
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("authorize answers 401 for unauthorized, 403 for false, and sees action, scope and chunk", async () => {
  const seen: AuthorizeInfo[] = [];
  const handler = createResumableHandler({
    storage: new MemoryStorage(),
    scope: (request) => request.headers.get("x-user") ?? "",
    authorize: (_request, info) => {
      seen.push(info);
      if (info.scope === "") return "unauthorized";
      return info.scope === "alice";
    },
  });
  const [chunk] = clientChunks(seededBytes(100, 1), {
    identifier: "100-a",
    chunkSize: 1000,
    dialect: "flow",
  });
  const as = (request: Request, user?: string) => {
    if (user) request.headers.set("x-user", user);
    return handler(request);
  };
  const anonymous = await as(chunkRequest(BASE, chunk!));
  assert.equal(anonymous.status, 401);
  assert.equal((await anonymous.json()).error.code, "unauthorized");
  const mallory = await as(chunkRequest(BASE, chunk!), "mallory");
  assert.equal(mallory.status, 403);
  assert.equal((await mallory.json()).error.code, "forbidden");
  const malloryTest = await as(testRequest(BASE, chunk!), "mallory");
  assert.equal(malloryTest.status, 403);
  await malloryTest.body?.cancel();
  const cancel = await as(new Request(`${BASE}?flowIdentifier=100-a`, { method: "DELETE" }), "mallory");
  assert.equal(cancel.status, 403);
  await cancel.body?.cancel();
  const alice = await as(chunkRequest(BASE, chunk!), "alice");
  assert.equal(alice.status, 200);
  await alice.body?.cancel();
  assert.deepEqual(seen.at(-1), {
    action: "upload",
    scope: "alice",
    identifier: "100-a",
    fileName: "file.bin",
    totalSize: 100,
    chunkNumber: 1,
  });
  assert.deepEqual(seen.map((info) => info.action), ["upload", "upload", "test", "cancel", "upload"]);
});

Deno.test("authorize refusals store nothing, and a throwing hook is a 500 reported to onError", async () => {
  const storage = new MemoryStorage();
  const errors: unknown[] = [];
  const handler = createResumableHandler({
    storage,
    onError: (error) => errors.push(error),
    authorize: (request) => {
      if (request.headers.has("x-boom")) throw new Error("auth service down");
      return false;
    },
  });
  const [chunk] = clientChunks(seededBytes(100, 2), { identifier: "100-b", chunkSize: 1000 });
  const refused = await handler(chunkRequest(BASE, chunk!, "octet"));
  assert.equal(refused.status, 403);
  await refused.body?.cancel();
  for await (const _ of storage.listUploads()) assert.fail("a refused upload left a record");
  const boom = chunkRequest(BASE, chunk!, "octet");
  boom.headers.set("x-boom", "1");
  const failed = await handler(boom);
  assert.equal(failed.status, 500);
  await failed.body?.cancel();
  assert.equal(errors.length, 1);
});

import assert from "node:assert/strict";
import { createResumableHandler, type UploadStorage } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { uploadKey } from "../src/identifier.ts";
import { chunkRequest, clientChunks, MEMORY_AND_DISK, seededBytes, serve, testRequest } from "./_helpers.ts";

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

for (const [name, make] of MEMORY_AND_DISK) {
  Deno.test(`cancel (${name}): an upload that completes while the cancel is on its way is kept, and the cancel says so`, async () => {
    const { storage, cleanup } = await make();
    try {
      const chunks = clientChunks(seededBytes(3000, 4), { identifier: "3000-late", chunkSize: 1000 });
      // The cancel has found the upload incomplete; its last chunk is stored and assembled before the
      // storage acts on the removal (the file system and S3 wait out an assembly under way).
      const removeUpload = storage.removeUpload.bind(storage);
      storage.removeUpload = async (key, options) => {
        assert.equal((await handler(chunkRequest(BASE, chunks[2]!))).status, 200);
        return await removeUpload(key, options);
      };
      const completed: string[] = [];
      const handler = createResumableHandler({
        storage,
        onComplete: ({ file }) => void completed.push(file.id),
      });
      for (const chunk of chunks.slice(0, 2)) await (await handler(chunkRequest(BASE, chunk))).body?.cancel();
      const cancel = await handler(cancelRequest("3000-late"));
      assert.deepEqual(await cancel.json(), { identifier: "3000-late", cancelled: false, complete: true });
      // As for a cancel that came a moment later: the file stays, once, and the same name and size
      // is told it is complete.
      assert.equal(completed.length, 1);
      const test = await handler(testRequest(BASE, chunks[0]!));
      assert.equal(test.status, 200);
      assert.equal((await test.json()).file.id, completed[0]);
    } finally {
      await cleanup();
    }
  });
}

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

// ---------------------------------------------------------------- a chunk sent before the cancel

/** A storage call held until `release()`: the moment a slow storage or a busy process leaves open. */
function gate() {
  let release!: () => void;
  const opened = new Promise<void>((resolve) => release = resolve);
  let reached!: () => void;
  const arrived = new Promise<void>((resolve) => reached = resolve);
  return {
    /** Resolves once a held call is waiting. */
    arrived,
    release,
    async hold(): Promise<void> {
      reached();
      await opened;
    },
  };
}

/** `storage` with the first call of `method` that `when` picks held at `held`, before it runs. */
function holding<S extends UploadStorage>(
  storage: S,
  method: "getCompleted" | "putChunk",
  held: ReturnType<typeof gate>,
  when: (args: unknown[]) => boolean,
): S {
  let done = false;
  return new Proxy(storage, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function") return value;
      if (name !== method) return value.bind(target);
      return async (...args: unknown[]) => {
        if (!done && when(args)) {
          done = true;
          await held.hold();
        }
        return await value.apply(target, args);
      };
    },
  });
}

async function storedBytes(storage: UploadStorage, key: string): Promise<Uint8Array> {
  const file = await storage.getCompleted(key);
  assert.ok(file, "the upload completed");
  const opened = await storage.openFile(file.id);
  assert.ok(opened);
  return new Uint8Array(await new Response(opened.body).arrayBuffer());
}

/** Cancels `identifier` through `server`, as the app does when the user cancels. */
async function cancelThrough(server: { url: string }, identifier: string): Promise<void> {
  const response = await fetch(cancelRequest(identifier).url.replace(BASE, server.url), { method: "DELETE" });
  assert.equal(response.status, 200);
  await response.body?.cancel();
}

/** Sends `again`, the other file of the same name and size, whole: its bytes must be what is stored. */
async function sendAgain(
  server: { url: string },
  storage: UploadStorage,
  again: ReturnType<typeof clientChunks>,
  bytes: Uint8Array,
): Promise<void> {
  assert.equal((await fetch(testRequest(server.url, again[0]!))).status, 204, "the old chunk is not offered");
  for (const chunk of again) assert.equal((await fetch(chunkRequest(server.url, chunk))).status, 200);
  assert.deepEqual(await storedBytes(storage, uploadKey("", again[0]!.params.resumableIdentifier!)), bytes);
}

for (const [name, make] of MEMORY_AND_DISK) {
  Deno.test(`cancel (${name}): a chunk sent before the cancel that reaches the storage after it does not begin the upload again`, async () => {
    const { storage, cleanup } = await make();
    const held = gate();
    // The old file's first chunk is held on its way in, before its upload record exists.
    const server = await serve(createResumableHandler({
      storage: holding(storage, "getCompleted", held, () => true),
    }));
    try {
      const old = clientChunks(seededBytes(3000, 1), { identifier: "3000-report.pdf", chunkSize: 1000 });
      const again = clientChunks(seededBytes(3000, 2), { identifier: "3000-report.pdf", chunkSize: 1000 });
      const late = fetch(chunkRequest(server.url, old[0]!));
      await held.arrived;
      await cancelThrough(server, "3000-report.pdf");
      held.release();
      const refused = await late;
      assert.equal(refused.status, 503, "retryable, in case the clocks of two processes disagree");
      assert.equal((await refused.json()).error.code, "upload_removed");

      await sendAgain(server, storage, again, seededBytes(3000, 2));
    } finally {
      await server.close();
      await cleanup();
    }
  });

  Deno.test(`cancel (${name}): a chunk whose upload is cancelled and begun again before its bytes are written is not in the new upload`, async () => {
    const { storage, cleanup } = await make();
    const held = gate();
    // Chunk 2 of the old file is held after its upload record was read, before the storage writes it.
    const reported: unknown[] = [];
    const server = await serve(createResumableHandler({
      storage: holding(storage, "putChunk", held, (args) => args[1] === 2),
      onError: (error) => reported.push(error),
    }));
    try {
      const old = clientChunks(seededBytes(3000, 3), { identifier: "3000-photo.jpg", chunkSize: 1000 });
      const again = clientChunks(seededBytes(3000, 4), { identifier: "3000-photo.jpg", chunkSize: 1000 });
      assert.equal((await fetch(chunkRequest(server.url, old[0]!, "octet"))).status, 200);
      const late = fetch(chunkRequest(server.url, old[1]!, "octet"));
      await held.arrived;
      await cancelThrough(server, "3000-photo.jpg");
      // The other file begins, and its first chunk is stored, before the old chunk's bytes are written.
      assert.equal((await fetch(chunkRequest(server.url, again[0]!, "octet"))).status, 200);
      held.release();
      const refused = await late;
      assert.equal(refused.status, 503);
      assert.equal((await refused.json()).error.code, "upload_removed");
      assert.deepEqual(reported, [], "a cancel is not a storage failure");

      assert.equal(
        (await fetch(testRequest(server.url, again[1]!))).status,
        204,
        "the old chunk 2 is not offered",
      );
      for (const chunk of again.slice(1)) {
        assert.equal((await fetch(chunkRequest(server.url, chunk, "octet"))).status, 200);
      }
      assert.deepEqual(await storedBytes(storage, uploadKey("", "3000-photo.jpg")), seededBytes(3000, 4));
    } finally {
      await server.close();
      await cleanup();
    }
  });

  Deno.test(`cancel (${name}): a multipart chunk whose fields were still arriving at the cancel does not begin the upload again`, async () => {
    const { storage, cleanup } = await make();
    const server = await serve(createResumableHandler({ storage }));
    try {
      const old = clientChunks(seededBytes(3000, 5), { identifier: "3000-notes.txt", chunkSize: 1000 });
      const again = clientChunks(seededBytes(3000, 6), { identifier: "3000-notes.txt", chunkSize: 1000 });
      // flow.js' shape: the parameters as fields, then the file. The fields arrive, then the body
      // stalls before the file part while the user cancels.
      const boundary = "----cancelledWhileArriving";
      const encoder = new TextEncoder();
      const fields = Object.entries(old[0]!.params).map(([field, value]) =>
        `--${boundary}\r\nContent-Disposition: form-data; name="${field}"\r\n\r\n${value}\r\n`
      ).join("");
      const filePart = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n` +
        `Content-Type: application/octet-stream\r\n\r\n`;
      let resume!: () => void;
      const stalled = new Promise<void>((resolve) => resume = resolve);
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (sent++ === 0) return controller.enqueue(encoder.encode(fields));
          await stalled;
          controller.enqueue(encoder.encode(filePart));
          controller.enqueue(old[0]!.bytes);
          controller.enqueue(encoder.encode(`\r\n--${boundary}--\r\n`));
          controller.close();
        },
      });
      const late = fetch(server.url, {
        method: "POST",
        headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
        body,
      });
      // Let the handler take the request and read its fields.
      await new Promise((resolve) => setTimeout(resolve, 50));
      await cancelThrough(server, "3000-notes.txt");
      resume();
      const refused = await late;
      assert.equal(refused.status, 503);
      assert.equal((await refused.json()).error.code, "upload_removed");

      await sendAgain(server, storage, again, seededBytes(3000, 6));
    } finally {
      await server.close();
      await cleanup();
    }
  });
}

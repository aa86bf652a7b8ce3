// The last two chunks of an upload arrive together, and one request counts the chunks only after the
// other has completed the upload and its cleanup removed them. resumable.js hands the app whichever
// response it got last, so both must say the upload is complete, with its file.
import assert from "node:assert/strict";
import { createResumableHandler, type UploadStorage } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { S3Storage } from "../src/storage/s3.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { chunkRequest, clientChunks, seededBytes, serve } from "./_helpers.ts";
import { startS3 } from "./storage/_s3rver.ts";

interface Setup {
  /** Two storages on one store: the two requests go to two processes, as behind a load balancer. */
  storages: [UploadStorage, UploadStorage];
  cleanup(): Promise<void>;
}

/**
 * `storage`, whose next `countChunks` waits until `release` resolves; `held` resolves when that
 * count has begun (its chunk is stored by then).
 */
function holdingNextCount(storage: UploadStorage) {
  let began!: () => void;
  const held = new Promise<void>((resolve) => began = resolve);
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let armed = true;
  const count = storage.countChunks.bind(storage);
  storage.countChunks = async (key) => {
    if (armed) {
      armed = false;
      began();
      await released;
    }
    return await count(key);
  };
  return { held, release };
}

const setups: Record<string, () => Promise<Setup>> = {
  async "file system"() {
    const directory = await Deno.makeTempDir({ prefix: "resumable-race-" });
    return {
      storages: [new FileSystemStorage({ directory }), new FileSystemStorage({ directory })],
      cleanup: () => Deno.remove(directory, { recursive: true }),
    };
  },
  memory() {
    const storage = new MemoryStorage();
    return Promise.resolve({ storages: [storage, storage], cleanup: () => Promise.resolve() });
  },
  async S3() {
    const s3 = await startS3();
    const make = () =>
      new S3Storage({
        endpoint: s3.endpoint,
        bucket: s3.bucket,
        credentials: s3.credentials,
        forcePathStyle: true,
      });
    return { storages: [make(), make()], cleanup: () => s3.close() };
  },
  async "Deno KV"() {
    const path = `${await Deno.makeTempDir({ prefix: "resumable-race-kv-" })}/kv.sqlite3`;
    const [a, b] = [await Deno.openKv(path), await Deno.openKv(path)];
    return {
      storages: [new DenoKvStorage({ kv: a }), new DenoKvStorage({ kv: b })],
      async cleanup() {
        a.close();
        b.close();
        await Deno.remove(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      },
    };
  },
};

for (const [name, setup] of Object.entries(setups)) {
  Deno.test(`${name}: of the last two chunks together, the one that counts after the other completed the upload answers complete, with the file`, async () => {
    const { storages: [slow, fast], cleanup } = await setup();
    const servers = [
      await serve(createResumableHandler({ storage: slow })),
      await serve(createResumableHandler({ storage: fast })),
    ];
    try {
      const bytes = seededBytes(3000, 7);
      const [first, second, third] = clientChunks(bytes, {
        identifier: `3000-race-${name}`,
        chunkSize: 1000,
      });
      const send = async (url: string, chunk: typeof first) => {
        const response = await fetch(chunkRequest(url, chunk!, "octet"));
        assert.equal(response.status, 200);
        return await response.json();
      };
      // Both processes have served a chunk before, as processes in service have: their quotas
      // counted the uploads in storage then, with counts of their own.
      for (const server of servers) {
        const [other] = clientChunks(seededBytes(3000, 8), {
          identifier: `3000-other-${server.port}`,
          chunkSize: 1000,
        });
        await send(server.url, other);
      }
      assert.equal((await send(servers[1]!.url, first)).complete, false);
      // Chunk 2 reaches the slow process, is stored, and its count waits; chunk 3 completes the
      // upload on the fast one, whose cleanup removes the chunks.
      const hold = holdingNextCount(slow);
      const late = send(servers[0]!.url, second);
      await hold.held;
      const completing = await send(servers[1]!.url, third);
      assert.equal(completing.complete, true);
      hold.release();
      const answer = await late;
      assert.equal(answer.complete, true, `the late answer: ${JSON.stringify(answer)}`);
      assert.equal(answer.file.id, completing.file.id);
      assert.equal(answer.chunksReceived, 3);
      const opened = await fast.openFile(completing.file.id);
      assert.deepEqual(new Uint8Array(await new Response(opened!.body).arrayBuffer()), bytes);
    } finally {
      for (const server of servers) await server.close();
      await cleanup();
    }
  });
}

Deno.test("a chunk whose storage fails because another request completed its upload meanwhile answers complete and lets go of its body", async () => {
  const storage = new MemoryStorage();
  const handler = createResumableHandler({ storage });
  const chunks = clientChunks(seededBytes(2000, 8), { identifier: "2000-gone", chunkSize: 1000 });
  for (const chunk of chunks) {
    await (await handler(chunkRequest("http://x/upload", chunk, "octet"))).body?.cancel();
  }
  // A copy of chunk 1 that passed the completion check just before the upload completed; its
  // storage then fails before reading a byte (the file-system storage finds its chunk folder gone).
  const getCompleted = storage.getCompleted.bind(storage);
  let checks = 0;
  storage.getCompleted = (key) => checks++ === 0 ? Promise.resolve(undefined) : getCompleted(key);
  storage.putChunk = () =>
    Promise.reject(Object.assign(new Error("ENOENT: chunk folder gone"), { code: "ENOENT" }));
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull: (controller) => controller.enqueue(chunks[0]!.bytes),
    cancel: () => {
      cancelled = true;
    },
  });
  const request = chunkRequest("http://x/upload", chunks[0]!, "octet");
  const response = await handler(
    new Request(
      request.url,
      { method: "POST", headers: request.headers, body, duplex: "half" } as RequestInit,
    ),
  );
  assert.equal(response.status, 200);
  assert.equal((await response.json()).complete, true);
  assert.equal(cancelled, true, "the body was cancelled, not left half read");
});

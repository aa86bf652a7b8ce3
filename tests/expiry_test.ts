import assert from "node:assert/strict";
import { utimes } from "node:fs/promises";
import { createResumableHandler, type UploadStorage } from "../mod.ts";
import { cleanupExpired } from "../src/cleanup.ts";
import { newFileId, uploadKey } from "../src/identifier.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { chunkRequest, clientChunks, listTree, seededBytes, testRequest } from "./_helpers.ts";

const BASE = "http://localhost/upload";
const HOUR = 3600_000;
const DAY = 24 * HOUR;

async function withStorages(fn: (storage: UploadStorage) => Promise<void>) {
  await fn(new MemoryStorage());
  const dir = await Deno.makeTempDir({ prefix: "resumable-expiry-" });
  try {
    await fn(new FileSystemStorage({ directory: dir }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cleanup() expires abandoned uploads after expireAfter and completion records separately, keeping files", async () => {
  await withStorages(async (storage) => {
    const handler = createResumableHandler({ storage, expireAfter: DAY, completedExpireAfter: 7 * DAY });
    const abandoned = clientChunks(seededBytes(3000, 1), { identifier: "3000-abandoned", chunkSize: 1000 });
    const finished = clientChunks(seededBytes(1500, 2), { identifier: "1500-finished", chunkSize: 1000 });
    for (const chunk of abandoned.slice(0, 2)) {
      await (await handler(chunkRequest(BASE, chunk))).body?.cancel();
    }
    const done = await (await handler(chunkRequest(BASE, finished[0]!))).json();
    assert.equal(done.complete, true);

    assert.deepEqual(await handler.cleanup({ now: Date.now() + HOUR }), {
      expired: 0,
      completedExpired: 0,
      kept: 2,
    });
    assert.equal((await handler(testRequest(BASE, abandoned[0]!))).status, 200);

    assert.deepEqual(await handler.cleanup({ now: Date.now() + DAY + HOUR }), {
      expired: 1,
      completedExpired: 0,
      kept: 1,
    });
    assert.equal((await handler(testRequest(BASE, abandoned[0]!))).status, 204);
    assert.equal(await storage.countChunks(uploadKey("", "3000-abandoned")), 0);
    const retest = await handler(testRequest(BASE, finished[0]!));
    assert.equal(retest.status, 200, "a finished upload still tests as present");
    await retest.body?.cancel();

    assert.deepEqual(await handler.cleanup({ now: Date.now() + 8 * DAY }), {
      expired: 0,
      completedExpired: 1,
      kept: 0,
    });
    assert.equal((await handler(testRequest(BASE, finished[0]!))).status, 204);
    const file = await storage.openFile(done.file.id);
    assert.ok(file, "the completed file itself is never expired");
    await file.body.cancel();
  });
});

Deno.test("cleanup() never removes an upload whose chunk is being received, and that upload then completes", async () => {
  await withStorages(async (storage) => {
    const handler = createResumableHandler({ storage });
    const chunks = clientChunks(seededBytes(2000, 3), { identifier: "2000-live", chunkSize: 1000 });
    const stale = clientChunks(seededBytes(2000, 4), { identifier: "2000-stale", chunkSize: 1000 });
    await (await handler(chunkRequest(BASE, stale[0]!))).body?.cancel();
    await (await handler(chunkRequest(BASE, chunks[0]!))).body?.cancel();
    // Chunk 2 arrives slowly: half now, the rest after the sweep. The second read tells us the
    // handler is inside the storage write.
    let resume!: () => void;
    const resumed = new Promise<void>((resolve) => resume = resolve);
    let reading!: () => void;
    const inside = new Promise<void>((resolve) => reading = resolve);
    const bytes = chunks[1]!.bytes;
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        pulls++;
        if (pulls === 1) return controller.enqueue(bytes.slice(0, 500));
        if (pulls === 2) {
          reading();
          await resumed;
          return controller.enqueue(bytes.slice(500));
        }
        controller.close();
      },
    }, { highWaterMark: 0 });
    const request = new Request(`${BASE}?${new URLSearchParams(chunks[1]!.params)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body,
    });
    const pending = handler(request);
    await inside;
    const report = await handler.cleanup({ now: Date.now() + 30 * DAY });
    assert.equal(report.expired, 1, "only the stale upload expired");
    resume();
    const response = await pending;
    assert.equal(response.status, 200);
    // Complete means chunk 1, stored before the sweep, survived it too.
    assert.equal((await response.json()).complete, true);
  });
});

Deno.test("FileSystemStorage counts a chunk being written as activity, so another process's upload survives", async () => {
  const dir = await Deno.makeTempDir({ prefix: "resumable-expiry-fs-" });
  try {
    const storage = new FileSystemStorage({ directory: dir });
    const record = (identifier: string) => ({
      key: uploadKey("", identifier),
      fileId: newFileId(),
      identifier,
      fileName: "f",
      relativePath: "f",
      type: "",
      totalSize: 10,
      chunkSize: 10,
      createdAt: Date.now(),
    });
    const old = await storage.createUpload(record("old"));
    const live = await storage.createUpload(record("live"));
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => finish = resolve);
    const writing = storage.putChunk(
      live.key,
      1,
      new ReadableStream({
        async start(controller) {
          controller.enqueue(new Uint8Array(5));
          await finished;
          controller.enqueue(new Uint8Array(5));
          controller.close();
        },
      }),
    );
    // A chunk being received is written into the upload's data file at its offset.
    while (!(await listTree(`${dir}/uploads/${live.key}`)).includes("data")) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // Age everything but the data file by two days, as if the upload had started long ago.
    const past = new Date(Date.now() - 2 * DAY);
    for (const key of [old.key, live.key]) {
      const base = `${dir}/uploads/${key}`;
      for (const path of [base, `${base}/chunks`, `${base}/upload.json`]) await utimes(path, past, past);
    }
    const report = await cleanupExpired(storage, { expireAfter: DAY, completedExpireAfter: 7 * DAY });
    assert.deepEqual(report, { expired: 1, completedExpired: 0, kept: 1 });
    assert.equal(await storage.getUpload(old.key), undefined);
    finish();
    await writing;
    assert.equal(await storage.chunkSize(live.key, 1), 10);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cleanup() needs a storage that lists uploads", async () => {
  const storage = new MemoryStorage();
  const bare: UploadStorage = Object.create(storage, { listUploads: { value: undefined } });
  await assert.rejects(cleanupExpired(bare, { expireAfter: 1, completedExpireAfter: 1 }), TypeError);
});

Deno.test("cleanup() removes the other uploads when one cannot be removed, then fails saying why, and removes it once it can", async () => {
  await withStorages(async (storage) => {
    const handler = createResumableHandler({ storage, expireAfter: DAY, maxUploadsPerScope: 3 });
    const uploads = ["a", "b", "c"].map((name) =>
      clientChunks(seededBytes(2000, name.charCodeAt(0)), { identifier: `2000-${name}`, chunkSize: 1000 })
    );
    for (const chunks of uploads) await (await handler(chunkRequest(BASE, chunks[0]!))).body?.cancel();
    // The first upload the sweep lists cannot be removed: a folder this process may not delete, say.
    const listed: string[] = [];
    for await (const activity of storage.listUploads!()) listed.push(activity.key);
    const stuck = listed[0]!;
    const removeUpload = storage.removeUpload.bind(storage);
    let failing = true;
    storage.removeUpload = (key, options) =>
      failing && key === stuck
        ? Promise.reject(new Error("EACCES: permission denied"))
        : removeUpload(key, options);

    const later = Date.now() + DAY + HOUR;
    const error = await handler.cleanup({ now: later }).then(() => undefined, (error) => error);
    assert.ok(error instanceof AggregateError, `the sweep failed: ${error}`);
    assert.match(error.message, /removed 2 uploads, but 1 could not be removed.*EACCES/);
    assert.equal(error.errors.length, 1);
    for (const key of listed.slice(1)) {
      assert.equal(await storage.getUpload(key), undefined, "the others are gone");
    }
    assert.ok(await storage.getUpload(stuck));
    // The quota counted the removed two out: two new uploads fit beside the stuck one.
    for (const name of ["d", "e"]) {
      const [chunk] = clientChunks(seededBytes(2000, 9), { identifier: `2000-${name}`, chunkSize: 1000 });
      const response = await handler(chunkRequest(BASE, chunk!));
      assert.equal(response.status, 200, await response.clone().text());
      await response.body?.cancel();
    }

    failing = false;
    const report = await handler.cleanup({ now: later });
    assert.equal(report.expired, 3, "the stuck one, and the two begun meanwhile (aged by `now`)");
    assert.equal(await storage.getUpload(stuck), undefined);
  });
});

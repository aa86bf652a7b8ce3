import assert from "node:assert/strict";
import { DenoKvStorage, type KvFileTarget } from "../../src/storage/deno_kv.ts";
import { newFileId, uploadKey } from "../../src/identifier.ts";
import { storageSuite } from "../_storage_suite.ts";

storageSuite("DenoKvStorage (:memory:)", async () => {
  const kv = await Deno.openKv(":memory:");
  return { storage: new DenoKvStorage({ kv }), cleanup: () => Promise.resolve(kv.close()) };
});

/** A file target in a Map, standing in for a bucket or a disk. */
function mapTarget(): { bytes: Map<string, Uint8Array<ArrayBuffer>>; target: KvFileTarget } {
  const bytes = new Map<string, Uint8Array<ArrayBuffer>>();
  return {
    bytes,
    target: {
      async write(file, data) {
        const body = new Uint8Array(await new Response(data).arrayBuffer());
        bytes.set(file.id, body);
        return { size: body.byteLength, location: `map:${file.id}` };
      },
      open: (file) =>
        Promise.resolve(bytes.has(file.id) ? new Blob([bytes.get(file.id)!]).stream() : undefined),
      remove: (file) => Promise.resolve(void bytes.delete(file.id)),
    },
  };
}

storageSuite("DenoKvStorage (:memory:, files in a target)", async () => {
  const kv = await Deno.openKv(":memory:");
  return {
    storage: new DenoKvStorage({ kv, files: mapTarget().target }),
    cleanup: () => Promise.resolve(kv.close()),
  };
});

storageSuite("DenoKvStorage (file)", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-kv-" });
  const kv = await Deno.openKv(`${directory}/kv.sqlite3`);
  return {
    storage: new DenoKvStorage({ kv }),
    cleanup: async () => {
      kv.close();
      await Deno.remove(directory, { recursive: true });
    },
  };
});

function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
}

const KEY = "a".repeat(32);

Deno.test("DenoKvStorage splits a chunk into 64 KiB values over several commits and reads it back", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const bytes = randomBytes(1536 * 1024 + 7);
  await storage.putChunk(KEY, 1, new Blob([bytes as Uint8Array<ArrayBuffer>]).stream());
  const values: number[] = [];
  for await (const entry of kv.list<Uint8Array>({ prefix: ["resumable", "chunkpart", KEY] })) {
    values.push(entry.value.byteLength);
  }
  assert.equal(values.length, 25);
  assert.ok(values.every((size) => size <= 65536));
  assert.equal(await storage.chunkSize(KEY, 1), bytes.byteLength);
  const back = new Uint8Array(await new Response(await storage.openChunk(KEY, 1)).arrayBuffer());
  assert.deepEqual(back, bytes);
});

Deno.test("DenoKvStorage shows a chunk only after all its parts are written", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent === 12) await gate;
      if (sent === 16) return controller.close();
      controller.enqueue(randomBytes(65536));
      sent++;
    },
  });
  const writing = storage.putChunk(KEY, 3, stream);
  while (sent < 12) await new Promise((resolve) => setTimeout(resolve, 5));
  let parts = 0;
  for await (const _ of kv.list({ prefix: ["resumable", "chunkpart", KEY, 3] })) parts++;
  assert.ok(parts >= 10, "a first commit of parts is in");
  assert.equal(await storage.chunkSize(KEY, 3), undefined);
  assert.equal(await storage.countChunks(KEY), 0);
  release();
  await writing;
  assert.equal(await storage.chunkSize(KEY, 3), 16 * 65536);
  assert.equal(await storage.countChunks(KEY), 1);
});

Deno.test("DenoKvStorage retries operations that fail with 'database is locked'", async () => {
  using kv = await Deno.openKv(":memory:");
  let failures = 3;
  let failed = 0;
  const flaky = new Proxy(kv, {
    get(target, name) {
      if (name !== "atomic") {
        return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
      }
      return () => {
        const op = target.atomic();
        const commit = op.commit.bind(op);
        op.commit = () => {
          if (failures <= 0) return commit();
          failures--;
          failed++;
          return Promise.reject(new Error("database is locked"));
        };
        return op;
      };
    },
  });
  const storage = new DenoKvStorage({ kv: flaky });
  await storage.putChunk(KEY, 1, new Blob(["abc"]).stream());
  assert.equal(failed, 3, "three failures were retried");
  assert.equal(await storage.countChunks(KEY), 1);
  failures = 100;
  await assert.rejects(storage.putChunk(KEY, 2, new Blob(["abc"]).stream()), /database is locked/);
});

Deno.test("DenoKvStorage grants one claim across two handles on one database file", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-kv-" });
  try {
    using a = await Deno.openKv(`${directory}/kv.sqlite3`);
    using b = await Deno.openKv(`${directory}/kv.sqlite3`);
    const storages = [new DenoKvStorage({ kv: a }), new DenoKvStorage({ kv: b })];
    const claims = await Promise.all(
      Array.from({ length: 20 }, (_, i) => storages[i % 2]!.claim(KEY, { owner: `o${i}`, ttlMs: 60_000 })),
    );
    assert.equal(claims.filter((claim) => claim !== undefined).length, 1);
    await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => storages[i % 2]!.putChunk(KEY, 1 + (i % 5), new Blob(["x"]).stream()),
      ),
    );
    assert.equal(await storages[0]!.countChunks(KEY), 5, "duplicates from either handle count once");
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("DenoKvStorage with a file target streams the assembled file there and keeps only records in KV", async () => {
  using kv = await Deno.openKv(":memory:");
  const { bytes, target } = mapTarget();
  const storage = new DenoKvStorage({ kv, files: target });
  const key = await uploadKey("", "target");
  const fileId = newFileId();
  const file = {
    id: fileId,
    name: "t.bin",
    size: 200_000,
    type: "",
    identifier: "target",
    relativePath: "t.bin",
    uploadKey: key,
    completedAt: Date.now(),
  };
  const claim = await storage.claim(key, { owner: "o", ttlMs: 60_000 });
  const data = randomBytes(200_000);
  const stored = await storage.commit(claim!, new Blob([data as Uint8Array<ArrayBuffer>]).stream(), file);
  assert.equal(stored?.location, `map:${fileId}`);
  assert.deepEqual(bytes.get(fileId), data);
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["resumable", "filepart"] }))).length, 0);
  const opened = await storage.openFile(fileId);
  assert.deepEqual(new Uint8Array(await new Response(opened!.body).arrayBuffer()), data);
  await storage.removeFile(fileId);
  assert.equal(bytes.has(fileId), false);
  assert.equal(await storage.openFile(fileId), undefined);
});

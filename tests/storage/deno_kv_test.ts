import assert from "node:assert/strict";
import { DenoKvStorage, type KvFileTarget } from "../../src/storage/deno_kv.ts";
import { cleanupExpired } from "../../src/cleanup.ts";
import { newFileId, uploadKey } from "../../src/identifier.ts";
import { fileOf, recordOf, storageSuite, uploadOfTwoChunks } from "../_storage_suite.ts";
import { createResumableHandler, type StoredFile } from "../../mod.ts";
import { chunkRequest, clientChunks, testRequest } from "../_helpers.ts";
import { failingListing } from "../_faults.ts";

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
  const { fileId } = await storage.createUpload(recordOf(KEY, bytes.byteLength, bytes.byteLength));
  await storage.putChunk(KEY, 1, new Blob([bytes as Uint8Array<ArrayBuffer>]).stream());
  const values: number[] = [];
  // Parts are keyed by the upload record's file id.
  for await (const entry of kv.list<Uint8Array>({ prefix: ["resumable", "chunkpart", fileId] })) {
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
  // A full first batch of ten parts is committed once the eleventh part begins (until then it could
  // be the last, which goes with the chunk's visibility), and the twelfth is read only after that.
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent === 13) await gate;
      if (sent === 16) return controller.close();
      controller.enqueue(randomBytes(65536));
      sent++;
    },
  });
  const { fileId } = await storage.createUpload(recordOf(KEY, 48 * 65536, 16 * 65536));
  const writing = storage.putChunk(KEY, 3, stream);
  while (sent < 13) await new Promise((resolve) => setTimeout(resolve, 5));
  let parts = 0;
  for await (const _ of kv.list({ prefix: ["resumable", "chunkpart", fileId, 3] })) parts++;
  assert.ok(parts >= 10, "a first commit of parts is in");
  assert.equal(await storage.chunkSize(KEY, 3), undefined);
  assert.equal(await storage.countChunks(KEY), 0);
  release();
  await writing;
  assert.equal(await storage.chunkSize(KEY, 3), 16 * 65536);
  assert.equal(await storage.countChunks(KEY), 1);
});

/**
 * `kv` with every commit attempt counted, and faults to order. `refuseNext(n, why)` makes the next `n`
 * commits fail with `why` before they apply. `loseNextChecked(n, why)` makes the next `n` commits
 * that check something (a chunk's visibility, not its bare parts) apply and then fail with `why`, as
 * if their reply were lost. The storage retries either when `why` reads as transient.
 */
function watchedCommits(kv: Deno.Kv) {
  let commits = 0;
  let refuse = 0;
  let refused = 0;
  let lose = 0;
  let message = "";
  const watched = new Proxy(kv, {
    get(target, name) {
      if (name !== "atomic") {
        return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
      }
      return () => {
        const op = target.atomic();
        let checks = false;
        const check = op.check.bind(op);
        op.check = (...args) => {
          checks = true;
          return check(...args);
        };
        const commit = op.commit.bind(op);
        op.commit = async () => {
          commits++;
          if (refuse > 0) {
            refuse--;
            refused++;
            throw new Error(message);
          }
          const result = await commit();
          if (checks && lose > 0 && result.ok) {
            lose--;
            throw new Error(message);
          }
          return result;
        };
        return op;
      };
    },
  });
  return {
    kv: watched,
    commits: () => commits,
    refused: () => refused,
    refuseNext(n: number, why: string) {
      refuse = n;
      message = why;
    },
    loseNextChecked(n: number, why = "connection reset before the reply") {
      lose = n;
      message = why;
    },
  };
}

Deno.test("DenoKvStorage retries operations that fail with 'database is locked'", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: flaky, refused, refuseNext } = watchedCommits(kv);
  const storage = new DenoKvStorage({ kv: flaky });
  await storage.createUpload(recordOf(KEY, 6, 3));
  refuseNext(3, "database is locked");
  await storage.putChunk(KEY, 1, new Blob(["abc"]).stream());
  assert.equal(refused(), 3, "three failures were retried");
  assert.equal(await storage.countChunks(KEY), 1);
  refuseNext(100, "database is locked");
  await assert.rejects(storage.putChunk(KEY, 2, new Blob(["abc"]).stream()), /database is locked/);
});

/**
 * `kv` whose listings fail with `why` after `after` entries, as a read of a database file another
 * process writes can. A listing resumed at a cursor runs through unless `resumed` is set too;
 * `failures()` counts the throws.
 */
function flakyLists(kv: Deno.Kv, why: string, { after = 1, resumed = false } = {}) {
  let failures = 0;
  const flaky = new Proxy(kv, {
    get(target, name) {
      if (name !== "list") {
        return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
      }
      return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
        const entries = target.list(selector, options);
        if (options?.cursor !== undefined && !resumed) return entries;
        let read = 0;
        return failingListing(entries, () => {
          if (read++ !== after) return undefined;
          failures++;
          return new Error(why);
        });
      };
    },
  });
  return { kv: flaky, failures: () => failures };
}

Deno.test("DenoKvStorage resumes a listing that fails with 'database is locked' where it stopped: uploads, assembly, reading and removal lose nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: flaky, failures } = flakyLists(kv, "database is locked");
  const storage = new DenoKvStorage({ kv: flaky });
  const handler = createResumableHandler({ storage });
  // Three chunks of four parts each: every listing of chunks, manifest or parts has a second entry.
  const bytes = randomBytes(3 * 200 * 1024) as Uint8Array<ArrayBuffer>;
  const id = await uploadThrough(handler, "locked", bytes, 200 * 1024);
  assert.ok(failures() >= 1, "the assembly's listing of the chunks failed once");
  const before = failures();
  const back = new Uint8Array(await new Response((await storage.openFile(id))!.body).arrayBuffer());
  assert.deepEqual(back, bytes, "a file read through failing listings is whole, nothing repeated");
  assert.ok(failures() > before, "the reads' listings failed too");

  const keys = ["a", "b", "c"].map((letter) => letter.repeat(32));
  for (const key of keys) await uploadOfTwoChunks(storage, recordOf(key, 9, 3));
  const listed = await Array.fromAsync(storage.listUploads());
  assert.equal(listed.length, 4, "each upload listed once, the completed one too");
  assert.deepEqual(
    listed.filter((activity) => !activity.completed).map((activity) => activity.key).toSorted(),
    keys,
  );
  for (const key of [...keys, uploadKey("", "locked")]) await storage.removeUpload(key);
  await storage.removeFile(id);
  for (const kind of ["upload", "chunk", "chunkpart", "manifest", "file", "count"]) {
    assert.deepEqual(await kvKeys(kv, kind), [], `no ${kind} key left`);
  }
});

Deno.test("DenoKvStorage gives up a listing that keeps failing, and does not retry one that fails for good", async () => {
  using kv = await Deno.openKv(":memory:");
  await new DenoKvStorage({ kv }).createUpload(recordOf(KEY, 6, 3));
  const locked = flakyLists(kv, "database is locked", { after: 0, resumed: true });
  await assert.rejects(
    Array.fromAsync(new DenoKvStorage({ kv: locked.kv, retries: 2 }).listUploads()),
    /database is locked/,
  );
  assert.equal(locked.failures(), 3, "the first attempt and two retries");
  const broken = flakyLists(kv, "malformed key", { after: 0 });
  await assert.rejects(Array.fromAsync(new DenoKvStorage({ kv: broken.kv }).listUploads()), /malformed key/);
  assert.equal(broken.failures(), 1);
});

Deno.test("DenoKvStorage reads an upload record that exists without attempting a write, as every chunk after the first does", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: counted, commits } = watchedCommits(kv);
  const storage = new DenoKvStorage({ kv: counted });
  const record = recordOf(KEY, 6, 3);
  assert.deepEqual(await storage.createUpload(record), record);
  assert.equal(commits(), 1, "the first chunk creates the record");
  // A later chunk brings a record of its own, with another file id: the one stored wins.
  assert.deepEqual(await storage.createUpload({ ...record, fileId: newFileId() }), record);
  assert.equal(commits(), 1, "a later chunk only reads it: a commit refused by its check costs a write");
});

/**
 * `kv` with each read and commit logged in order: `get <kind>`, `getMany <kind>,<kind>` (the key's
 * first part after the prefix), `commit`. `during` runs once, inside the next commit, before it.
 */
function loggedOperations(kv: Deno.Kv) {
  const log: string[] = [];
  const hook: { during?: () => Promise<unknown> } = {};
  const logged = new Proxy(kv, {
    get(target, name) {
      if (name === "get") {
        return (key: Deno.KvKey, options?: { consistency?: Deno.KvConsistencyLevel }) => {
          log.push(`get ${String(key[1])}`);
          return target.get(key, options);
        };
      }
      if (name === "getMany") {
        return (keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
          log.push(`getMany ${keys.map((key) => String(key[1])).join(",")}`);
          return target.getMany(keys, options);
        };
      }
      if (name === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            const during = hook.during;
            hook.during = undefined;
            await during?.();
            log.push("commit");
            return await commit();
          };
          return op;
        };
      }
      return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
    },
  });
  return { kv: logged, log, hook };
}

Deno.test("DenoKvStorage reads the upload record once for a chunk: createUpload's read serves putChunk's commit", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: logged, log } = loggedOperations(kv);
  const gets = () => log.filter((operation) => operation === "get upload").length;
  const storage = new DenoKvStorage({ kv: logged });
  const record = recordOf(KEY, 6, 3);
  await new DenoKvStorage({ kv }).createUpload(record);
  // As the handler stores every chunk after the first: the record, then the chunk with its file id.
  const before = gets();
  const found = await storage.createUpload({ ...record, fileId: newFileId() });
  await storage.putChunk(KEY, 1, new Blob(["abc"]).stream(), { fileId: found.fileId });
  assert.equal(gets() - before, 1, "one read of the record for both");
  assert.equal(await storage.countChunks(KEY), 1);
});

Deno.test("DenoKvStorage refuses a chunk for a record it read before another handle removed the upload and began it again", async () => {
  using kv = await Deno.openKv(":memory:");
  const here = new DenoKvStorage({ kv });
  const elsewhere = new DenoKvStorage({ kv });
  const old = await here.createUpload(recordOf(KEY, 6, 3));
  await elsewhere.removeUpload(KEY);
  const again = await elsewhere.createUpload(recordOf(KEY, 6, 3));
  await assert.rejects(
    here.putChunk(KEY, 1, new Blob(["abc"]).stream(), { fileId: old.fileId }),
    /does not exist/,
  );
  assert.equal(await here.chunkSize(KEY, 1), undefined, "nothing stored for the new upload");
  assert.equal(await here.countChunks(KEY), 0);
  assert.deepEqual(await kvKeys(kv, "chunkpart"), [], "no parts left behind");
  // The same handle stores the new upload's chunk once it has read the new record.
  const current = await here.createUpload(recordOf(KEY, 6, 3));
  assert.equal(current.fileId, again.fileId);
  await here.putChunk(KEY, 1, new Blob(["abc"]).stream(), { fileId: current.fileId });
  assert.equal(await here.countChunks(KEY), 1);
});

Deno.test("DenoKvStorage makes a chunk visible in the commit of its last parts: one commit up to 640 KiB, two for 1 MiB", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: counted, commits } = watchedCommits(kv);
  const storage = new DenoKvStorage({ kv: counted });
  await storage.createUpload(recordOf(KEY, 4 * 1024 ** 2, 1024 ** 2));
  for (const [index, size, expected] of [[1, 640 * 1024, 1], [2, 1024 ** 2, 2], [3, 1, 1]] as const) {
    const bytes = new Uint8Array(randomBytes(size));
    const before = commits();
    await storage.putChunk(KEY, index, new Blob([bytes]).stream());
    assert.equal(commits() - before, expected, `commits for a chunk of ${size} bytes`);
    const stored = new Uint8Array(await new Response(await storage.openChunk(KEY, index)).arrayBuffer());
    assert.deepEqual(stored, bytes);
  }
  assert.equal(await storage.countChunks(KEY), 3);
});

for (const why of ["connection reset before the reply", "the commit's outcome is unknown"]) {
  const how = why.startsWith("connection") ? "its reply was lost and it was retried" : "it failed for good";
  Deno.test(`DenoKvStorage keeps a chunk whose visibility commit applied though ${how}`, async () => {
    using kv = await Deno.openKv(":memory:");
    const { kv: flaky, loseNextChecked } = watchedCommits(kv);
    const storage = new DenoKvStorage({ kv: flaky });
    await storage.createUpload(recordOf(KEY, 6, 3));
    loseNextChecked(1, why);
    await storage.putChunk(KEY, 1, new Blob(["abc"]).stream());
    assert.equal(await storage.chunkSize(KEY, 1), 3);
    assert.equal(
      await new Response(await storage.openChunk(KEY, 1)).text(),
      "abc",
      "its bytes are still there",
    );
    assert.equal(await storage.countChunks(KEY), 1);
  });

  Deno.test(`DenoKvStorage keeps a claim, a renewal and a published file whose commit applied though ${how}`, async () => {
    using kv = await Deno.openKv(":memory:");
    const { kv: flaky, loseNextChecked } = watchedCommits(kv);
    const storage = new DenoKvStorage({ kv: flaky });
    const rec = await storage.createUpload(recordOf(KEY, 3, 3));
    await storage.putChunk(KEY, 1, new Blob(["abc"]).stream());
    const lease = { owner: crypto.randomUUID(), ttlMs: 30_000 };

    loseNextChecked(1, why);
    const claim = await storage.claim(KEY, lease);
    assert.ok(claim, "the claim it took is its own");
    assert.equal(await storage.claim(KEY, { owner: crypto.randomUUID(), ttlMs: 30_000 }), undefined);

    loseNextChecked(1, why);
    assert.equal(await storage.renewClaim(claim, lease), true, "the renewal it made holds");

    const file = {
      id: rec.fileId,
      name: rec.fileName,
      size: 3,
      type: "",
      identifier: rec.identifier,
      relativePath: rec.relativePath,
      uploadKey: KEY,
      completedAt: Date.now(),
    };
    loseNextChecked(1, why);
    const stored = await storage.commit(claim, new Blob(["abc"]).stream(), file);
    assert.equal(stored?.id, rec.fileId, "the file it published is published");
    const opened = await storage.openFile(rec.fileId);
    assert.equal(await new Response(opened!.body).text(), "abc", "with its bytes");
    assert.equal((await storage.getCompleted(KEY))?.id, rec.fileId);
  });
}

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
    await storages[0]!.createUpload(recordOf(KEY, 5, 1));
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
  const key = uploadKey("", "target");
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
  // The record the file is made from: only its file may be published.
  await storage.createUpload({
    key,
    fileId,
    identifier: file.identifier,
    fileName: file.name,
    relativePath: file.relativePath,
    type: file.type,
    totalSize: file.size,
    chunkSize: 100_000,
    createdAt: Date.now(),
  });
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

/** Chunk `index` of `key` with one byte sent and the rest held until `finish` is called. */
function heldChunk(storage: DenoKvStorage, key: string, index: number) {
  let feed!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (controller) => void (feed = controller) });
  const put = storage.putChunk(key, index, body);
  feed.enqueue(new Uint8Array([0x4f]));
  return { put, finish: () => feed.close() };
}

async function kvKeys(kv: Deno.Kv, kind: string): Promise<Deno.KvKey[]> {
  return (await Array.fromAsync(kv.list({ prefix: ["resumable", kind] }))).map((entry) => entry.key);
}

Deno.test("DenoKvStorage refuses a chunk whose upload was removed while it was received", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  await assert.rejects(storage.putChunk(KEY, 1, new Blob(["x"]).stream()), /does not exist/);
  await storage.createUpload(recordOf(KEY, 2, 1));
  const chunk = heldChunk(storage, KEY, 1);
  await new Promise((resolve) => setTimeout(resolve, 10));
  // Cancelled, or expired by a sweep in another isolate, while the chunk's bytes arrive.
  await storage.removeUpload(KEY);
  chunk.finish();
  await assert.rejects(chunk.put, /does not exist/);
  assert.deepEqual(await kvKeys(kv, "chunk"), []);
  assert.deepEqual(await kvKeys(kv, "chunkpart"), []);
  // The same file added again (same key) starts with nothing of the old one.
  await storage.createUpload(recordOf(KEY, 2, 1));
  assert.equal(await storage.countChunks(KEY), 0);
  assert.equal(await storage.chunkSize(KEY, 1), undefined);
});

Deno.test("DenoKvStorage removeUpload also removes a chunk made visible just before it deletes the records", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: logged, hook } = loggedOperations(kv);
  const storage = new DenoKvStorage({ kv: logged });
  await storage.createUpload(recordOf(KEY, 2, 1));
  const chunk = heldChunk(storage, KEY, 1);
  await new Promise((resolve) => setTimeout(resolve, 10));
  // The removal's first commit notes it; in its second, which deletes the records, the chunk is in.
  hook.during = () => {
    hook.during = async () => {
      chunk.finish();
      await chunk.put;
    };
    return Promise.resolve();
  };
  await storage.removeUpload(KEY);
  assert.equal(hook.during, undefined, "the chunk was stored during the removal");
  assert.deepEqual(await kvKeys(kv, "chunk"), []);
  assert.deepEqual(await kvKeys(kv, "chunkpart"), []);
  assert.deepEqual(await kvKeys(kv, "count"), []);
});

/** Uploads `bytes` as `key` in chunks of `chunkSize` through the handler, and the file's id. */
async function uploadThrough(
  handler: (request: Request) => Promise<Response>,
  identifier: string,
  bytes: Uint8Array<ArrayBuffer>,
  chunkSize: number,
): Promise<string> {
  let body: { file?: { id: string } } = {};
  for (const chunk of clientChunks(bytes, { identifier, chunkSize })) {
    const response = await handler(chunkRequest("http://x/upload", chunk, "octet"));
    assert.equal(response.status, 200, await response.clone().text());
    body = await response.json();
  }
  assert.ok(body.file?.id, "the last chunk completes the upload");
  return body.file.id;
}

async function fileText(storage: DenoKvStorage, id: string): Promise<string | undefined> {
  const opened = await storage.openFile(id);
  return opened && await new Response(opened.body).text();
}

Deno.test("DenoKvStorage assembles without copying: the file is its chunks' parts, listed in a manifest", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: logged, log } = loggedOperations(kv);
  const storage = new DenoKvStorage({ kv: logged });
  const handler = createResumableHandler({ storage });
  // 3 MiB in 1 MiB chunks: copied, its bytes would take five commits of 640 KiB.
  const bytes = randomBytes(3 * 1024 * 1024) as Uint8Array<ArrayBuffer>;
  const chunks = clientChunks(bytes, { identifier: "3m", chunkSize: 1024 * 1024 });
  for (const chunk of chunks.slice(0, -1)) {
    assert.equal((await handler(chunkRequest("http://x/upload", chunk, "octet"))).status, 200);
  }
  const partsBefore = (await kvKeys(kv, "chunkpart")).length;
  log.length = 0;
  const response = await handler(chunkRequest("http://x/upload", chunks.at(-1)!, "octet"));
  assert.equal(response.status, 200);
  const { file } = await response.json();
  // The last chunk's two commits, the claim, the manifest, the publication, then the cleanup's:
  // the chunk keys and the counter (its parts all belong to the file).
  assert.equal(log.filter((operation) => operation === "commit").length, 7, log.join("\n"));
  assert.deepEqual(await kvKeys(kv, "filepart"), []);
  assert.deepEqual(await kvKeys(kv, "chunk"), []);
  assert.equal(
    (await kvKeys(kv, "chunkpart")).length,
    partsBefore + 16,
    "the last chunk's parts are added, none copied",
  );
  const back = new Uint8Array(await new Response((await storage.openFile(file.id))!.body).arrayBuffer());
  assert.deepEqual(back, bytes);
});

Deno.test("DenoKvStorage keeps a file's bytes through its upload's removal and the same file uploaded again, and removeFile deletes them", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const handler = createResumableHandler({ storage });
  const encode = (text: string) => new TextEncoder().encode(text);
  const first = await uploadThrough(handler, "same", encode("abcdefgh"), 3);
  // An expiry sweep removes the completed upload; the same name and size is uploaded again.
  await storage.removeUpload(uploadKey("", "same"));
  assert.equal(await fileText(storage, first), "abcdefgh");
  const second = await uploadThrough(handler, "same", encode("ABCDEFGH"), 3);
  assert.notEqual(second, first);
  assert.equal(
    await fileText(storage, first),
    "abcdefgh",
    "the new upload's cleanup keeps the old file's parts",
  );
  assert.equal(await fileText(storage, second), "ABCDEFGH");
  await storage.removeFile(first);
  assert.equal(await storage.openFile(first), undefined);
  assert.equal(await fileText(storage, second), "ABCDEFGH");
  await storage.removeFile(second);
  await storage.removeUpload(uploadKey("", "same"));
  for (const kind of ["chunk", "chunkpart", "manifest", "file", "filepart", "count", "upload", "complete"]) {
    assert.deepEqual(await kvKeys(kv, kind), [], `no ${kind} left`);
  }
});

Deno.test("DenoKvStorage removeFile called again after it failed among the parts deletes them all", async () => {
  using kv = await Deno.openKv(":memory:");
  let failNext = false;
  const failing = interceptedCommits(kv, (kinds) => {
    if (failNext && kinds.some((kind) => kind === "delete chunkpart")) {
      failNext = false;
      return Promise.reject(new Error("the isolate was stopped"));
    }
    return Promise.resolve();
  });
  const storage = new DenoKvStorage({ kv: failing, retries: 0 });
  const handler = createResumableHandler({ storage });
  const id = await uploadThrough(handler, "gone", new Uint8Array(randomBytes(300_000)), 100_000);
  await storage.removeUpload(uploadKey("", "gone"));
  failNext = true;
  await assert.rejects(storage.removeFile(id), /isolate was stopped/);
  assert.equal(await storage.openFile(id), undefined);
  await storage.removeFile(id);
  for (const kind of ["chunk", "chunkpart", "manifest", "file", "filepart"]) {
    assert.deepEqual(await kvKeys(kv, kind), [], `no ${kind} left`);
  }
});

Deno.test("DenoKvStorage: a sweep that keeps clean completed uploads writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  let commits: string[][] = [];
  const counting = interceptedCommits(kv, (kinds) => {
    commits.push(kinds);
    return Promise.resolve();
  });
  const storage = new DenoKvStorage({ kv: counting });
  const handler = createResumableHandler({ storage });
  for (const name of ["a", "b", "c"]) {
    await uploadThrough(handler, name, new TextEncoder().encode("abcdef"), 3);
  }
  commits = [];
  const report = await cleanupExpired(storage, { expireAfter: 3_600_000, completedExpireAfter: 3_600_000 });
  assert.equal(report.kept, 3);
  assert.deepEqual(commits, [], "no commit for uploads with nothing left to clean");
});

Deno.test("DenoKvStorage with a file target deletes what an assembly wrote there when a cancel wins over it", async () => {
  using kv = await Deno.openKv(":memory:");
  const { bytes, target } = mapTarget();
  let written!: () => void;
  const wrote = new Promise<void>((resolve) => written = resolve);
  let proceed!: () => void;
  const cancelled = new Promise<void>((resolve) => proceed = resolve);
  // A target slow to confirm: the bytes are there, its answer is not yet.
  const slow: KvFileTarget = {
    ...target,
    async write(file, data) {
      const result = await target.write(file, data);
      written();
      await cancelled;
      return result;
    },
  };
  const storage = new DenoKvStorage({ kv, files: slow });
  const key = uploadKey("", "cancelled while assembling");
  const record = await storage.createUpload(recordOf(key));
  await storage.putChunk(key, 1, new Blob(["abc"]).stream(), { fileId: record.fileId });
  await storage.putChunk(key, 2, new Blob(["def"]).stream(), { fileId: record.fileId });
  const claim = await storage.claim(key, { owner: "assembler", ttlMs: 60_000 });
  const assembling = storage.commitChunks(claim!, 2, fileOf(record));
  await wrote;
  assert.ok(bytes.has(record.fileId));
  await storage.removeUpload(key);
  proceed();
  assert.equal(await assembling, undefined, "nothing is published");
  assert.equal(bytes.has(record.fileId), false, "and nothing is left in the target");
});

Deno.test("DenoKvStorage lists parts 16 at a time to delete them: at most 1 MiB of values held, not 32", async () => {
  using kv = await Deno.openKv(":memory:");
  const listings: { kind: string; batchSize: number }[] = [];
  const watched = new Proxy(kv, {
    get(target, name) {
      if (name !== "list") {
        return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
      }
      return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
        const prefix = "prefix" in selector ? selector.prefix : [];
        listings.push({ kind: String(prefix[1] ?? ""), batchSize: options?.batchSize ?? 500 });
        return target.list(selector, options);
      };
    },
  });
  const storage = new DenoKvStorage({ kv: watched });
  const handler = createResumableHandler({ storage });
  const id = await uploadThrough(handler, "big", new Uint8Array(randomBytes(3 * 1024 * 1024)), 1024 * 1024);
  listings.length = 0;
  await storage.removeUpload(uploadKey("", "big"));
  await storage.removeFile(id);
  const parts = listings.filter(({ kind }) => kind === "chunkpart" || kind === "filepart");
  assert.ok(parts.length > 0, "parts were listed to be deleted");
  for (const { kind, batchSize } of parts) {
    assert.ok(batchSize <= 16, `${kind} listed ${batchSize} at a time`);
  }
  for (const kind of ["chunk", "chunkpart", "manifest", "file", "filepart"]) {
    assert.deepEqual(await kvKeys(kv, kind), [], `no ${kind} left`);
  }
});

/**
 * `kv` whose commits wait for `before(kinds)` first, where `kinds` lists what the commit sets and
 * deletes (`set file`, `delete upload`: the key's first part after the prefix), and for
 * `after(kinds, result)` once applied, which may throw as if the reply were lost.
 */
function interceptedCommits(
  kv: Deno.Kv,
  before: (kinds: string[]) => Promise<void>,
  after?: (kinds: string[], result: Deno.KvCommitResult | Deno.KvCommitError) => Promise<void>,
): Deno.Kv {
  return new Proxy(kv, {
    get(target, name) {
      if (name !== "atomic") {
        return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
      }
      return () => {
        const op = target.atomic();
        const kinds: string[] = [];
        const set = op.set.bind(op);
        const del = op.delete.bind(op);
        op.set = (key, value, options) => (kinds.push(`set ${String(key[1])}`), set(key, value, options));
        op.delete = (key) => (kinds.push(`delete ${String(key[1])}`), del(key));
        const commit = op.commit.bind(op);
        op.commit = async () => {
          await before(kinds);
          const result = await commit();
          await after?.(kinds, result);
          return result;
        };
        return op;
      };
    },
  });
}

Deno.test("DenoKvStorage keeps the parts of a chunk whose visibility commit lost its reply while the upload was assembled from it and its chunks removed", async () => {
  using kv = await Deno.openKv(":memory:");
  const plain = new DenoKvStorage({ kv });
  let armed = false;
  let assembled: StoredFile | undefined;
  // The commit that makes chunk 2 visible applies; before its reply comes back, another process
  // assembles the upload from it and removes its chunks; then the reply is lost.
  const storage = new DenoKvStorage({
    kv: interceptedCommits(kv, () => Promise.resolve(), async (kinds, result) => {
      if (!armed || !result.ok || !kinds.includes("set chunk")) return;
      armed = false;
      const claim = await plain.claim(KEY, { owner: "elsewhere", ttlMs: 60_000 });
      assembled = await plain.commitChunks(claim!, 2, fileOf(rec));
      await plain.removeChunks(KEY);
      throw new Error("connection reset before the reply");
    }),
  });
  const rec = await storage.createUpload(recordOf(KEY, 6, 3));
  await storage.putChunk(KEY, 1, new Blob(["abc"]).stream(), { fileId: rec.fileId });
  armed = true;
  await storage.putChunk(KEY, 2, new Blob(["def"]).stream(), { fileId: rec.fileId }).catch(() => {});
  assert.equal(assembled?.id, rec.fileId, "the upload was assembled while the chunk's reply was on its way");
  assert.equal(await fileText(storage, rec.fileId), "abcdef");
});

Deno.test("DenoKvStorage: a removal racing an assembly leaves no file, or a whole one", async () => {
  using kv = await Deno.openKv(":memory:");
  let removal: Promise<unknown> | undefined;
  const assembly: { published?: Promise<unknown> } = {};
  let publish!: () => void;
  const go = new Promise<void>((resolve) => publish = resolve);
  const storage: DenoKvStorage = new DenoKvStorage({
    kv: interceptedCommits(kv, async (kinds) => {
      // The assembly's publication starts the removal, and waits until it deletes the records...
      if (kinds.includes("set file") && !removal) {
        removal = storage.removeUpload(KEY);
        await go;
      }
      // ...which waits for the publication to land first. (The removal's first commit replaces the
      // record with its tombstone and deletes the claim.)
      if (kinds.includes("set upload") && kinds.includes("delete claim") && assembly.published) {
        publish();
        await assembly.published;
      }
    }),
  });
  const rec = await uploadOfTwoChunks(storage, recordOf(KEY, 6, 3));
  const claim = await storage.claim(KEY, { owner: "assembler", ttlMs: 60_000 });
  const stored = storage.commitChunks(claim!, 2, fileOf(rec));
  assembly.published = stored;
  assert.equal((await stored)?.id, rec.fileId, "published just before the records were deleted");
  await removal;
  assert.equal(await fileText(storage, rec.fileId), "abcdef", "and whole after the removal");
  assert.deepEqual(await kvKeys(kv, "chunk"), []);
  assert.equal((await kvKeys(kv, "chunkpart")).length, 2, "the parts are the file's");
});

Deno.test("DenoKvStorage keeps a completed upload's stray parts with its file, and removes them with it", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const rec = await uploadOfTwoChunks(storage, recordOf(KEY, 6, 3));
  // What a process that died writing a second copy of chunk 1 leaves.
  await kv.set(["resumable", "chunkpart", rec.fileId, 1, "f".repeat(32), 0], new TextEncoder().encode("xyz"));
  const claim = await storage.claim(KEY, { owner: "assembler", ttlMs: 60_000 });
  assert.equal((await storage.commitChunks(claim!, 2, fileOf(rec)))?.id, rec.fileId);
  await storage.removeChunks(KEY);
  await storage.removeUpload(KEY);
  assert.equal(await fileText(storage, rec.fileId), "abcdef", "the stray copy is not read");
  assert.equal((await kvKeys(kv, "chunkpart")).length, 3);
  await storage.removeFile(rec.fileId);
  assert.deepEqual(await kvKeys(kv, "chunkpart"), []);
});

Deno.test("DenoKvStorage counts a lease renewal as activity, so a sweep elsewhere keeps a live assembly", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  await storage.createUpload(recordOf(KEY, 1, 1));
  await storage.putChunk(KEY, 1, new Blob(["x"]).stream());
  const lease = { owner: "assembler", ttlMs: 60 };
  const claim = await storage.claim(KEY, lease);
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.equal(await storage.renewClaim(claim!, lease), true);
  // A sweep in another isolate: no isActive() knows of this assembly.
  const report = await cleanupExpired(storage, { expireAfter: 100, completedExpireAfter: 1e9 });
  assert.equal(report.expired, 0);
  assert.equal(await storage.renewClaim(claim!, lease), true);
});

Deno.test("DenoKvStorage publishes when its own lease renewal lands between the claim check and the publishing commit", async () => {
  using kv = await Deno.openKv(":memory:");
  let publishing = false;
  let renewed: Promise<boolean> | undefined;
  const lease = { owner: "only-assembler", ttlMs: 30_000 };
  // assembleOnce renews every lease/3; this runs one renewal right after commit() read the claim.
  const timed = new Proxy(kv, {
    get(target, name) {
      if (name === "get") {
        return async (key: Deno.KvKey) => {
          const entry = await target.get(key);
          if (publishing && key.includes("claim") && !renewed) {
            await (renewed = storage.renewClaim(claim!, lease));
          }
          return entry;
        };
      }
      if (name === "getMany") {
        return async (keys: Deno.KvKey[]) => {
          const entries = await target.getMany(keys);
          if (publishing && keys.some((key) => key.includes("claim")) && !renewed) {
            await (renewed = storage.renewClaim(claim!, lease));
          }
          return entries;
        };
      }
      return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
    },
  });
  const storage = new DenoKvStorage({ kv: timed });
  const rec = await storage.createUpload(recordOf(KEY, 1, 1));
  const claim = await storage.claim(KEY, lease);
  let pulls = 0;
  const data = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulls++ === 0) return controller.enqueue(new Uint8Array([1]));
      publishing = true; // the bytes are written: commit() now reads the claim again and publishes
      controller.close();
    },
  });
  const file = {
    id: rec.fileId,
    name: rec.fileName,
    size: 1,
    type: "",
    identifier: rec.identifier,
    relativePath: rec.relativePath,
    uploadKey: KEY,
    completedAt: Date.now(),
  };
  const stored = await storage.commit(claim!, data, file);
  assert.equal(await renewed, true, "the renewal ran in the window");
  assert.equal(stored?.id, rec.fileId, "the only live claimant publishes");
  const opened = await storage.openFile(rec.fileId);
  assert.deepEqual(new Uint8Array(await new Response(opened!.body).arrayBuffer()), new Uint8Array([1]));
});

Deno.test("DenoKvStorage reads the upload record with the completion check: a chunk after the first costs one read before its commit, a chunk test one read less", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: logged, log } = loggedOperations(kv);
  const handler = createResumableHandler({ storage: new DenoKvStorage({ kv: logged }) });
  const [first, second] = clientChunks(new TextEncoder().encode("abcdefghi"), {
    identifier: "9-kv",
    chunkSize: 3,
  });
  assert.equal((await handler(chunkRequest("http://x/upload", first!))).status, 200);
  log.length = 0;
  assert.equal((await handler(chunkRequest("http://x/upload", second!))).status, 200);
  assert.deepEqual(log, ["getMany complete,upload", "commit", "get count"]);
  log.length = 0;
  // A test of a stored chunk compares the record with the request, and counts.
  assert.equal((await handler(testRequest("http://x/upload", second!))).status, 200);
  assert.deepEqual(log, ["getMany complete,upload", "get chunk", "get count"]);
});

Deno.test("DenoKvStorage does not take the upload record from a read begun before or while this handle removed the upload", async () => {
  using kv = await Deno.openKv(":memory:");
  const { kv: logged, hook } = loggedOperations(kv);
  const storage = new DenoKvStorage({ kv: logged });
  for (const when of ["before", "while"]) {
    const old = await storage.createUpload(recordOf(KEY, 6, 3));
    assert.equal(await storage.getCompleted(KEY), undefined);
    // The removal's first commit notes it; the record is still there.
    if (when === "while") hook.during = () => storage.getCompleted(KEY);
    await storage.removeUpload(KEY);
    assert.equal(hook.during, undefined, "the completion check ran during the removal");
    const again = { ...old, fileId: newFileId() };
    assert.equal((await storage.createUpload(again)).fileId, again.fileId, `read begun ${when} the removal`);
    await storage.removeUpload(KEY);
  }
});

Deno.test("DenoKvStorage errors the stream of a file one of whose chunks lost a part, rather than end it short", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const handler = createResumableHandler({ storage });
  const bytes = randomBytes(200 * 1024) as Uint8Array<ArrayBuffer>;
  const id = await uploadThrough(handler, "lossy", bytes, 100 * 1024);
  const [part] = await kvKeys(kv, "chunkpart");
  await kv.delete(part!);
  await assert.rejects(
    new Response((await storage.openFile(id))!.body).arrayBuffer(),
    /has \d+ bytes, not 102400/,
  );
});

Deno.test("DenoKvStorage removes with its upload a manifest an assembler wrote and never published", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const rec = await storage.createUpload(recordOf(KEY, 3, 3));
  await storage.putChunk(KEY, 1, new Blob(["abc"]).stream(), { fileId: rec.fileId });
  // What an assembler that died between writing its manifest and publishing leaves.
  await kv.set(["resumable", "manifest", rec.fileId, "e".repeat(32), 0], [["f".repeat(32), 3]]);
  await storage.removeUpload(KEY);
  for (const kind of ["manifest", "chunkpart", "chunk"]) assert.deepEqual(await kvKeys(kv, kind), [], kind);
});

Deno.test("DenoKvStorage does not make a late copy of a chunk visible once its upload is complete and its chunks removed", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const rec = await uploadOfTwoChunks(storage, recordOf(KEY, 6, 3));
  const claim = await storage.claim(KEY, { owner: "assembler", ttlMs: 60_000 });
  assert.ok(await storage.commitChunks(claim!, 2, fileOf(rec)));
  await storage.removeChunks(KEY);
  const parts = (await kvKeys(kv, "chunkpart")).length;
  // A retry of chunk 2 that passed the handler's completion check just before the assembly.
  await storage.putChunk(KEY, 2, new Blob(["def"]).stream(), { fileId: rec.fileId });
  assert.deepEqual(await kvKeys(kv, "chunk"), [], "nothing left for a cleanup that already ran");
  assert.equal((await kvKeys(kv, "chunkpart")).length, parts, "the copy's parts are deleted");
  assert.equal(await fileText(storage, rec.fileId), "abcdef");
});

Deno.test("DenoKvStorage deletes every part of a late copy of a chunk over 640 KiB once its upload is complete: parts the file does not list", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const size = 1024 * 1024;
  const bytes = randomBytes(2 * size) as Uint8Array<ArrayBuffer>;
  const rec = await storage.createUpload(recordOf(KEY, bytes.byteLength, size));
  await storage.putChunk(KEY, 1, new Blob([bytes.subarray(0, size)]).stream(), { fileId: rec.fileId });
  await storage.putChunk(KEY, 2, new Blob([bytes.subarray(size)]).stream(), { fileId: rec.fileId });
  const claim = await storage.claim(KEY, { owner: "assembler", ttlMs: 60_000 });
  assert.ok(await storage.commitChunks(claim!, 2, fileOf(rec)));
  await storage.removeChunks(KEY);
  const parts = (await kvKeys(kv, "chunkpart")).length;
  // A late retry of chunk 2: its first 640 KiB are committed before the commit that would make it
  // visible, which the completion refuses.
  await storage.putChunk(KEY, 2, new Blob([bytes.subarray(size)]).stream(), { fileId: rec.fileId });
  assert.equal((await kvKeys(kv, "chunkpart")).length, parts, "none of the copy's parts is left");
  const stored = new Uint8Array(await new Response((await storage.openFile(rec.fileId))!.body).arrayBuffer());
  assert.deepEqual(stored, bytes);
});

Deno.test("DenoKvStorage: an assembly that finds its chunks gone with a removal under way has lost its claim, and says so without an error", async () => {
  using kv = await Deno.openKv(":memory:");
  let removal: Promise<unknown> | undefined;
  // The removal runs just as the assembly lists the chunks: it deletes the claim, then the chunks.
  const listing = new Proxy(kv, {
    get(target, name) {
      if (name !== "list") {
        return Reflect.get(target, name, target).bind?.(target) ?? Reflect.get(target, name);
      }
      return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
        const prefix = "prefix" in selector ? selector.prefix : [];
        if (prefix[1] === "chunk" && removal === undefined) {
          removal = storage.removeUpload(KEY);
          return (async function* () {
            await removal;
            yield* target.list(selector, options);
          })();
        }
        return target.list(selector, options);
      };
    },
  });
  const storage: DenoKvStorage = new DenoKvStorage({ kv: listing });
  const rec = await uploadOfTwoChunks(storage, recordOf(KEY, 6, 3));
  const claim = await storage.claim(KEY, { owner: "assembler", ttlMs: 60_000 });
  assert.equal(await storage.commitChunks(claim!, 2, fileOf(rec)), undefined);
  assert.ok(removal, "the removal ran during the assembly");
  assert.deepEqual(await kvKeys(kv, "manifest"), []);
  assert.deepEqual(await kvKeys(kv, "file"), []);
});

/** Stores `text` as chunks of `size` bytes of a new record of `key`, assembles and publishes it. */
async function uploadWhole(storage: DenoKvStorage, key: string, text: string, size: number) {
  const rec = await storage.createUpload(recordOf(key, text.length, size));
  const count = Math.max(Math.floor(text.length / size), 1);
  for (let n = 1; n <= count; n++) {
    const end = n === count ? text.length : n * size;
    await storage.putChunk(key, n, new Blob([text.slice((n - 1) * size, end)]).stream(), {
      fileId: rec.fileId,
    });
  }
  assert.equal(await storage.countChunks(key), count);
  const claim = await storage.claim(key, { owner: crypto.randomUUID(), ttlMs: 60_000 });
  const stored = await storage.commitChunks(claim!, count, fileOf(rec));
  assert.equal(stored?.id, rec.fileId);
  return rec;
}

Deno.test("DenoKvStorage: an upload begun again while a removal of its key still deletes chunks waits for it, and loses nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  let paused: (() => void) | undefined;
  let reached!: () => void;
  const atChunkDeletes = new Promise<void>((resolve) => reached = resolve);
  // The removal stops at its first deletion of chunk keys, after the records' commit.
  const storage = new DenoKvStorage({
    kv: interceptedCommits(kv, async (kinds) => {
      if (paused === undefined && kinds.includes("delete chunk")) {
        await new Promise<void>((resolve) => {
          paused = resolve;
          reached();
        });
      }
    }),
  });
  const old = await storage.createUpload(recordOf(KEY, 9, 3));
  for (const n of [1, 2]) await storage.putChunk(KEY, n, new Blob(["old"]).stream(), { fileId: old.fileId });
  const removal = storage.removeUpload(KEY);
  await atChunkDeletes;
  // The same file again, as a client that re-adds it right after a cancel: its record waits.
  let created = false;
  const again = storage.createUpload(recordOf(KEY, 9, 3)).then((rec) => (created = true, rec));
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.equal(created, false, "no new record while the removal deletes the old chunks");
  paused!();
  await removal;
  const rec = await again;
  assert.notEqual(rec.fileId, old.fileId);
  for (const [n, text] of [[1, "new"], [2, "NEW"], [3, "end"]] as const) {
    await storage.putChunk(KEY, n, new Blob([text]).stream(), { fileId: rec.fileId });
  }
  assert.equal(await storage.countChunks(KEY), 3);
  const claim = await storage.claim(KEY, { owner: "assembler", ttlMs: 60_000 });
  assert.equal((await storage.commitChunks(claim!, 3, fileOf(rec)))?.id, rec.fileId);
  assert.equal(await fileText(storage, rec.fileId), "newNEWend");
});

Deno.test("DenoKvStorage: a removal that died leaves its tombstone; the sweep lists it, and the next upload of the key finishes it first", async () => {
  using kv = await Deno.openKv(":memory:");
  const storage = new DenoKvStorage({ kv });
  const old = await storage.createUpload(recordOf(KEY, 9, 3));
  for (const n of [1, 2]) await storage.putChunk(KEY, n, new Blob(["old"]).stream(), { fileId: old.fileId });
  // What a removal leaves when its process dies right after its first commit.
  const at = Date.now() - 120_000;
  await kv.atomic().set(["resumable", "upload", KEY], {
    removing: "dead",
    key: KEY,
    fileIds: [old.fileId],
    at,
    until: at + 60_000,
  }).delete(["resumable", "activity", KEY]).commit();
  const listed = await Array.fromAsync(storage.listUploads());
  assert.deepEqual(listed, [{ key: KEY, lastActivity: at, completed: false }], "a sweep finds it");
  assert.equal(await storage.getUpload(KEY), undefined);

  const rec = await uploadWhole(storage, KEY, "abcdef", 3);
  assert.equal(await fileText(storage, rec.fileId), "abcdef");
  const oldParts = (await kvKeys(kv, "chunkpart")).filter((key) => key[2] === old.fileId);
  assert.deepEqual(oldParts, [], "the dead removal's parts are gone");
});

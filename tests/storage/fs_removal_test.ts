// Removing an upload (cancel, expiry) while its chunks or its assembly are still under way.
import assert from "node:assert/strict";
import { join } from "node:path";
import { uploadKey } from "../../src/identifier.ts";
import { FileSystemStorage } from "../../src/storage/fs.ts";
import { fileOf, recordOf } from "../_storage_suite.ts";

async function fixture() {
  const directory = await Deno.makeTempDir({ prefix: "resumable-removal-" });
  const key = uploadKey("", crypto.randomUUID());
  return {
    directory,
    key,
    storage: new FileSystemStorage({ directory }),
    record: (totalSize = 6, chunkSize = 3) => recordOf(key, totalSize, chunkSize),
    [Symbol.asyncDispose]: () => Deno.remove(directory, { recursive: true }),
  };
}

const text = (s: string) => new Blob([s]).stream();
const names = (path: string) => [...Deno.readDirSync(path)].map((entry) => entry.name).sort();

Deno.test("a chunk still arriving when its upload is removed and started again is not marked as stored", async () => {
  await using fx = await fixture();
  await fx.storage.createUpload(fx.record());
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  let pulls = 0;
  // The old attempt's chunk 1: its first byte is written, the rest is still on the network.
  const slow = new ReadableStream<Uint8Array>({
    async pull(controller) {
      pulls++;
      if (pulls === 1) controller.enqueue(new TextEncoder().encode("A"));
      else if (pulls === 2) {
        await held;
        controller.enqueue(new TextEncoder().encode("BC"));
      } else controller.close();
    },
  });
  const inFlight = fx.storage.putChunk(fx.key, 1, slow);
  await new Promise((resolve) => setTimeout(resolve, 20));
  await fx.storage.removeUpload(fx.key);
  const again = await fx.storage.createUpload(fx.record());
  release();
  await assert.rejects(inFlight, /removed or completed while chunk 1 was being written/);
  assert.equal(await fx.storage.chunkSize(fx.key, 1), undefined, "the new upload still needs chunk 1");
  await fx.storage.putChunk(fx.key, 1, text("ABC"));
  await fx.storage.putChunk(fx.key, 2, text("DEF"));
  const claim = await fx.storage.claim(fx.key, { owner: "o", ttlMs: 10_000 });
  await fx.storage.commitChunks(claim!, 2, fileOf(again));
  assert.equal(await new Response((await fx.storage.openFile(again.fileId))!.body).text(), "ABCDEF");
});

Deno.test("removing an upload while its chunks keep arriving removes all of it", async () => {
  await using fx = await fixture();
  await fx.storage.createUpload(fx.record(40_000, 10));
  for (let i = 1; i <= 2000; i++) await fx.storage.putChunk(fx.key, i, text("0123456789"));
  let removing = true;
  const removal = fx.storage.removeUpload(fx.key).then(() => "removed", String).finally(() =>
    removing = false
  );
  const late: Promise<unknown>[] = [];
  for (let i = 2001; removing && i <= 4000; i++) {
    late.push(fx.storage.putChunk(fx.key, i, text("0123456789")).catch(() => {}));
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.equal(await removal, "removed");
  await Promise.all(late);
  assert.equal(await fx.storage.getUpload(fx.key), undefined);
  assert.equal(await fx.storage.countChunks(fx.key), 0);
  // Only the note of the removal is left (see `removedAt`).
  assert.deepEqual(names(join(fx.directory, "uploads")), [".removals"]);
  assert.deepEqual(names(join(fx.directory, "uploads", ".removals")), [fx.key]);
});

Deno.test("removing an upload whose assembler died after publishing its file removes that file", async () => {
  await using fx = await fixture();
  const record = await fx.storage.createUpload(fx.record());
  await fx.storage.putChunk(fx.key, 1, text("ABC"));
  await fx.storage.putChunk(fx.key, 2, text("DEF"));
  // What a claimant killed right after moving the data into place leaves: a file, no completion.
  const fileDir = join(fx.directory, "files", record.fileId);
  await Deno.mkdir(fileDir, { recursive: true });
  await Deno.rename(join(fx.directory, "uploads", fx.key, "data"), join(fileDir, "abc.txt"));
  await Deno.writeTextFile(join(fileDir, ".file.json"), JSON.stringify(fileOf(record)));
  await fx.storage.removeUpload(fx.key);
  assert.deepEqual(names(join(fx.directory, "files")), [], "nobody was ever told of that file");
});

Deno.test("removing a completed upload keeps its file", async () => {
  await using fx = await fixture();
  const record = await fx.storage.createUpload(fx.record());
  await fx.storage.putChunk(fx.key, 1, text("ABC"));
  await fx.storage.putChunk(fx.key, 2, text("DEF"));
  const claim = await fx.storage.claim(fx.key, { owner: "o", ttlMs: 10_000 });
  assert.ok(await fx.storage.commitChunks(claim!, 2, fileOf(record)));
  await fx.storage.removeUpload(fx.key);
  assert.equal(await new Response((await fx.storage.openFile(record.fileId))!.body).text(), "ABCDEF");
});

Deno.test("listing uploads deletes what a crashed removal left, once that removal is surely over", async () => {
  await using fx = await fixture();
  await fx.storage.createUpload(fx.record());
  await fx.storage.putChunk(fx.key, 1, text("ABC"));
  // A removal killed after moving the folder aside, before deleting it.
  const left = join(fx.directory, "uploads", `.removed-${fx.key}.0123456789ab`);
  await Deno.rename(join(fx.directory, "uploads", fx.key), left);
  const list = async () => {
    for await (const _ of fx.storage.listUploads()) assert.fail("a removed upload is not listed");
  };
  await list();
  assert.deepEqual(names(join(fx.directory, "uploads")), [`.removed-${fx.key}.0123456789ab`], "too recent");
  const now = Date.now;
  Date.now = () => now() + 61_000;
  try {
    await list();
  } finally {
    Date.now = now;
  }
  assert.deepEqual(names(join(fx.directory, "uploads")), []);
  // The same file started again begins from nothing.
  await fx.storage.createUpload(fx.record());
  assert.equal(await fx.storage.countChunks(fx.key), 0);
});

Deno.test("an expiry sweep deletes notes of removals older than ten minutes, and removedAt no longer tells them", async () => {
  await using fx = await fixture();
  const other = uploadKey("", crypto.randomUUID());
  await fx.storage.createUpload(fx.record());
  await fx.storage.createUpload(recordOf(other));
  await fx.storage.removeUpload(fx.key);
  await fx.storage.removeUpload(other);
  // The first note as another process would have left it eleven minutes ago.
  const notes = join(fx.directory, "uploads", ".removals");
  const elevenMinutesAgo = new Date(Date.now() - 11 * 60_000);
  await Deno.writeTextFile(join(notes, fx.key), String(elevenMinutesAgo.getTime()));
  await Deno.utime(join(notes, fx.key), elevenMinutesAgo, elevenMinutesAgo);
  assert.equal(await fx.storage.removedAt(fx.key), undefined, "too old to tell");
  assert.ok(await fx.storage.removedAt(other), "a recent removal is told");

  for await (const _ of fx.storage.listUploads()) { /* the sweep's listing */ }
  assert.deepEqual(names(notes), [other]);
});

/**
 * Runs `work` with `hook` run once just before the first `Deno.<call>` that names `path`: what another
 * process does in that instant, between two steps of the storage.
 */
async function withHookBefore<T>(
  call: "linkSync" | "mkdirSync",
  path: string,
  hook: () => void,
  work: () => Promise<T>,
): Promise<T> {
  const deno = Deno as unknown as Record<string, (first: unknown, second: unknown) => void>;
  const real = deno[call]!;
  let hooked = false;
  deno[call] = (first, second) => {
    if (!hooked && (String(first) === path || String(second) === path)) {
      hooked = true;
      hook();
    }
    real(first, second);
  };
  try {
    return await work();
  } finally {
    deno[call] = real;
    assert.ok(hooked, `${call} never named ${path}`);
  }
}

for (const newHasChunks of [true, false]) {
  Deno.test(
    `a chunk whose upload is removed and begun again between its write and its marker is not stored in the new upload${
      newHasChunks ? " (which has a chunk of that size)" : ""
    }`,
    async () => {
      await using fx = await fixture();
      const old = await fx.storage.createUpload(fx.record());
      // The new upload, made by another process under another root, moved into place at the link.
      const elsewhere = join(fx.directory, "elsewhere");
      const other = new FileSystemStorage({ directory: elsewhere });
      const again = await other.createUpload(fx.record());
      if (newHasChunks) await other.putChunk(fx.key, 2, text("DEF"), { fileId: again.fileId });
      const folder = join(fx.directory, "uploads", fx.key);
      const marker = join(folder, "chunks", "1");
      const replace = () => {
        Deno.renameSync(folder, join(fx.directory, "uploads", `.removed-${fx.key}.0123456789ab`));
        Deno.renameSync(join(elsewhere, "uploads", fx.key), folder);
      };
      await withHookBefore("linkSync", marker, replace, async () => {
        await assert.rejects(fx.storage.putChunk(fx.key, 1, text("old"), { fileId: old.fileId }));
      });
      const fresh = new FileSystemStorage({ directory: fx.directory });
      for (const storage of [fx.storage, fresh]) {
        assert.equal(await storage.chunkSize(fx.key, 1), undefined, "the new upload still needs chunk 1");
        assert.equal(await storage.countChunks(fx.key), newHasChunks ? 1 : 0);
      }
      // And the new upload completes with its own bytes.
      await fresh.putChunk(fx.key, 1, text("ABC"), { fileId: again.fileId });
      if (!newHasChunks) await fresh.putChunk(fx.key, 2, text("DEF"), { fileId: again.fileId });
      const claim = await fresh.claim(fx.key, { owner: "o", ttlMs: 10_000 });
      await fresh.commitChunks(claim!, 2, fileOf(again));
      assert.equal(await new Response((await fresh.openFile(again.fileId))!.body).text(), "ABCDEF");
    },
  );
}

Deno.test("removing an upload while its last chunk assembles waits for the assembly: an upload begun again meanwhile keeps its own bytes", async () => {
  await using fx = await fixture();
  const old = await fx.storage.createUpload(fx.record());
  await fx.storage.putChunk(fx.key, 1, text("ABC"), { fileId: old.fileId });
  await fx.storage.putChunk(fx.key, 2, text("DEF"), { fileId: old.fileId });
  // Another process, which cancels and begins the upload again with other bytes when told.
  const again = fx.record();
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(new URL("../fixtures/fs_cancel_worker.ts", import.meta.url), { type: "module" });
  const finished = new Promise<void>((resolve, reject) => {
    worker.onmessage = (event) => event.data === "done" ? resolve() : reject(new Error(event.data));
    worker.onerror = (event) => reject(new Error(event.message));
  });
  try {
    worker.postMessage({ directory: fx.directory, record: again, chunk: "xyz", flag });
    const claim = await fx.storage.claim(fx.key, { owner: "o", ttlMs: 10_000 });
    const sealed = join(fx.directory, "uploads", fx.key, "chunks", ".sealed");
    // The assembler pauses once it has checked its claim, before it moves anything into place (a
    // garbage collection, say); the other process cancels then, and has a second to begin again.
    const stored = await withHookBefore("mkdirSync", sealed, () => {
      worker.postMessage("go");
      Atomics.wait(flag, 0, 0, 1000);
    }, () => fx.storage.commitChunks(claim!, 2, fileOf(old)));
    assert.equal(stored?.id, old.fileId);
    // What the handler does once the upload is complete.
    await fx.storage.removeChunks(fx.key);
    await finished;
  } finally {
    worker.terminate();
  }
  assert.equal(await new Response((await fx.storage.openFile(old.fileId))!.body).text(), "ABCDEF");
  // The new upload, as any process sees it: not complete, its own chunk and nothing else.
  const fresh = new FileSystemStorage({ directory: fx.directory });
  assert.equal(await fresh.getCompleted(fx.key), undefined);
  assert.equal((await fresh.getUpload(fx.key))?.fileId, again.fileId);
  assert.equal(await fresh.countChunks(fx.key), 1);
  assert.equal(await new Response(await fresh.openChunk(fx.key, 1)).text(), "xyz");
});

Deno.test("the cleanup after an assembly leaves the chunks of an upload begun again since it completed", async () => {
  await using fx = await fixture();
  const old = await fx.storage.createUpload(fx.record());
  await fx.storage.putChunk(fx.key, 1, text("ABC"), { fileId: old.fileId });
  await fx.storage.putChunk(fx.key, 2, text("DEF"), { fileId: old.fileId });
  const claim = await fx.storage.claim(fx.key, { owner: "o", ttlMs: 10_000 });
  assert.ok(await fx.storage.commitChunks(claim!, 2, fileOf(old)));
  // In the instant before the assembler's request removes the chunks: a cancel, and the same name and
  // size begun again elsewhere.
  const other = new FileSystemStorage({ directory: fx.directory });
  await other.removeUpload(fx.key);
  const again = await other.createUpload(fx.record());
  await other.putChunk(fx.key, 1, text("xyz"), { fileId: again.fileId });
  await fx.storage.removeChunks(fx.key);
  assert.equal(await other.countChunks(fx.key), 1);
  assert.equal(await new Response(await other.openChunk(fx.key, 1)).text(), "xyz");
  assert.equal(await new Response((await other.openFile(old.fileId))!.body).text(), "ABCDEF");
});

// The contract of UploadStorage, registered once per storage implementation.
import assert from "node:assert/strict";
import type { StoredFile, UploadRecord, UploadStorage } from "../mod.ts";
import { newFileId, uploadKey } from "../src/identifier.ts";
import { cleanupExpired } from "../src/cleanup.ts";

/** A fresh storage for one test, and how to dispose of it. */
export interface StorageFixture {
  storage: UploadStorage;
  cleanup(): Promise<void>;
}

const bytesOf = (text: string) => new TextEncoder().encode(text);

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  return await new Response(stream).text();
}

/** A new upload record of `abc.txt` under `key`, with a file id of its own. */
export function recordOf(key: string, totalSize = 6, chunkSize = 3): UploadRecord {
  return {
    key,
    fileId: newFileId(),
    identifier: "6-abc",
    fileName: "abc.txt",
    relativePath: "abc.txt",
    type: "text/plain",
    totalSize,
    chunkSize,
    createdAt: Date.now(),
  };
}

function record(totalSize = 6, chunkSize = 3): UploadRecord {
  return recordOf(uploadKey("", crypto.randomUUID()), totalSize, chunkSize);
}

function streamOf(text: string): ReadableStream<Uint8Array> {
  return new Blob([text]).stream();
}

/** A stream that delivers some bytes, then fails: a client that went away mid-chunk. */
function tornStream(text: string): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    pull(controller) {
      if (!sent) {
        sent = true;
        controller.enqueue(bytesOf(text));
      } else controller.error(new Error("connection reset"));
    },
  });
}

/** `rec` ("abcdef" in two chunks of 3 bytes) created in `storage`, both chunks stored: its record. */
export async function uploadOfTwoChunks(storage: UploadStorage, rec = record()): Promise<UploadRecord> {
  const created = await storage.createUpload(rec);
  await storage.putChunk(created.key, 1, streamOf("abc"), { fileId: created.fileId });
  await storage.putChunk(created.key, 2, streamOf("def"), { fileId: created.fileId });
  return created;
}

/** The file a completed `rec` becomes. */
export function fileOf(rec: UploadRecord): StoredFile {
  return {
    id: rec.fileId,
    name: rec.fileName,
    size: rec.totalSize,
    type: rec.type,
    identifier: rec.identifier,
    relativePath: rec.relativePath,
    uploadKey: rec.key,
    completedAt: Date.now(),
  };
}

/** Registers one Deno.test per contract item for the storage made by `make`. */
export function storageSuite(name: string, make: () => Promise<StorageFixture>): void {
  const step = (title: string, fn: (storage: UploadStorage) => Promise<void>) =>
    Deno.test(`${name}: ${title}`, async () => {
      const fixture = await make();
      try {
        await fn(fixture.storage);
      } finally {
        await fixture.cleanup();
      }
    });

  step("reports missing things as undefined, not errors", async (storage) => {
    const rec = record();
    assert.equal(await storage.getUpload(rec.key), undefined);
    assert.equal(await storage.chunkSize(rec.key, 1), undefined);
    assert.equal(await storage.countChunks(rec.key), 0);
    assert.equal(await storage.getCompleted(rec.key), undefined);
    assert.equal(await storage.openFile(newFileId()), undefined);
  });

  step("creates an upload record once when ten callers race", async (storage) => {
    const rec = record();
    const results = await Promise.all(
      Array.from({ length: 10 }, () => storage.createUpload({ ...rec, fileId: newFileId() })),
    );
    const winners = new Set(results.map((r) => r.fileId));
    assert.equal(winners.size, 1);
    assert.equal((await storage.getUpload(rec.key))?.fileId, results[0]!.fileId);
  });

  step("makes a chunk visible with its exact bytes once written", async (storage) => {
    const rec = await storage.createUpload(record());
    await storage.putChunk(rec.key, 2, streamOf("def"));
    assert.equal(await storage.chunkSize(rec.key, 2), 3);
    assert.equal(await storage.chunkSize(rec.key, 1), undefined);
    assert.equal(await storage.countChunks(rec.key), 1);
    assert.equal(await readAll(await storage.openChunk(rec.key, 2)), "def");
  });

  step("stores an empty chunk", async (storage) => {
    const rec = await storage.createUpload(record(0, 3));
    await storage.putChunk(rec.key, 1, streamOf(""));
    assert.equal(await storage.chunkSize(rec.key, 1), 0);
    assert.equal(await readAll(await storage.openChunk(rec.key, 1)), "");
  });

  step("never shows a torn write, and keeps the chunk it had", async (storage) => {
    const rec = await storage.createUpload(record());
    await storage.putChunk(rec.key, 1, streamOf("abc"));
    await assert.rejects(storage.putChunk(rec.key, 2, tornStream("de")));
    await assert.rejects(storage.putChunk(rec.key, 1, tornStream("xy")));
    assert.equal(await storage.chunkSize(rec.key, 2), undefined);
    assert.equal(await storage.countChunks(rec.key), 1);
    assert.equal(await readAll(await storage.openChunk(rec.key, 1)), "abc");
  });

  step("drops a chunk whose write was aborted", async (storage) => {
    const rec = await storage.createUpload(record());
    const controller = new AbortController();
    controller.abort(new Error("client gone"));
    await assert.rejects(storage.putChunk(rec.key, 1, streamOf("abc"), { signal: controller.signal }));
    assert.equal(await storage.chunkSize(rec.key, 1), undefined);
  });

  step(
    "refuses a chunk meant for a removed upload's record once the upload was begun again, and stores nothing",
    async (storage) => {
      const old = await storage.createUpload(record());
      await storage.putChunk(old.key, 1, streamOf("abc"), { fileId: old.fileId });
      await storage.removeUpload(old.key);
      const again = await storage.createUpload(recordOf(old.key));
      assert.notEqual(again.fileId, old.fileId);
      // Sent for the old upload, reaching the storage after the new one began: the old file's bytes.
      await assert.rejects(storage.putChunk(old.key, 2, streamOf("old"), { fileId: old.fileId }));
      assert.equal(await storage.chunkSize(old.key, 2), undefined);
      assert.equal(await storage.countChunks(old.key), 0);
      await storage.putChunk(old.key, 2, streamOf("new"), { fileId: again.fileId });
      assert.equal(await readAll(await storage.openChunk(old.key, 2)), "new");
    },
  );

  step(
    "publishes no file made from a removed upload's record into the upload begun again",
    async (storage) => {
      const old = await storage.createUpload(record());
      await storage.removeUpload(old.key);
      const again = await storage.createUpload(recordOf(old.key));
      await storage.putChunk(old.key, 1, streamOf("xyz"), { fileId: again.fileId });
      await storage.putChunk(old.key, 2, streamOf("uvw"), { fileId: again.fileId });
      // A request of the old upload that counted the new upload's chunks and went on to assemble.
      const claim = await storage.claim(old.key, { owner: "o", ttlMs: 60_000 });
      assert.ok(claim);
      assert.equal(await storage.commit(claim, streamOf("xyzuvw"), fileOf(old)), undefined);
      if (storage.commitChunks) {
        assert.equal(await storage.commitChunks(claim, 2, fileOf(old)).catch(() => undefined), undefined);
      }
      assert.equal(await storage.getCompleted(old.key), undefined);
      assert.equal(await storage.openFile(old.fileId), undefined);
      // The new upload still completes as itself.
      assert.equal(await storage.countChunks(old.key), 2);
      assert.equal((await storage.commit(claim, streamOf("xyzuvw"), fileOf(again)))?.id, again.fileId);
    },
  );

  step(
    "removes after an assembly only its chunks, not those of an upload begun again since",
    async (storage) => {
      const old = await uploadOfTwoChunks(storage);
      const claim = await storage.claim(old.key, { owner: "o", ttlMs: 60_000 });
      assert.ok(await storage.commit(claim!, streamOf("abcdef"), fileOf(old)));
      // Before the assembler's request removes the chunks: a cancel, and the same name and size again.
      await storage.removeUpload(old.key);
      const again = await storage.createUpload(recordOf(old.key));
      await storage.putChunk(old.key, 1, streamOf("xyz"), { fileId: again.fileId });
      await storage.removeChunks(old.key);
      assert.equal(await storage.countChunks(old.key), 1);
      assert.equal(await readAll(await storage.openChunk(old.key, 1)), "xyz");
      assert.equal(await readAll((await storage.openFile(old.fileId))!.body), "abcdef");
    },
  );

  step(
    "keeps nothing of a late copy of a chunk stored after its upload completed and its chunks were removed",
    async (storage) => {
      const done = await uploadOfTwoChunks(storage);
      const claim = await storage.claim(done.key, { owner: "o", ttlMs: 60_000 });
      const stored = storage.commitChunks
        ? await storage.commitChunks(claim!, 2, fileOf(done))
        : await storage.commit(claim!, streamOf("abcdef"), fileOf(done));
      assert.ok(stored);
      await storage.removeChunks(done.key);
      // A retry that passed the handler's completion check just before the assembly; the handler
      // counts the chunks after storing one. Refused or dropped, either way nothing stays.
      await storage.putChunk(done.key, 2, streamOf("def"), { fileId: done.fileId }).catch(() => {});
      await storage.countChunks(done.key);
      assert.equal(await storage.chunkSize(done.key, 2), undefined);
      assert.equal(await readAll((await storage.openFile(done.fileId))!.body), "abcdef");
    },
  );

  step("keeps a completed upload when a removal asks to, and removes one in progress", async (storage) => {
    const done = await uploadOfTwoChunks(storage);
    const claim = await storage.claim(done.key, { owner: "o", ttlMs: 60_000 });
    assert.ok(await storage.commit(claim!, streamOf("abcdef"), fileOf(done)));
    assert.equal(await storage.removeUpload(done.key, { keepCompleted: true }), "completed");
    assert.equal((await storage.getCompleted(done.key))?.id, done.fileId);
    assert.equal((await storage.getUpload(done.key))?.fileId, done.fileId);
    const going = await storage.createUpload(record());
    await storage.putChunk(going.key, 1, streamOf("abc"), { fileId: going.fileId });
    assert.equal(await storage.removeUpload(going.key, { keepCompleted: true }), undefined);
    assert.equal(await storage.getUpload(going.key), undefined);
    assert.equal(await storage.countChunks(going.key), 0);
    // Without the option (an expiry sweep), a completed upload's records go; its file stays.
    await storage.removeUpload(done.key);
    assert.equal(await storage.getCompleted(done.key), undefined);
    assert.equal(await readAll((await storage.openFile(done.fileId))!.body), "abcdef");
  });

  step("tells when an upload was last removed, and nothing for one never removed", async (storage) => {
    assert.equal(typeof storage.removedAt, "function");
    const rec = await storage.createUpload(record());
    assert.equal(await storage.removedAt!(rec.key), undefined);
    const before = Date.now();
    await storage.removeUpload(rec.key);
    const at = await storage.removedAt!(rec.key);
    // Whole milliseconds here; the storages note a finer time.
    assert.ok(at !== undefined && at >= before && at <= Date.now() + 1, `removed at ${at}, began ${before}`);
    // Begun again, the note stays: it is about the removal, not the upload.
    await storage.createUpload(recordOf(rec.key));
    assert.equal(await storage.removedAt!(rec.key), at);
  });

  step("accepts the same chunk twice, concurrently, as one chunk", async (storage) => {
    const rec = await storage.createUpload(record());
    await Promise.all([1, 1, 1].map((n) => storage.putChunk(rec.key, n, streamOf("abc"))));
    assert.equal(await storage.countChunks(rec.key), 1);
    assert.equal(await readAll(await storage.openChunk(rec.key, 1)), "abc");
  });

  step("grants one of ten concurrent claims, then one takeover after expiry", async (storage) => {
    const rec = await storage.createUpload(record());
    // A lease long enough that ten claims finish within it on a loaded machine (150 ms was not, once).
    const ttlMs = 1000;
    const first = await Promise.all(
      Array.from({ length: 10 }, (_, i) => storage.claim(rec.key, { owner: `a${i}`, ttlMs })),
    );
    const winners = first.filter((c) => c !== undefined);
    assert.equal(winners.length, 1);
    assert.equal(await storage.renewClaim(winners[0]!, { owner: winners[0]!.owner, ttlMs }), true);
    await new Promise((resolve) => setTimeout(resolve, ttlMs + 200));
    const second = await Promise.all(
      Array.from({ length: 10 }, (_, i) => storage.claim(rec.key, { owner: `b${i}`, ttlMs: 60_000 })),
    );
    const takers = second.filter((c) => c !== undefined);
    assert.equal(takers.length, 1);
    assert.ok(takers[0]!.generation > winners[0]!.generation);
    assert.equal(await storage.renewClaim(winners[0]!, { owner: winners[0]!.owner, ttlMs }), false);
  });

  step("lets a released claim be taken at once, by exactly one caller", async (storage) => {
    if (!storage.releaseClaim) return;
    const rec = await storage.createUpload(record());
    const first = await storage.claim(rec.key, { owner: "first", ttlMs: 60_000 });
    assert.ok(first);
    assert.equal(await storage.claim(rec.key, { owner: "early", ttlMs: 60_000 }), undefined);
    await storage.releaseClaim(first);
    const next = await Promise.all(
      Array.from({ length: 10 }, (_, i) => storage.claim(rec.key, { owner: `n${i}`, ttlMs: 60_000 })),
    );
    assert.equal(next.filter((c) => c !== undefined).length, 1);
  });

  step("publishes only for the newest claim, once", async (storage) => {
    const rec = await storage.createUpload(record());
    const stale = await storage.claim(rec.key, { owner: "stale", ttlMs: 50 });
    assert.ok(stale);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const current = await storage.claim(rec.key, { owner: "current", ttlMs: 60_000 });
    assert.ok(current);
    assert.equal(await storage.commit(stale, streamOf("abcdef"), fileOf(rec)), undefined);
    assert.equal(await storage.getCompleted(rec.key), undefined);
    const stored = await storage.commit(current, streamOf("abcdef"), fileOf(rec));
    assert.equal(stored?.id, rec.fileId);
    assert.equal(stored?.size, 6);
    assert.equal((await storage.getCompleted(rec.key))?.id, rec.fileId);
    assert.equal(await storage.commit(current, streamOf("abcdef"), fileOf(rec)), undefined);
    const opened = await storage.openFile(rec.fileId);
    assert.ok(opened);
    assert.equal(opened.file.name, "abc.txt");
    assert.equal(await readAll(opened.body), "abcdef");
  });

  step("commits from stored chunks in place, when it can, under the same claim rules", async (storage) => {
    if (!storage.commitChunks) return;
    const rec = await storage.createUpload(record(7, 3));
    await storage.putChunk(rec.key, 2, streamOf("defg"));
    const early = await storage.claim(rec.key, { owner: "early", ttlMs: 60_000 });
    // Chunk 1 is missing: the result would not be the file's size, so nothing is published.
    await assert.rejects(storage.commitChunks(early!, 2, { ...fileOf(rec), size: 7 }));
    assert.equal(await storage.getCompleted(rec.key), undefined);
    await storage.putChunk(rec.key, 1, streamOf("abc"));
    await storage.releaseClaim?.(early!);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const stale = await storage.claim(rec.key, { owner: "stale", ttlMs: 1 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const current = await storage.claim(rec.key, { owner: "current", ttlMs: 60_000 });
    assert.ok(stale && current);
    assert.equal(await storage.commitChunks(stale, 2, fileOf(rec)), undefined);
    const stored = await storage.commitChunks(current, 2, fileOf(rec));
    assert.equal(stored?.size, 7);
    assert.equal((await storage.getCompleted(rec.key))?.id, rec.fileId);
    assert.equal(await readAll((await storage.openFile(rec.fileId))!.body), "abcdefg");
  });

  step("publishes nothing when the assembled stream fails", async (storage) => {
    const rec = await storage.createUpload(record());
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    assert.ok(claim);
    await assert.rejects(storage.commit(claim, tornStream("abc"), fileOf(rec)));
    assert.equal(await storage.getCompleted(rec.key), undefined);
    assert.equal(await storage.openFile(rec.fileId), undefined);
  });

  step("removes chunks but keeps the records, and removes idempotently", async (storage) => {
    const rec = await storage.createUpload(record());
    await storage.putChunk(rec.key, 1, streamOf("abc"));
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    await storage.commit(claim!, streamOf("abcdef"), fileOf(rec));
    await storage.removeChunks(rec.key);
    assert.equal(await storage.countChunks(rec.key), 0);
    assert.ok(await storage.getCompleted(rec.key));
    assert.ok(await storage.getUpload(rec.key));
    await storage.removeUpload(rec.key);
    await storage.removeUpload(rec.key);
    assert.equal(await storage.getUpload(rec.key), undefined);
    assert.ok(await storage.openFile(rec.fileId), "removing the upload keeps its completed file");
    await storage.removeFile(rec.fileId);
    await storage.removeFile(rec.fileId);
    assert.equal(await storage.openFile(rec.fileId), undefined);
  });

  step("an expiry sweep keeps an upload that was resumed after it listed it", async (storage) => {
    if (!storage.listUploads) return;
    const resumed = await storage.createUpload(record(9));
    await storage.putChunk(resumed.key, 1, streamOf("abc"), { fileId: resumed.fileId });
    const idle = await storage.createUpload(record(9));
    // Between the listing and the removals, a client resumes one upload (here or in another
    // process): a chunk is stored and acknowledged. Stores keep times to the second (S3).
    const list = storage.listUploads.bind(storage);
    storage.listUploads = async function* () {
      yield* list();
      await new Promise((resolve) => setTimeout(resolve, 1100));
      await storage.putChunk(resumed.key, 2, streamOf("def"), { fileId: resumed.fileId });
    };
    const report = await cleanupExpired(storage, {
      expireAfter: 1,
      completedExpireAfter: 1,
      now: Date.now() + 60_000,
    });
    if (!storage.lastActivity) return;
    assert.equal((await storage.getUpload(resumed.key))?.fileId, resumed.fileId, "the resumed upload stays");
    assert.equal(await storage.countChunks(resumed.key), 2, "with the chunk its client was told is stored");
    assert.equal(await storage.getUpload(idle.key), undefined, "the idle one goes");
    assert.equal(report.expired, 1);
  });

  step("lists uploads with their activity, when it can", async (storage) => {
    if (!storage.listUploads) return;
    const a = await storage.createUpload(record());
    const b = await storage.createUpload(record());
    const claim = await storage.claim(b.key, { owner: "o", ttlMs: 60_000 });
    await storage.commit(claim!, streamOf("abcdef"), fileOf(b));
    const seen = new Map<string, boolean>();
    for await (const activity of storage.listUploads()) {
      assert.ok(activity.lastActivity > Date.now() - 60_000);
      seen.set(activity.key, activity.completed);
    }
    assert.equal(seen.get(a.key), false);
    assert.equal(seen.get(b.key), true);
  });
}

// What makes the file-system storage fast, checked for correctness (speed itself goes to bench/).
import assert from "node:assert/strict";
import { stat, utimes } from "node:fs/promises";
import { basename, join } from "node:path";
import { newFileId, uploadKey } from "../../src/identifier.ts";
import { FileSystemStorage } from "../../src/storage/fs.ts";
import { type FileWriter, NodeWriter, type NodeWriterFs } from "../../src/storage/_fs_file.ts";
import { writeStreamToFile } from "../../src/storage/_fs_streams.ts";
import type { UploadRecord } from "../../src/storage/types.ts";
import { fileOf } from "../_storage_suite.ts";
import { byteStreamOf } from "../_helpers.ts";

async function fixture(totalSize: number, chunkSize: number) {
  const directory = await Deno.makeTempDir({ prefix: "resumable-fast-" });
  const storage = new FileSystemStorage({ directory });
  const record: UploadRecord = {
    key: uploadKey("", crypto.randomUUID()),
    fileId: newFileId(),
    identifier: "id",
    fileName: "f.bin",
    relativePath: "f.bin",
    type: "",
    totalSize,
    chunkSize,
    createdAt: Date.now(),
  };
  await storage.createUpload(record);
  return {
    storage,
    record,
    dir: join(directory, "uploads", record.key),
    [Symbol.asyncDispose]: () => Deno.remove(directory, { recursive: true }),
  };
}

const text = (s: string) => new Blob([s]).stream();

Deno.test("FileSystemStorage writes chunks at their final offsets, so assembly renames the data file", async () => {
  await using fx = await fixture(10, 4);
  // Out of order and in parallel, as browsers send them; chunk 2 is the stretched last chunk.
  await Promise.all([
    fx.storage.putChunk(fx.record.key, 2, text("efghij")),
    fx.storage.putChunk(fx.record.key, 1, text("abcd")),
  ]);
  assert.equal(await fx.storage.chunkSize(fx.record.key, 2), 6);
  assert.equal(await new Response(await fx.storage.openChunk(fx.record.key, 2)).text(), "efghij");
  const { ino } = await stat(join(fx.dir, "data"));
  const claim = await fx.storage.claim(fx.record.key, { owner: "o", ttlMs: 60_000 });
  const stored = await fx.storage.commitChunks(claim!, 2, fileOf(fx.record));
  // Same inode: the published file is the data file itself, not a copy.
  assert.equal((await stat(stored!.location!)).ino, ino);
  assert.equal(await new Response((await fx.storage.openFile(fx.record.fileId))!.body).text(), "abcdefghij");
  await fx.storage.removeChunks(fx.record.key);
  await assert.rejects(
    fx.storage.putChunk(fx.record.key, 1, text("abcd")),
    "a late chunk cannot recreate the data",
  );
  await assert.rejects(stat(join(fx.dir, "data")));
});

Deno.test("FileSystemStorage keeps a stored chunk when a re-send of it breaks off", async () => {
  await using fx = await fixture(8, 4);
  await fx.storage.putChunk(fx.record.key, 1, text("abcd"));
  let sent = false;
  const torn = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent) return controller.error(new Error("reset"));
      sent = true;
      controller.enqueue(new TextEncoder().encode("XY"));
    },
  });
  await assert.rejects(fx.storage.putChunk(fx.record.key, 1, torn));
  assert.equal(await new Response(await fx.storage.openChunk(fx.record.key, 1)).text(), "abcd");
});

Deno.test("FileSystemStorage refuses a chunk of an upload without a record", async () => {
  await using fx = await fixture(8, 4);
  const other = uploadKey("", "no-record");
  await assert.rejects(fx.storage.putChunk(other, 1, text("abcd")), /has no record/);
});

Deno.test("FileSystemStorage reuses a chunk count only while the chunk folder is unchanged", async () => {
  await using fx = await fixture(40, 4);
  for (const n of [1, 2, 3]) await fx.storage.putChunk(fx.record.key, n, text("abcd"));
  // Age the folder so its listing may be reused, then change it: the count must follow.
  const old = new Date(Date.now() - 60_000);
  await utimes(join(fx.dir, "chunks"), old, old);
  assert.equal(await fx.storage.countChunks(fx.record.key), 3);
  assert.equal(await fx.storage.countChunks(fx.record.key), 3);
  await fx.storage.putChunk(fx.record.key, 4, text("abcd"));
  assert.equal(await fx.storage.countChunks(fx.record.key), 4);
  await utimes(join(fx.dir, "chunks"), old, old);
  assert.equal(await fx.storage.countChunks(fx.record.key), 4);
  await fx.storage.putChunk(fx.record.key, 5, text("abcd"));
  assert.equal(await fx.storage.countChunks(fx.record.key), 5);
  // removeChunks keeps the chunks of an upload that is not complete; removing the upload does not.
  await fx.storage.removeChunks(fx.record.key);
  assert.equal(await fx.storage.countChunks(fx.record.key), 5);
  await fx.storage.removeUpload(fx.record.key);
  assert.equal(await fx.storage.countChunks(fx.record.key), 0);
});

Deno.test("FileSystemStorage with durable: true stores and assembles the same bytes", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-durable-" });
  try {
    const storage = new FileSystemStorage({ directory, durable: true });
    const key = uploadKey("", "durable");
    await storage.createUpload({
      key,
      fileId: newFileId(),
      identifier: "d",
      fileName: "d",
      relativePath: "d",
      type: "",
      totalSize: 4,
      chunkSize: 2,
      createdAt: Date.now(),
    });
    await storage.putChunk(key, 2, text("cd"));
    await storage.putChunk(key, 1, text("ab"));
    assert.equal(await storage.countChunks(key), 2);
    assert.equal(await new Response(await storage.openChunk(key, 2)).text(), "cd");
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("writeStreamToFile() writes each read at its offset as it arrives, from plain and byte streams", async () => {
  const pieces = () => ["abc", "defgh", "ij", "klmnopq"].map((piece) => new TextEncoder().encode(piece));
  for (const data of [ReadableStream.from(pieces()), byteStreamOf(pieces())]) {
    const file = new Uint8Array(64);
    const writes: [string, number][] = [];
    const writer: FileWriter = {
      writeAt(bytes, position) {
        writes.push([new TextDecoder().decode(bytes), position]);
        file.set(bytes, position);
        return Promise.resolve();
      },
      sync: () => Promise.resolve(),
      inode: () => Promise.resolve(0),
      close: () => Promise.resolve(),
    };
    const total = await writeStreamToFile(writer, data, undefined, 10);
    assert.equal(total, 17);
    assert.equal(new TextDecoder().decode(file.subarray(10, 27)), "abcdefghijklmnopq");
    assert.deepEqual(writes, [["abc", 10], ["defgh", 13], ["ij", 18], ["klmnopq", 20]]);
  }
});

Deno.test("the node:fs writer (Bun, Node) continues after short writes", async () => {
  const file = new Uint8Array(64);
  let calls = 0;
  // Writes that stop after at most 5 bytes, as a full disk or a signal may cause.
  const fs: NodeWriterFs = {
    writeSync: ((fd: number, bytes: Uint8Array, offset: number, length: number, position: number) => {
      assert.equal(fd, 7);
      calls++;
      const n = Math.min(5, length);
      file.set(bytes.subarray(offset, offset + n), position);
      return n;
    }) as NodeWriterFs["writeSync"],
    fsyncSync: () => {},
    fstatSync: (() => ({ ino: 1 })) as unknown as NodeWriterFs["fstatSync"],
    closeSync: () => {},
  };
  await new NodeWriter(fs, 7).writeAt(new TextEncoder().encode("abcdefghijklmnopq"), 10);
  assert.equal(new TextDecoder().decode(file.subarray(10, 27)), "abcdefghijklmnopq");
  assert.equal(calls, 4);
});

Deno.test("FileSystemStorage finishes an assembly whose claimant died between publishing the file and recording it", async () => {
  await using fx = await fixture(10, 4);
  await fx.storage.putChunk(fx.record.key, 1, text("abcd"));
  await fx.storage.putChunk(fx.record.key, 2, text("efghij"));
  const file = fileOf(fx.record);
  // The state a SIGKILL leaves right after the rename: the file in place, no completion record.
  const dead = await fx.storage.claim(fx.record.key, { owner: "dead", ttlMs: 20 });
  assert.ok(dead);
  const root = join(fx.dir, "..", "..");
  await Deno.mkdir(join(root, "files", fx.record.fileId), { recursive: true });
  await Deno.rename(join(fx.dir, "data"), join(root, "files", fx.record.fileId, "f.bin"));
  assert.equal(await fx.storage.getCompleted(fx.record.key), undefined);
  await new Promise((resolve) => setTimeout(resolve, 60));
  const successor = await fx.storage.claim(fx.record.key, { owner: "successor", ttlMs: 60_000 });
  assert.ok(successor);
  const stored = await fx.storage.commitChunks(successor, 2, file);
  assert.equal(stored?.size, 10);
  assert.equal((await fx.storage.getCompleted(fx.record.key))?.id, fx.record.fileId);
  assert.equal(await new Response((await fx.storage.openFile(fx.record.fileId))!.body).text(), "abcdefghij");
});

Deno.test("chunk markers are hard links to a sparse file of their size, a new one every 1000 chunks", async () => {
  await using fx = await fixture(40_000, 1);
  for (let index = 1; index <= 2100; index++) await fx.storage.putChunk(fx.record.key, index, text("x"));
  for (const index of [32_767, 32_768, 40_000]) await fx.storage.putChunk(fx.record.key, index, text("x"));
  const chunk = (index: number) => Deno.stat(join(fx.dir, "chunks", String(index)));
  // Linking adds a name without allocating an inode. NTFS allows 1024 names per file (ext4 65 000):
  // no file gets more than 1000 markers and its own name.
  assert.equal((await chunk(1)).ino, (await chunk(2)).ino);
  assert.equal((await chunk(1)).ino, (await chunk(999)).ino);
  assert.notEqual((await chunk(999)).ino, (await chunk(1000)).ino);
  assert.equal((await chunk(1000)).ino, (await chunk(1999)).ino);
  for (const index of [1, 1000, 2000, 32_768]) {
    const { nlink } = await chunk(index);
    assert.ok(nlink !== null && nlink <= 1001, `chunk ${index}'s file has ${nlink} names`);
  }
  assert.equal((await chunk(1)).nlink, 1000, "chunks 1-999 and the source");
  assert.equal(await fx.storage.chunkSize(fx.record.key, 40_000), 1);
  assert.equal(await fx.storage.countChunks(fx.record.key), 2103);
});

Deno.test("countChunks finds chunks another process stored, and forgets an upload removed and recreated", async () => {
  await using fx = await fixture(40, 4);
  // Two storages on one directory stand for two processes: each keeps its own knowledge.
  const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
  assert.equal(await fx.storage.countChunks(fx.record.key), 0);
  for (const index of [1, 2, 3, 5]) await other.putChunk(fx.record.key, index, text("abcd"));
  // Found in order up to the first chunk missing; chunk 5 is found once chunk 4 is in.
  assert.equal(await fx.storage.countChunks(fx.record.key), 3);
  await fx.storage.putChunk(fx.record.key, 4, text("abcd"));
  assert.equal(await fx.storage.countChunks(fx.record.key), 5);
  assert.equal(await other.countChunks(fx.record.key), 5);
  // Cancelled and started again elsewhere: what was known of the old chunk folder no longer holds.
  await other.removeUpload(fx.record.key);
  await other.createUpload(fx.record);
  await other.putChunk(fx.record.key, 7, text("abcd"));
  assert.equal(await fx.storage.countChunks(fx.record.key), 1);
});

Deno.test("concurrent countChunks calls never count a chunk that is not stored", async () => {
  await using fx = await fixture(40, 4);
  const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
  assert.equal(await fx.storage.countChunks(fx.record.key), 0);
  for (const index of [1, 2, 3, 5, 6]) await other.putChunk(fx.record.key, index, text("abcd"));
  // The calls interleave at every lookup; chunk 4 is missing, so no call may see more than 3.
  const counts = await Promise.all(Array.from({ length: 4 }, () => fx.storage.countChunks(fx.record.key)));
  assert.deepEqual(counts, [3, 3, 3, 3]);
  assert.equal(await fx.storage.chunkSize(fx.record.key, 4), undefined);
});

Deno.test("a storage writing an upload alone looks up no missing file for its chunks", async () => {
  await using fx = await fixture(40, 4);
  await fx.storage.putChunk(fx.record.key, 1, text("abcd"));
  // Every lookup that finds nothing, seen where the storage makes it under Deno.
  const missed: string[] = [];
  const deno = Deno as unknown as Record<string, (path: string) => unknown>;
  const originals = { statSync: deno.statSync!, readTextFileSync: deno.readTextFileSync! };
  for (const [name, original] of Object.entries(originals)) {
    deno[name] = (path: string) => {
      try {
        return original.call(Deno, path);
      } catch (error) {
        missed.push(path);
        throw error;
      }
    };
  }
  try {
    for (let index = 2; index <= 6; index++) {
      // What the handler does per chunk.
      assert.equal(await fx.storage.getCompleted(fx.record.key), undefined);
      assert.deepEqual(await fx.storage.createUpload(fx.record), fx.record);
      await fx.storage.putChunk(fx.record.key, index, text("abcd"));
      assert.equal(await fx.storage.countChunks(fx.record.key), index);
    }
  } finally {
    Object.assign(deno, originals);
  }
  assert.deepEqual(missed, []);
});

Deno.test("a storage that wrote alone finds the chunks of a second writer and keeps them", async () => {
  await using fx = await fixture(40, 4);
  const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
  for (const index of [1, 2]) await fx.storage.putChunk(fx.record.key, index, text("abcd"));
  assert.equal(await fx.storage.countChunks(fx.record.key), 2);
  for (const index of [3, 4]) await other.putChunk(fx.record.key, index, text("wxyz"));
  assert.equal(await fx.storage.countChunks(fx.record.key), 4);
  // A re-send of a chunk the other writer stored keeps its bytes.
  await fx.storage.putChunk(fx.record.key, 3, text("abcd"));
  assert.equal(await new Response(await fx.storage.openChunk(fx.record.key, 3)).text(), "wxyz");
});

for (const how of ["commitChunks", "commit"] as const) {
  Deno.test(`a storage that wrote alone sees a completion another storage records with ${how}()`, async () => {
    await using fx = await fixture(8, 4);
    for (const index of [1, 2]) await fx.storage.putChunk(fx.record.key, index, text("abcd"));
    assert.equal(await fx.storage.getCompleted(fx.record.key), undefined);
    // A process that never wrote a chunk assembles (a test request's recovery does), and has not yet
    // removed the chunk folder.
    const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
    const claim = await other.claim(fx.record.key, { owner: "other", ttlMs: 60_000 });
    const stored = how === "commit"
      ? await other.commit(claim!, text("abcdabcd"), fileOf(fx.record))
      : await other.commitChunks(claim!, 2, fileOf(fx.record));
    assert.ok(stored);
    assert.equal((await fx.storage.getCompleted(fx.record.key))?.id, fx.record.fileId);
  });
}

Deno.test("a storage whose writer folder went missing looks up the chunks others stored", async () => {
  await using fx = await fixture(40, 4);
  for (const index of [1, 2]) await fx.storage.putChunk(fx.record.key, index, text("abcd"));
  assert.equal(await fx.storage.countChunks(fx.record.key), 2);
  // The folder keeps its identity and its link count (another writer's folder takes the place of
  // this one's), as after a removal and re-creation that reused the inode: only the missing writer
  // folder tells.
  const chunks = join(fx.dir, "chunks");
  for await (const entry of Deno.readDir(chunks)) {
    if (entry.name.startsWith(".writer-")) await Deno.remove(join(chunks, entry.name));
  }
  const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
  await other.putChunk(fx.record.key, 3, text("wxyz"));
  assert.equal((await stat(chunks)).nlink, 3);
  assert.equal(await fx.storage.countChunks(fx.record.key), 3);
  // A re-send of the chunk the other writer stored keeps its bytes.
  await fx.storage.putChunk(fx.record.key, 3, text("abcd"));
  assert.equal(await new Response(await fx.storage.openChunk(fx.record.key, 3)).text(), "wxyz");
});

Deno.test("a storage registering in a chunk folder keeps the chunks already there", async () => {
  await using fx = await fixture(40, 4);
  const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
  await other.putChunk(fx.record.key, 1, text("wxyz"));
  // As a writer without a writer folder (an earlier version of this storage) leaves it.
  for await (const entry of Deno.readDir(join(fx.dir, "chunks"))) {
    if (entry.name.startsWith(".writer-")) await Deno.remove(join(fx.dir, "chunks", entry.name));
  }
  await fx.storage.putChunk(fx.record.key, 1, text("abcd"));
  await fx.storage.putChunk(fx.record.key, 2, text("abcd"));
  assert.equal(await new Response(await fx.storage.openChunk(fx.record.key, 1)).text(), "wxyz");
  assert.equal(await fx.storage.countChunks(fx.record.key), 2);
});

Deno.test("a storage reads the record again once its upload was removed and started anew elsewhere", async () => {
  await using fx = await fixture(40, 4);
  await fx.storage.putChunk(fx.record.key, 1, text("abcd"));
  assert.deepEqual(await fx.storage.createUpload(fx.record), fx.record);
  const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
  await other.removeUpload(fx.record.key);
  const restarted = { ...fx.record, chunkSize: 8, fileId: newFileId() };
  await other.createUpload(restarted);
  assert.deepEqual(await fx.storage.createUpload(fx.record), restarted);
});

Deno.test("a completion removes the file metadata a crashed attempt left half written", async () => {
  await using fx = await fixture(8, 4);
  for (const index of [1, 2]) await fx.storage.putChunk(fx.record.key, index, text("abcd"));
  // What replaceJson leaves when the process dies between writing its temp file and renaming it.
  const fileDir = join(fx.dir, "..", "..", "files", fx.record.fileId);
  await Deno.mkdir(fileDir, { recursive: true });
  await Deno.writeTextFile(join(fileDir, ".file.json.0123456789ab.tmp"), "{");
  const claim = await fx.storage.claim(fx.record.key, { owner: "o", ttlMs: 60_000 });
  const stored = await fx.storage.commitChunks(claim!, 2, fileOf(fx.record));
  const names = (await Array.fromAsync(Deno.readDir(fileDir), (entry) => entry.name)).sort();
  assert.deepEqual(names, [".file.json", basename(stored!.location!)]);
});

Deno.test("on a file system without birth times, a chunk folder whose inode number comes back for the next upload is not taken for the old one", async () => {
  // NFS v3 and ext3 tell no birth time, and a removed folder's inode number can be the next one's:
  // here every chunk folder reports the same number and no birth time.
  const statSync = Deno.statSync;
  Deno.statSync = (path) => {
    const info = statSync(path);
    return /\/chunks(\/[^/]+\/\.\.)?$/.test(String(path)) ? { ...info, ino: 42, birthtime: null } : info;
  };
  try {
    await using fx = await fixture(12, 4);
    const other = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
    for (const index of [1, 2]) await other.putChunk(fx.record.key, index, text("abcd"));
    // This process has seen chunks 1 and 2 of the first upload.
    assert.equal(await fx.storage.countChunks(fx.record.key), 2);
    // Another process cancels it, and the file is sent again: a new upload under the same key.
    await other.removeUpload(fx.record.key);
    const again = { ...fx.record, fileId: newFileId() };
    await other.createUpload(again);
    const record = await fx.storage.createUpload(again);
    assert.equal(record.fileId, again.fileId);
    for (const index of [1, 2, 3]) {
      await fx.storage.putChunk(fx.record.key, index, text(`${index}${index}${index}${index}`), {
        fileId: again.fileId,
      });
    }
    const fresh = new FileSystemStorage({ directory: join(fx.dir, "..", "..") });
    assert.equal(await fresh.countChunks(fx.record.key), 3, "every chunk of the new upload is stored");
    assert.equal(await new Response(await fresh.openChunk(fx.record.key, 2)).text(), "2222");
  } finally {
    Deno.statSync = statSync;
  }
});

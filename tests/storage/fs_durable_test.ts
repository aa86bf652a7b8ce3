// `durable: true` promises that what a power loss leaves is whole: every file whose name the storage
// publishes has reached the disk first. Checked by watching which files Deno is asked to fsync.
import assert from "node:assert/strict";
import { createResumableHandler } from "../../mod.ts";
import { FileSystemStorage } from "../../src/storage/fs.ts";
import { join } from "node:path";
import { chunkRequest, clientChunks, seededBytes, serve, testRequest } from "../_helpers.ts";

/** Runs `work` with every fsync of a file Deno opens recorded as that file's name; restores after. */
async function recordingSyncs(work: () => Promise<void>): Promise<string[]> {
  const synced: string[] = [];
  const openSync = Deno.openSync;
  Deno.openSync = (path, options) => {
    const file = openSync(path, options);
    const syncSync = file.syncSync.bind(file);
    file.syncSync = () => {
      synced.push(String(path).split("/").pop()!);
      syncSync();
    };
    return file;
  };
  try {
    await work();
  } finally {
    Deno.openSync = openSync;
  }
  return synced;
}

for (const durable of [true, false]) {
  Deno.test(`FileSystemStorage with durable: ${durable} ${durable ? "syncs" : "does not sync"} the upload record and the file metadata before publishing them`, async () => {
    const directory = await Deno.makeTempDir({ prefix: "resumable-durable-" });
    const server = await serve(
      createResumableHandler({ storage: new FileSystemStorage({ directory, durable }) }),
    );
    try {
      const chunks = clientChunks(seededBytes(2500, 5), { identifier: "2500-durable", chunkSize: 1000 });
      const synced = await recordingSyncs(async () => {
        for (const chunk of chunks) {
          const response = await fetch(chunkRequest(server.url, chunk, "octet"));
          assert.equal(response.status, 200);
          await response.body?.cancel();
        }
      });
      const record = synced.filter((name) => /^upload\.json\.[0-9a-f]+\.tmp$/.test(name));
      const meta = synced.filter((name) => /^\.file\.json\.[0-9a-f]+\.tmp$/.test(name));
      assert.equal(record.length, durable ? 1 : 0, `synced: ${synced.join(", ")}`);
      assert.equal(meta.length, durable ? 1 : 0, `synced: ${synced.join(", ")}`);
      // And each chunk's bytes, in the upload's data file, before its marker.
      assert.equal(
        synced.filter((name) => name === "data").length,
        durable ? chunks.length : 0,
        `synced: ${synced.join(", ")}`,
      );
    } finally {
      await server.close();
      await Deno.remove(directory, { recursive: true });
    }
  });
}

Deno.test("FileSystemStorage begins again an upload whose record a crash of the machine left empty, and its sweep and quota go on", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-torn-" });
  const data = seededBytes(3000, 9);
  const chunks = clientChunks(data, { identifier: "3000-torn", chunkSize: 1000 });
  try {
    const before = await serve(createResumableHandler({ storage: new FileSystemStorage({ directory }) }));
    try {
      const first = await fetch(chunkRequest(before.url, chunks[0]!, "octet"));
      assert.equal(first.status, 200);
      await first.body?.cancel();
    } finally {
      await before.close();
    }
    // What a power loss can leave of a record published by a link before its content reached the
    // disk; the server starts again after it.
    const [folder] = [...Deno.readDirSync(join(directory, "uploads"))].map((entry) => entry.name);
    await Deno.writeTextFile(join(directory, "uploads", folder!, "upload.json"), "");
    const storage = new FileSystemStorage({ directory });
    const handler = createResumableHandler({ storage, expireAfter: 3_600_000 });
    const server = await serve(handler);
    try {
      const tested = await fetch(testRequest(server.url, chunks[0]!));
      assert.equal(tested.status, 204, "its chunks test as missing, not as a storage failure");
      await tested.body?.cancel();
      // The sweep and the quota's recount, which read every upload's record, go on.
      await handler.cleanup();

      // The client sends the file again: the broken upload is removed and begun anew. A chunk that
      // arrived before that removal is told so (503, retryable), and its retry is stored.
      let last;
      for (const chunk of chunks) {
        let response = await fetch(chunkRequest(server.url, chunk, "octet"));
        if (response.status === 503) {
          assert.equal((await response.json()).error.code, "upload_removed");
          response = await fetch(chunkRequest(server.url, chunk, "octet"));
        }
        assert.equal(response.status, 200);
        last = await response.json();
      }
      assert.equal(last.complete, true);
      const opened = await storage.openFile(last.file.id);
      assert.deepEqual(new Uint8Array(await new Response(opened!.body).arrayBuffer()), data);
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

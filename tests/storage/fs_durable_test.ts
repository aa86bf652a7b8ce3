// `durable: true` promises that what a power loss leaves is whole: every file whose name the storage
// publishes has reached the disk first. Checked by watching which files Deno is asked to fsync.
import assert from "node:assert/strict";
import { createResumableHandler } from "../../mod.ts";
import { FileSystemStorage } from "../../src/storage/fs.ts";
import { chunkRequest, clientChunks, seededBytes, serve } from "../_helpers.ts";

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

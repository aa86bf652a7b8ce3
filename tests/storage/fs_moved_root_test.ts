// A storage root moved (a restored backup, a volume mounted elsewhere, another working directory for
// a relative root) still serves the files completed before the move.
import assert from "node:assert/strict";
import { join } from "node:path";
import { createResumableHandler } from "../../mod.ts";
import { FileSystemStorage } from "../../src/storage/fs.ts";
import { uploadKey } from "../../src/identifier.ts";
import { chunkRequest, clientChunks, seededBytes, serve, testRequest } from "../_helpers.ts";

Deno.test("FileSystemStorage serves files completed before its root was moved", async () => {
  const parent = await Deno.makeTempDir({ prefix: "resumable-moved-" });
  try {
    const before = join(parent, "before");
    const data = seededBytes(2500, 11);
    const chunks = clientChunks(data, { identifier: "2500-moved", fileName: "report.pdf", chunkSize: 1000 });
    const first = await serve(
      createResumableHandler({ storage: new FileSystemStorage({ directory: before }) }),
    );
    let id: string;
    try {
      let last;
      for (const chunk of chunks) {
        const response = await fetch(chunkRequest(first.url, chunk, "octet"));
        assert.equal(response.status, 200);
        last = await response.json();
      }
      assert.equal(last.complete, true);
      id = last.file.id;
    } finally {
      await first.close();
    }

    const after = join(parent, "after");
    await Deno.rename(before, after);
    const storage = new FileSystemStorage({ directory: after });
    const opened = await storage.openFile(id);
    assert.ok(opened, "the file opens under the new root");
    assert.deepEqual(new Uint8Array(await new Response(opened.body).arrayBuffer()), data);
    assert.equal(opened.file.location, join(after, "files", id, "report.pdf"));

    // The completion is still known: the same file tested again is complete, with its location.
    const second = await serve(createResumableHandler({ storage }));
    try {
      const response = await fetch(testRequest(second.url, chunks[0]!));
      assert.equal(response.status, 200);
      assert.equal((await response.json()).file.id, id);
    } finally {
      await second.close();
    }
    const completed = await storage.getCompleted(uploadKey("", "2500-moved"));
    assert.equal(completed?.location, join(after, "files", id, "report.pdf"));
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

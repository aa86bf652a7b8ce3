// A finished upload's identifier reused by another file (custom identifiers built from the name, or
// two names that clean to the same default identifier): that file must not be told it is stored.
import assert from "node:assert/strict";
import { createResumableHandler, type StoredFile } from "../mod.ts";
import { chunkRequest, clientChunks, MEMORY_AND_DISK, seededBytes, serve, testRequest } from "./_helpers.ts";

for (const [name, open] of MEMORY_AND_DISK) {
  Deno.test(`${name}: another file under a completed upload's identifier is not told it is complete, and its chunks are refused as a mismatch`, async () => {
    const { storage, cleanup } = await open();
    const completed: StoredFile[] = [];
    const server = await serve(createResumableHandler({
      storage,
      onComplete: ({ file }) => {
        completed.push(file);
      },
    }));
    try {
      const send = (request: Request) =>
        fetch(new Request(request.url.replace("http://x/upload", server.url), request));
      const first = seededBytes(3000, 1);
      for (
        const chunk of clientChunks(first, { identifier: "report", fileName: "отчёт.pdf", chunkSize: 1000 })
      ) {
        const response = await send(chunkRequest("http://x/upload", chunk, "octet"));
        assert.equal(response.status, 200);
        await response.body?.cancel();
      }
      assert.equal(completed.length, 1);

      // Another size, and another name of the same size: each a different file.
      const others = [
        { data: seededBytes(5000, 2), fileName: "счёт.pdf" },
        { data: seededBytes(3000, 3), fileName: "счёт.pdf" },
      ];
      for (const { data, fileName } of others) {
        for (const dialect of ["resumable", "flow"] as const) {
          const chunks = clientChunks(data, { identifier: "report", fileName, chunkSize: 1000, dialect });
          const tested = await send(testRequest("http://x/upload", chunks[0]!));
          assert.equal(tested.status, 204, `${fileName}: a test says the chunk is missing`);
          await tested.body?.cancel();
          const posted = await send(chunkRequest("http://x/upload", chunks[0]!, "octet"));
          // Permanent for both clients: 400 for resumable.js, 415 for flow.js.
          assert.equal(posted.status, dialect === "flow" ? 415 : 400);
          const { error } = await posted.json();
          assert.equal(error.code, "upload_mismatch");
          assert.match(error.message, /completed upload "report".*another identifier/);
        }
      }

      // The same file again is still told it is complete, with the stored file.
      const again = clientChunks(first, { identifier: "report", fileName: "отчёт.pdf", chunkSize: 1000 });
      const tested = await send(testRequest("http://x/upload", again[1]!));
      assert.equal(tested.status, 200);
      const body = await tested.json();
      assert.equal(body.complete, true);
      assert.equal(body.file.id, completed[0]!.id);
      const stored = await storage.openFile(completed[0]!.id);
      assert.deepEqual(new Uint8Array(await new Response(stored!.body).arrayBuffer()), first);
      assert.equal(completed.length, 1);
    } finally {
      await server.close();
      await cleanup();
    }
  });
}

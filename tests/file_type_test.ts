// flow.js sends no type parameter; the type it does send is the chunk's own Content-Type.
import assert from "node:assert/strict";
import { createResumableHandler, type StoredFile } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { clientChunks, seededBytes, serve } from "./_helpers.ts";

for (const mode of ["multipart (stream)", "multipart (native)", "octet"] as const) {
  Deno.test(`flow.js ${mode}: the stored file has the type the browser sent the chunks with`, async () => {
    const completed: StoredFile[] = [];
    const server = await serve(createResumableHandler({
      storage: new MemoryStorage(),
      multipartParser: mode === "multipart (native)" ? "native" : "stream",
      onComplete: ({ file }) => {
        completed.push(file);
      },
    }));
    try {
      const chunks = clientChunks(seededBytes(2500, 7), {
        identifier: "2500-photopng",
        fileName: "photo.png",
        chunkSize: 1000,
        dialect: "flow",
      });
      let last;
      for (const chunk of chunks) {
        // As flow.js sends them: file.slice(start, end, file.type).
        const blob = new Blob([chunk.bytes], { type: "image/png" });
        let request;
        if (mode === "octet") {
          request = new Request(`${server.url}?${new URLSearchParams(chunk.params)}`, {
            method: "POST",
            body: blob,
          });
        } else {
          const form = new FormData();
          for (const [key, value] of Object.entries(chunk.params)) form.set(key, value);
          form.set("file", blob, "blob");
          request = new Request(server.url, { method: "POST", body: form });
        }
        const response = await fetch(request);
        assert.equal(response.status, 200);
        last = await response.json();
      }
      assert.equal(last.complete, true);
      assert.equal(completed.length, 1);
      assert.equal(completed[0]!.type, "image/png");
      assert.equal(last.file.type, "image/png");
    } finally {
      await server.close();
    }
  });
}

Deno.test("resumable.js: its resumableType stands, even when empty, over the chunk's Content-Type", async () => {
  const storage = new MemoryStorage();
  const server = await serve(createResumableHandler({ storage }));
  try {
    const [chunk] = clientChunks(seededBytes(500, 8), { identifier: "500-a", chunkSize: 1000 });
    const response = await fetch(`${server.url}?${new URLSearchParams(chunk!.params)}`, {
      method: "POST",
      body: new Blob([chunk!.bytes], { type: "image/png" }),
    });
    const status = await response.json();
    assert.equal(status.complete, true);
    assert.equal(status.file.type, "");
  } finally {
    await server.close();
  }
});

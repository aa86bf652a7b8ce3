// The upload limits of several processes sharing one storage, each with its own view of it.
import assert from "node:assert/strict";
import { createResumableHandler } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { chunkRequest, type ClientChunk, clientChunks, seededBytes } from "./_helpers.ts";

const BASE = "http://localhost/upload";

async function post(handler: (request: Request) => Promise<Response>, chunk: ClientChunk) {
  const response = await handler(chunkRequest(BASE, chunk, "octet"));
  const body = await response.json();
  return { status: response.status, body };
}

function processOn(directory: string) {
  return createResumableHandler({ storage: new FileSystemStorage({ directory }), maxUploadsPerScope: 1 });
}

Deno.test("cleanup() frees the room of an upload another process completed or cancelled", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-quota-" });
  try {
    const a = processOn(directory);
    const b = processOn(directory);
    const first = clientChunks(seededBytes(2000, 1), { identifier: "2000-first", chunkSize: 1000 });
    const second = clientChunks(seededBytes(2000, 2), { identifier: "2000-second", chunkSize: 1000 });
    const third = clientChunks(seededBytes(2000, 3), { identifier: "2000-third", chunkSize: 1000 });
    assert.equal((await post(a, first[0]!)).status, 200);
    // The client's next chunk lands on the other process, which completes the upload.
    assert.equal((await post(b, first[1]!)).body.complete, true);
    assert.equal((await post(a, second[0]!)).status, 429, "process a cannot know before its next sweep");
    await a.cleanup();
    assert.equal((await post(a, second[0]!)).status, 200);
    // And a cancel sent to the other process.
    const cancel = await b(new Request(`${BASE}?resumableIdentifier=2000-second`, { method: "DELETE" }));
    await cancel.body?.cancel();
    await a.cleanup();
    assert.equal((await post(a, third[0]!)).status, 200);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("cleanup() keeps the room of an upload still in progress", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-quota-" });
  try {
    const a = processOn(directory);
    const chunks = clientChunks(seededBytes(3000, 4), { identifier: "3000-busy", chunkSize: 1000 });
    assert.equal((await post(a, chunks[0]!)).status, 200);
    await a.cleanup();
    const other = clientChunks(seededBytes(2000, 5), { identifier: "2000-other", chunkSize: 1000 });
    assert.equal((await post(a, other[0]!)).status, 429, "the upload in progress still counts");
    assert.equal((await post(a, chunks[1]!)).status, 200);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

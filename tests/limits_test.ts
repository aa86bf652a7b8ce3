import assert from "node:assert/strict";
import { createResumableHandler } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { chunkRequest, type ClientChunk, clientChunks, seededBytes, serve } from "./_helpers.ts";

const BASE = "http://localhost/upload";

function upload(identifier: string, size: number, dialect: "resumable" | "flow" = "resumable") {
  return clientChunks(seededBytes(size, size), { identifier, chunkSize: 1000, dialect });
}

async function post(handler: (r: Request) => Promise<Response>, chunk: ClientChunk, user = "") {
  const request = chunkRequest(BASE, chunk, "octet");
  request.headers.set("x-user", user);
  const response = await handler(request);
  const body = await response.json();
  return { status: response.status, body };
}

Deno.test("maxUploadsPerScope: a third upload in progress answers 429 until one finishes or is cancelled", async () => {
  const handler = createResumableHandler({
    storage: new MemoryStorage(),
    scope: (request) => request.headers.get("x-user") ?? "",
    maxUploadsPerScope: 2,
  });
  const [a, b, c] = ["a", "b", "c"].map((id) => upload(`3000-${id}`, 3000));
  assert.equal((await post(handler, a![0]!, "alice")).status, 200);
  assert.equal((await post(handler, b![0]!, "alice")).status, 200);
  const refused = await post(handler, c![0]!, "alice");
  assert.equal(refused.status, 429);
  assert.equal(refused.body.error.code, "too_many_uploads");
  // Another scope is not affected, and uploads already counted keep going.
  assert.equal((await post(handler, c![0]!, "bob")).status, 200);
  assert.equal((await post(handler, a![1]!, "alice")).status, 200);
  assert.equal((await post(handler, a![2]!, "alice")).body.complete, true);
  assert.equal((await post(handler, c![0]!, "alice")).status, 200);
  assert.equal((await post(handler, upload("3000-d", 3000)[0]!, "alice")).status, 429);
  const cancel = new Request(`${BASE}?resumableIdentifier=3000-b`, {
    method: "DELETE",
    headers: { "x-user": "alice" },
  });
  await (await handler(cancel)).body?.cancel();
  assert.equal((await post(handler, upload("3000-d", 3000)[0]!, "alice")).status, 200);
});

Deno.test("maxPendingBytes: a new upload that does not fit answers 507 (retryable), flow.js too", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage(), maxPendingBytes: 5000 });
  const big = upload("3000-big", 3000);
  assert.equal((await post(handler, big[0]!)).status, 200);
  const other = upload("3000-other", 3000, "flow");
  const full = await post(handler, other[0]!);
  assert.equal(full.status, 507);
  assert.equal(full.body.error.code, "storage_full");
  assert.equal((await post(handler, upload("2000-fits", 2000)[0]!)).status, 200);
  for (const chunk of big.slice(1)) assert.equal((await post(handler, chunk)).status, 200);
  assert.equal((await post(handler, other[0]!)).status, 200, "room again once the big upload completed");
});

Deno.test("maxPendingBytes: a file larger than all uploads in progress may hold is refused for good, not told to retry", async () => {
  // Configured for large files without a word about maxPendingBytes: its default makes room for one.
  const roomy = createResumableHandler({ storage: new MemoryStorage(), maxFileSize: 16 * 1024 ** 3 });
  const twelve = 12 * 1024 ** 3, chunkSize = 8 * 1024 ** 2;
  const [first] = upload("12GiB-big", 1000);
  first!.bytes = new Uint8Array(chunkSize);
  Object.assign(first!.params, {
    resumableChunkSize: String(chunkSize),
    resumableCurrentChunkSize: String(chunkSize),
    resumableTotalSize: String(twelve),
    resumableTotalChunks: String(twelve / chunkSize),
  });
  const begun = await post(roomy, first!);
  assert.equal(begun.status, 200, "a 12 GiB file begins under the 10 GiB default");
  assert.equal(begun.body.chunksReceived, 1);

  const tight = createResumableHandler({ storage: new MemoryStorage(), maxPendingBytes: 5000 });
  for (const dialect of ["resumable", "flow"] as const) {
    const refused = await post(tight, upload(`6000-${dialect}`, 6000, dialect)[0]!);
    assert.equal(refused.status, dialect === "flow" ? 413 : 400);
    assert.equal(refused.body.error.code, "file_too_large");
    assert.match(refused.body.error.message, /maxPendingBytes 5000/);
  }
  assert.equal((await post(tight, upload("5000-fits", 5000)[0]!)).status, 200);
});

Deno.test("maxPendingBytes: refused one-byte first chunks declaring a gigabyte each hold no room, even after a restart", async () => {
  const storage = new MemoryStorage();
  const server = await serve(createResumableHandler({ storage }));
  try {
    // Sent chunked, without a Content-Length: the size is found wrong only once the body is read.
    for (let n = 0; n < 12; n++) {
      const params = new URLSearchParams({
        resumableChunkNumber: "1",
        resumableChunkSize: String(32 * 1024 ** 2),
        resumableCurrentChunkSize: String(32 * 1024 ** 2),
        resumableTotalSize: String(1024 ** 3),
        resumableIdentifier: `squat-${n}`,
        resumableFilename: "big.bin",
        resumableRelativePath: "big.bin",
        resumableTotalChunks: "32",
      });
      const response = await fetch(`${server.url}?${params}`, {
        method: "POST",
        body: new Blob(["x"]).stream(),
      });
      assert.equal(response.status, 400);
      assert.equal((await response.json()).error.code, "chunk_size_mismatch");
    }
    const [chunk] = upload("3000-real", 3000);
    const response = await fetch(chunkRequest(server.url, chunk!, "octet"));
    assert.equal(response.status, 200, "an upload after them is not told the storage is full");
    await response.body?.cancel();
  } finally {
    await server.close();
  }
  // Nor after a restart, which counts the uploads in storage again.
  const restarted = createResumableHandler({ storage });
  assert.equal((await post(restarted, upload("3000-after", 3000)[0]!)).status, 200);
});

/**
 * Posts `chunk` octet, its first 500 bytes now and the rest once `finish()` is called: a chunk still
 * arriving. Resolves once the handler is reading it.
 */
async function postArriving(handler: (r: Request) => Promise<Response>, chunk: ClientChunk) {
  let finish!: () => void;
  const rest = new Promise<void>((resolve) => finish = resolve);
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(chunk.bytes.slice(0, 500));
      await rest;
      controller.enqueue(chunk.bytes.slice(500));
      controller.close();
    },
  });
  const response = handler(
    new Request(`${BASE}?${new URLSearchParams(chunk.params)}`, { method: "POST", body }),
  );
  await new Promise((resolve) => setTimeout(resolve, 20));
  return { response, finish };
}

Deno.test("maxPendingBytes: a refused first chunk keeps the room of its upload while another of its chunks is arriving", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage(), maxPendingBytes: 5000 });
  const x = upload("3000-x", 3000);
  // resumable.js starts an upload with chunks in parallel: chunk 2 is still arriving...
  const { response: second, finish } = await postArriving(handler, x[1]!);
  // ...when chunk 1 breaks off and is refused.
  const broken = await handler(
    new Request(`${BASE}?${new URLSearchParams(x[0]!.params)}`, {
      method: "POST",
      body: new Blob(["x"]).stream(),
    }),
  );
  assert.equal(broken.status, 400);
  await broken.body?.cancel();
  finish();
  assert.equal((await second).status, 200);
  // The upload still holds its room: another that does not fit is refused, and its retry is not.
  assert.equal((await post(handler, upload("3000-y", 3000)[0]!)).status, 507);
  assert.equal((await post(handler, x[0]!)).status, 200);
});

Deno.test("maxPendingBytes: a recount while an upload's first chunk is arriving keeps that upload's room", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage(), maxPendingBytes: 5000 });
  const x = upload("3000-x", 3000);
  const { response: first, finish } = await postArriving(handler, x[0]!);
  // A sweep counts the uploads in storage again: this one has nothing stored yet.
  await handler.cleanup();
  finish();
  assert.equal((await first).status, 200);
  assert.equal((await post(handler, upload("3000-y", 3000)[0]!)).status, 507);
});

Deno.test("limits count uploads already in storage when the process starts", async () => {
  const storage = new MemoryStorage();
  const first = createResumableHandler({ storage, maxUploadsPerScope: 1 });
  assert.equal((await post(first, upload("3000-old", 3000)[0]!)).status, 200);
  const restarted = createResumableHandler({ storage, maxUploadsPerScope: 1 });
  assert.equal((await post(restarted, upload("3000-new", 3000)[0]!)).status, 429);
  assert.equal((await post(restarted, upload("3000-old", 3000)[1]!)).status, 200);
});

Deno.test("limits: file, chunk and chunk-count limits refuse with the client's permanent status", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage(), maxFileSize: 10_000, maxChunks: 5 });
  const tooBig = upload("20000-x", 20_000)[0]!;
  assert.equal((await post(handler, tooBig)).status, 400);
  const flowTooBig = upload("20000-y", 20_000, "flow")[0]!;
  assert.equal((await post(handler, flowTooBig)).status, 413);
  const tooMany = upload("9000-z", 9000)[0]!;
  assert.equal((await post(handler, tooMany)).body.error.code, "too_many_chunks");
});

Deno.test("limit options are validated when the handler is created", () => {
  for (
    const name of [
      "maxUploadsPerScope",
      "maxPendingBytes",
      "bodyTimeoutMs",
      "expireAfter",
      "completedExpireAfter",
    ]
  ) {
    for (const value of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => createResumableHandler({ [name]: value }), RangeError, `${name}=${value}`);
    }
  }
  createResumableHandler({ maxUploadsPerScope: Infinity, maxPendingBytes: Infinity });
  assert.throws(() => createResumableHandler({ expireAfter: 1000, bodyTimeoutMs: 5000 }), RangeError);
});

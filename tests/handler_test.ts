import assert from "node:assert/strict";
import { createResumableHandler, type ResumableHandlerOptions, type UploadStorage } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { chunkRequest, clientChunks, seededBytes, sha256, testRequest } from "./_helpers.ts";

const BASE = "http://localhost/upload";

function setup(options: ResumableHandlerOptions = {}) {
  const storage = new MemoryStorage();
  const completed: string[] = [];
  const handler = createResumableHandler({
    storage,
    onComplete: ({ file }) => {
      completed.push(file.id);
    },
    fileUrl: (file) => `/files/${file.id}`,
    ...options,
  });
  return { storage, completed, handler };
}

async function json(response: Response) {
  return await response.json();
}

async function storedBytes(storage: UploadStorage, id: string): Promise<Uint8Array> {
  const opened = await storage.openFile(id);
  assert.ok(opened, `file ${id} is stored`);
  return new Uint8Array(await new Response(opened.body).arrayBuffer());
}

Deno.test("test answers 204 (no body) for a missing chunk and 200 with the status once stored", async () => {
  const { handler } = setup();
  const [first] = clientChunks(seededBytes(3000, 1), { identifier: "3000-a", chunkSize: 1000 });
  const missing = await handler(testRequest(BASE, first!));
  assert.equal(missing.status, 204);
  assert.equal(await missing.text(), "");
  assert.equal(missing.headers.get("cache-control"), "no-store");
  const stored = await handler(chunkRequest(BASE, first!));
  assert.equal(stored.status, 200);
  assert.deepEqual(await json(stored), {
    identifier: "3000-a",
    fileName: "file.bin",
    totalSize: 3000,
    chunksReceived: 1,
    totalChunks: 3,
    status: "uploading",
    complete: false,
  });
  const present = await handler(testRequest(BASE, first!));
  assert.equal(present.status, 200);
  assert.equal((await json(present)).chunksReceived, 1);
});

Deno.test("upload assembles out-of-order and duplicated chunks exactly once, byte-identical", async () => {
  const { handler, storage, completed } = setup();
  const data = seededBytes(10_500, 2);
  const chunks = clientChunks(data, { identifier: "10500-b", chunkSize: 1000 });
  const order = [5, 1, 9, 9, 2, 10, 3, 4, 1, 6, 7, 8].map((n) => chunks[n - 1]!);
  const statuses = [];
  for (const chunk of order) statuses.push(await json(await handler(chunkRequest(BASE, chunk))));
  assert.equal(completed.length, 1);
  const last = statuses.at(-1);
  assert.equal(last.complete, true);
  assert.equal(last.file.size, 10_500);
  assert.equal(last.file.url, `/files/${completed[0]}`);
  assert.equal(await sha256(await storedBytes(storage, completed[0]!)), await sha256(data));
  assert.equal(
    await storage.countChunks(last.file.id === completed[0] ? (await findKey(storage, completed[0]!)) : ""),
    0,
  );
});

async function findKey(storage: UploadStorage, fileId: string): Promise<string> {
  return (await storage.openFile(fileId))!.file.uploadKey;
}

Deno.test("every chunk of a completed upload tests 200 with the completed JSON, and re-posts store nothing", async () => {
  const { handler, completed } = setup();
  const chunks = clientChunks(seededBytes(2500, 3), { identifier: "2500-c", chunkSize: 1000 });
  for (const chunk of chunks) await (await handler(chunkRequest(BASE, chunk))).body?.cancel();
  for (const chunk of chunks) {
    const response = await handler(testRequest(BASE, chunk));
    assert.equal(response.status, 200);
    const body = await json(response);
    assert.equal(body.complete, true);
    assert.equal(body.file.id, completed[0]);
  }
  const again = await json(await handler(chunkRequest(BASE, chunks[0]!)));
  assert.equal(again.complete, true);
  assert.equal(completed.length, 1);
});

Deno.test("flow.js multipart uploads with parameters only in form fields", async () => {
  const { handler, storage, completed } = setup();
  const data = seededBytes(4096, 4);
  for (const chunk of clientChunks(data, { identifier: "4096-d", chunkSize: 1024, dialect: "flow" })) {
    const response = await handler(chunkRequest(BASE, chunk));
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }
  assert.equal(completed.length, 1);
  assert.deepEqual(await storedBytes(storage, completed[0]!), data);
});

Deno.test("octet uploads accept any Content-Type, as flow.js sends the file's own type", async () => {
  const { handler, storage, completed } = setup();
  const data = seededBytes(3000, 5);
  for (const chunk of clientChunks(data, { identifier: "3000-e", chunkSize: 1000, dialect: "flow" })) {
    const response = await handler(
      new Request(`${BASE}?${new URLSearchParams(chunk.params)}`, {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: chunk.bytes,
      }),
    );
    assert.equal(response.status, 200, await response.clone().text());
    await response.body?.cancel();
  }
  assert.deepEqual(await storedBytes(storage, completed[0]!), data);
});

Deno.test("0-byte (flow.js) and 1-byte files complete", async () => {
  const { handler, storage } = setup();
  for (const [size, dialect] of [[0, "flow"], [1, "resumable"]] as const) {
    const data = seededBytes(size, 6);
    const [chunk] = clientChunks(data, { identifier: `${size}-f`, chunkSize: 1024, dialect });
    for (const mode of ["multipart", "octet"] as const) {
      const body = await json(await handler(chunkRequest(BASE, chunk!, mode)));
      assert.equal(body.complete, true, `${size} bytes, ${mode}`);
      assert.deepEqual(await storedBytes(storage, body.file.id), data);
    }
  }
});

Deno.test("forceChunkSize and stretched layouts both complete with the right chunk count", async () => {
  for (const forceChunkSize of [true, false]) {
    const { handler, storage, completed } = setup();
    const data = seededBytes(2500, 7);
    const chunks = clientChunks(data, { identifier: "2500-g", chunkSize: 1000, forceChunkSize });
    assert.equal(chunks.length, forceChunkSize ? 3 : 2);
    const statuses = [];
    for (const chunk of chunks.toReversed()) {
      statuses.push(await json(await handler(chunkRequest(BASE, chunk))));
    }
    assert.equal(statuses.filter((s) => s.complete).length, 1, `forceChunkSize: ${forceChunkSize}`);
    assert.equal(statuses.at(-1).totalChunks, chunks.length);
    assert.deepEqual(await storedBytes(storage, completed[0]!), data);
  }
});

Deno.test("an under-reported resumableTotalChunks never triggers an early merge", async () => {
  const { handler, completed } = setup();
  const chunks = clientChunks(seededBytes(3000, 8), { identifier: "3000-h", chunkSize: 1000 });
  for (const chunk of chunks) chunk.params.resumableTotalChunks = String(chunk.number);
  const first = await json(await handler(chunkRequest(BASE, chunks[0]!)));
  const second = await json(await handler(chunkRequest(BASE, chunks[1]!)));
  assert.equal(first.complete || second.complete, false);
  assert.equal(second.totalChunks, 3);
  assert.equal((await json(await handler(chunkRequest(BASE, chunks[2]!)))).complete, true);
  assert.equal(completed.length, 1);
});

Deno.test("a chunk that disagrees with its upload is refused and the upload is untouched", async () => {
  const { handler, storage, completed } = setup();
  const data = seededBytes(3000, 9);
  const chunks = clientChunks(data, { identifier: "same-id", chunkSize: 1000 });
  await (await handler(chunkRequest(BASE, chunks[0]!))).body?.cancel();
  const other = clientChunks(seededBytes(4000, 10), { identifier: "same-id", chunkSize: 1000 });
  const refused = await handler(chunkRequest(BASE, other[1]!));
  assert.equal(refused.status, 400);
  const error = (await json(refused)).error;
  assert.equal(error.code, "upload_mismatch");
  assert.match(error.message, /total size 4000 differs from 3000/);
  const renamed = clientChunks(data, { identifier: "same-id", chunkSize: 1000, fileName: "other.bin" });
  assert.equal((await json(await handler(chunkRequest(BASE, renamed[1]!)))).error.code, "upload_mismatch");
  for (const chunk of chunks.slice(1)) await (await handler(chunkRequest(BASE, chunk))).body?.cancel();
  assert.deepEqual(await storedBytes(storage, completed[0]!), data);
});

Deno.test("a test sent with POST (testMethod: 'POST') has no file part and is answered as a test", async () => {
  const { handler } = setup({ testMethod: "POST" });
  const [chunk] = clientChunks(seededBytes(2000, 11), {
    identifier: "2000-i",
    chunkSize: 1000,
    dialect: "flow",
  });
  const form = new FormData();
  for (const [key, value] of Object.entries(chunk!.params)) form.set(key, value);
  const missing = await handler(new Request(BASE, { method: "POST", body: form }));
  assert.equal(missing.status, 204);
  const octetTest = await handler(
    new Request(`${BASE}?${new URLSearchParams(chunk!.params)}`, { method: "POST" }),
  );
  assert.equal(octetTest.status, 204);
  await (await handler(chunkRequest(BASE, chunk!))).body?.cancel();
  const form2 = new FormData();
  for (const [key, value] of Object.entries(chunk!.params)) form2.set(key, value);
  assert.equal((await handler(new Request(BASE, { method: "POST", body: form2 }))).status, 200);
});

Deno.test("a flow.js test sent with testMethod POST and uploadMethod PUT reads its parameters from the multipart body", async () => {
  const { handler } = setup({ testMethod: "POST", uploadMethod: "PUT" });
  const [chunk] = clientChunks(seededBytes(10, 2), { identifier: "10-t", chunkSize: 100, dialect: "flow" });
  const testOf = (withFile = false) => {
    const form = new FormData(); // flow.js: parameters only in the body, no file part
    for (const [key, value] of Object.entries(chunk!.params)) form.set(key, value);
    if (withFile) form.set("file", new Blob([chunk!.bytes]), "blob");
    return new Request(BASE, { method: "POST", body: form });
  };
  const missing = await handler(testOf());
  assert.equal(missing.status, 204, await missing.text());
  const put = await handler(new Request(chunkRequest(BASE, chunk!), { method: "PUT" }));
  assert.equal(put.status, 200);
  await put.body?.cancel();
  const stored = await handler(testOf());
  assert.equal(stored.status, 200);
  assert.equal((await json(stored)).complete, true);
  // A chunk sent with the test method is refused, permanently for flow.js, not mistaken for a test.
  const withFile = await handler(testOf(true));
  assert.equal(withFile.status, 415);
  assert.match((await json(withFile)).error.message, /file/);
});

Deno.test("uploads arrive with PUT when uploadMethod is PUT, and POST is then refused with 405", async () => {
  const { handler, completed } = setup({ uploadMethod: "PUT" });
  const [chunk] = clientChunks(seededBytes(100, 12), { identifier: "100-j", chunkSize: 1000 });
  const request = chunkRequest(BASE, chunk!, "octet");
  const put = await handler(new Request(request, { method: "PUT" }));
  assert.equal(put.status, 200);
  await put.body?.cancel();
  assert.equal(completed.length, 1);
  const post = await handler(chunkRequest(BASE, chunk!, "octet"));
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, PUT, DELETE, OPTIONS");
  assert.equal((await json(post)).error.code, "method_not_allowed");
});

Deno.test("resumable.js base64 chunks (chunkFormat: 'base64') are decoded", async () => {
  const { handler, storage } = setup();
  const data = seededBytes(700, 13);
  const [chunk] = clientChunks(data, { identifier: "700-k", chunkSize: 1000 });
  const form = new FormData();
  for (const [key, value] of Object.entries(chunk!.params)) form.set(key, value);
  form.set("file", `data:application/octet-stream;base64,${btoa(String.fromCharCode(...data))}`);
  const body = await json(await handler(new Request(BASE, { method: "POST", body: form })));
  assert.equal(body.complete, true);
  assert.deepEqual(await storedBytes(storage, body.file.id), data);
});

Deno.test("parameterNamespace and fileParameterName rename every field", async () => {
  const { handler, completed } = setup({ parameterNamespace: "up_", fileParameterName: "blob" });
  const [chunk] = clientChunks(seededBytes(10, 14), { identifier: "10-l", chunkSize: 1000 });
  const form = new FormData();
  for (const [key, value] of Object.entries(chunk!.params)) form.set(`up_${key}`, value);
  form.set("up_blob", new Blob([chunk!.bytes]));
  const response = await handler(new Request(BASE, { method: "POST", body: form }));
  assert.equal(response.status, 200, await response.clone().text());
  await response.body?.cancel();
  assert.equal(completed.length, 1);
});

Deno.test("an octet body whose Content-Length is wrong is refused before any of it is read", async () => {
  const { handler } = setup();
  const [chunk] = clientChunks(seededBytes(1000, 15), { identifier: "1000-m", chunkSize: 1000 });
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled += 1;
      controller.enqueue(new Uint8Array(64 * 1024));
    },
  });
  const response = await handler(
    new Request(`${BASE}?${new URLSearchParams(chunk!.params)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-length": String(50 * 1024 * 1024) },
      body,
    }),
  );
  assert.equal(response.status, 400);
  assert.equal((await json(response)).error.code, "body_too_large");
  assert.ok(pulled <= 1, `pulled ${pulled} times`);
});

Deno.test("an octet body longer than its chunk is cut off at the limit and nothing is stored", async () => {
  const { handler } = setup();
  const [chunk] = clientChunks(seededBytes(1000, 16), { identifier: "1000-n", chunkSize: 1000 });
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      sent += 600;
      if (sent > 100_000) controller.close();
      else controller.enqueue(new Uint8Array(600));
    },
  });
  const response = await handler(
    new Request(`${BASE}?${new URLSearchParams(chunk!.params)}`, { method: "POST", body }),
  );
  assert.equal(response.status, 400);
  assert.equal((await json(response)).error.code, "chunk_size_mismatch");
  assert.ok(sent < 5000, `read ${sent} bytes of a body that should stop at 1000`);
  assert.equal((await handler(testRequest(BASE, chunk!))).status, 204);
});

Deno.test("a multipart body larger than the largest legal chunk is refused without buffering it", async () => {
  const { handler } = setup({ maxChunkSize: 1024 });
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      sent += 65_536;
      if (sent > 64 * 1024 * 1024) controller.close();
      else controller.enqueue(new Uint8Array(65_536).fill(97));
    },
  });
  const response = await handler(
    new Request(BASE, {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=x" },
      body,
    }),
  );
  assert.equal(response.status, 413, "no parameter in the URL: flow.js' status");
  assert.equal((await json(response)).error.code, "body_too_large");
  assert.ok(sent < 1024 * 1024, `read ${sent} bytes`);
});

Deno.test("flow.js requests get flow's permanent statuses: 413 for too large, 415 for invalid", async () => {
  const { handler } = setup({ maxFileSize: 1000 });
  const [big] = clientChunks(seededBytes(2000, 17), {
    identifier: "2000-o",
    chunkSize: 2000,
    dialect: "flow",
  });
  const tooLarge = await handler(chunkRequest(BASE, big!));
  assert.equal(tooLarge.status, 413);
  assert.equal((await json(tooLarge)).error.code, "file_too_large");
  const [small] = clientChunks(seededBytes(10, 18), { identifier: "10-o", chunkSize: 100, dialect: "flow" });
  small!.params.flowChunkNumber = "2";
  const invalid = await handler(chunkRequest(BASE, small!));
  assert.equal(invalid.status, 415);
  assert.equal((await json(invalid)).error.code, "chunk_out_of_range");
  assert.equal(
    (await handler(testRequest(BASE, small!))).status,
    415,
    "flow.js can be stopped from the test",
  );
});

Deno.test("a multipart upload without the file field is refused with 415", async () => {
  const { handler } = setup();
  const [chunk] = clientChunks(seededBytes(10, 19), { identifier: "10-p", chunkSize: 100 });
  const form = new FormData();
  for (const [key, value] of Object.entries(chunk!.params)) form.set(key, value);
  const response = await handler(new Request(BASE, { method: "POST", body: form }));
  assert.equal(response.status, 415);
  assert.match((await json(response)).error.message, /no file field "file"/);
});

Deno.test("malformed multipart gets a clear 400, never a 5xx", async () => {
  const { handler } = setup();
  const [chunk] = clientChunks(seededBytes(10, 20), { identifier: "10-q", chunkSize: 100 });
  const response = await handler(
    new Request(`${BASE}?${new URLSearchParams(chunk!.params)}`, {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=abc" },
      body: '--abc\r\nContent-Disposition: form-data; name="file"\r\n\r\ntruncated',
    }),
  );
  assert.ok(response.status >= 400 && response.status < 500, `status ${response.status}`);
  // The platform parser may read a truncated part as "no file"; both answers say what is wrong.
  assert.ok(["malformed_body", "unsupported_media_type"].includes((await json(response)).error.code));
});

Deno.test("a storage failure answers 503 (retryable) and is reported to onError", async () => {
  const errors: unknown[] = [];
  const storage = new MemoryStorage();
  storage.putChunk = () => Promise.reject(new Error("disk on fire"));
  const handler = createResumableHandler({ storage, onError: (error) => errors.push(error) });
  const [chunk] = clientChunks(seededBytes(10, 21), { identifier: "10-r", chunkSize: 100 });
  const response = await handler(chunkRequest(BASE, chunk!));
  assert.equal(response.status, 503);
  assert.equal((await json(response)).error.code, "storage_unavailable");
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /disk on fire/);
});

Deno.test("an onComplete hook that throws is reported, and the upload stays complete", async () => {
  const errors: unknown[] = [];
  const handler = createResumableHandler({
    storage: new MemoryStorage(),
    onComplete: () => {
      throw new Error("hook failed");
    },
    onError: (error) => errors.push(error),
  });
  const [chunk] = clientChunks(seededBytes(10, 22), { identifier: "10-s", chunkSize: 100 });
  const body = await json(await handler(chunkRequest(BASE, chunk!)));
  assert.equal(body.complete, true);
  assert.equal(errors.length, 1);
  assert.equal((await handler(testRequest(BASE, chunk!))).status, 200);
});

Deno.test("onComplete can read the stored file", async () => {
  let seen = "";
  const data = seededBytes(3000, 23);
  const handler = createResumableHandler({
    storage: new MemoryStorage(),
    onComplete: async (upload) => {
      seen = await sha256(new Uint8Array(await new Response(await upload.open()).arrayBuffer()));
    },
  });
  for (const chunk of clientChunks(data, { identifier: "3000-t", chunkSize: 1000 })) {
    await (await handler(chunkRequest(BASE, chunk))).body?.cancel();
  }
  assert.equal(seen, await sha256(data));
});

Deno.test("the same identifier in two scopes makes two uploads", async () => {
  const storage = new MemoryStorage();
  const handler = createResumableHandler({
    storage,
    scope: (request) => request.headers.get("x-user") ?? "",
  });
  const ids: string[] = [];
  for (const [user, seed] of [["alice", 24], ["bob", 25]] as const) {
    const data = seededBytes(500, seed);
    const [chunk] = clientChunks(data, { identifier: "500-same", chunkSize: 1000 });
    const request = chunkRequest(BASE, chunk!, "octet");
    request.headers.set("x-user", user);
    const body = await json(await handler(request));
    ids.push(body.file.id);
    assert.deepEqual(await storedBytes(storage, body.file.id), data);
  }
  assert.notEqual(ids[0], ids[1]);
});

Deno.test("OPTIONS answers 204 with the allowed methods", async () => {
  const { handler } = setup();
  const response = await handler(new Request(BASE, { method: "OPTIONS" }));
  assert.equal(response.status, 204);
  assert.equal(response.headers.get("allow"), "GET, POST, DELETE, OPTIONS");
});

Deno.test("a failed assembly answers 503 and the client's retry assembles at once", async () => {
  const storage = new MemoryStorage();
  const commit = storage.commit.bind(storage);
  let failures = 1;
  storage.commit = (claim, data, file) => {
    if (failures-- > 0) {
      data.cancel();
      return Promise.reject(new Error("disk full"));
    }
    return commit(claim, data, file);
  };
  const handler = createResumableHandler({ storage, onError: () => {} });
  const data = seededBytes(2000, 26);
  const chunks = clientChunks(data, { identifier: "2000-u", chunkSize: 1000 });
  await (await handler(chunkRequest(BASE, chunks[0]!))).body?.cancel();
  const failed = await handler(chunkRequest(BASE, chunks[1]!));
  assert.equal(failed.status, 503);
  await failed.body?.cancel();
  const retried = await json(await handler(chunkRequest(BASE, chunks[1]!)));
  assert.equal(retried.complete, true);
  assert.deepEqual(await storedBytes(storage, retried.file.id), data);
});

Deno.test("statusFor answering a status without a body, or no valid status, still gets a response", async () => {
  for (const status of [204, 205, 304]) {
    const { handler } = setup({ statusFor: () => status });
    const response = await handler(new Request(BASE)); // a test without parameters
    assert.equal(response.status, status);
    assert.equal(response.body, null);
  }
  // Not an HTTP status a Response can carry: the default status instead.
  for (const status of [99, 600, 1000, 404.5, Number.NaN]) {
    const { handler } = setup({ statusFor: () => status });
    const response = await handler(new Request(BASE));
    assert.equal(response.status, 400, String(status));
    assert.equal((await json(response)).error.code, "invalid_identifier");
  }
});

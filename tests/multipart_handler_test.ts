// The multipart branch of the handler with both parsers: same answers for well-formed bodies, clear
// 4xx for malformed ones, and nothing stored from a body that fails after its file part.
import assert from "node:assert/strict";
import { createResumableHandler } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { chunkRequest, clientChunks, seededBytes, serve, sha256, testRequest } from "./_helpers.ts";

const BASE = "http://localhost/upload";
const PARSERS = ["stream", "native"] as const;

function handlerFor(parser: "stream" | "native") {
  const storage = new MemoryStorage();
  return { storage, handler: createResumableHandler({ storage, multipartParser: parser }) };
}

function rawMultipart(url: string, body: string | Uint8Array, boundary = "b"): Request {
  return new Request(url, {
    method: "POST",
    headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
    body: body as BodyInit,
  });
}

function fieldsOf(params: Record<string, string>): string {
  return Object.entries(params)
    .map(([k, v]) => `--b\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`).join("");
}

function filePart(text: string): string {
  return `--b\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n` +
    `Content-Type: application/octet-stream\r\n\r\n${text}\r\n`;
}

Deno.test("both multipart parsers store a flow.js upload with identical bytes", async () => {
  for (const parser of PARSERS) {
    const { storage, handler } = handlerFor(parser);
    const data = seededBytes(300_001, 7);
    const chunks = clientChunks(data, { identifier: `f-${parser}`, chunkSize: 65_536, dialect: "flow" });
    let last;
    for (const chunk of chunks) {
      const response = await handler(chunkRequest(BASE, chunk));
      assert.equal(response.status, 200, parser);
      last = await response.json();
    }
    assert.equal(last.complete, true, parser);
    const opened = await storage.openFile(last.file.id);
    const stored = new Uint8Array(await new Response(opened!.body).arrayBuffer());
    assert.equal(await sha256(stored), await sha256(data), parser);
  }
});

Deno.test("the stream parser refuses a body that turns malformed after the file part, storing nothing", async () => {
  const { handler } = handlerFor("stream");
  const [chunk] = clientChunks(seededBytes(5, 1), { identifier: "m-1", chunkSize: 100, dialect: "flow" });
  for (
    const tail of [
      "", // no closing delimiter
      filePart("again") + "--b--\r\n", // duplicate file field
      "--b\r\nbroken header\r\n\r\nx\r\n--b--\r\n",
    ]
  ) {
    const body = fieldsOf(chunk!.params) + filePart("hello") + tail;
    const response = await handler(rawMultipart(BASE, body));
    assert.equal(response.status, 415, JSON.stringify(tail)); // flow dialect: malformed_body is 415
    assert.equal((await response.json()).error.code, "malformed_body");
    const test = await handler(testRequest(BASE, chunk!));
    assert.equal(test.status, 204, "the chunk was not stored");
    await test.body?.cancel();
  }
});

Deno.test("the stream parser answers 400 for a missing or bad boundary", async () => {
  const { handler } = handlerFor("stream");
  const [chunk] = clientChunks(seededBytes(5, 2), { identifier: "m-2", chunkSize: 100 });
  const url = `${BASE}?${new URLSearchParams(chunk!.params)}`;
  for (const type of ["multipart/form-data", "multipart/form-data; boundary=\u00e9"]) {
    const response = await handler(
      new Request(url, { method: "POST", headers: { "content-type": type }, body: "x" }),
    );
    assert.equal(response.status, 400, type);
    assert.equal((await response.json()).error.code, "malformed_body");
  }
});

Deno.test("the stream parser asks for fields before the file part; the native parser accepts any order", async () => {
  for (const parser of PARSERS) {
    const { handler } = handlerFor(parser);
    const [chunk] = clientChunks(seededBytes(5, 3), {
      identifier: `late-${parser}`,
      chunkSize: 100,
      dialect: "flow",
    });
    const body = filePart("hello") + fieldsOf(chunk!.params) + "--b--\r\n";
    const response = await handler(rawMultipart(BASE, body));
    const json = await response.json();
    if (parser === "native") assert.equal(response.status, 200);
    else {
      assert.equal(response.status, 400);
      assert.match(json.error.message, /must precede the file part/);
    }
  }
});

Deno.test("both parsers accept a chunk sent as a base64 data: URL string", async () => {
  for (const parser of PARSERS) {
    const { handler } = handlerFor(parser);
    const [chunk] = clientChunks(new TextEncoder().encode("hello"), {
      identifier: `b64-${parser}`,
      chunkSize: 100,
    });
    const body = fieldsOf(chunk!.params) +
      `--b\r\nContent-Disposition: form-data; name="file"\r\n\r\ndata:application/octet-stream;base64,aGVsbG8=\r\n--b--\r\n`;
    const response = await handler(rawMultipart(BASE, body));
    assert.equal(response.status, 200, parser);
    assert.equal((await response.json()).complete, true);
  }
});

Deno.test("the stream parser refuses a file part of the wrong size and a body over the limit", async () => {
  const { handler } = handlerFor("stream");
  const [chunk] = clientChunks(seededBytes(5, 4), { identifier: "m-4", chunkSize: 100 });
  const short = await handler(rawMultipart(BASE, fieldsOf(chunk!.params) + filePart("hell") + "--b--\r\n"));
  assert.equal(short.status, 400);
  assert.equal((await short.json()).error.code, "chunk_size_mismatch");
  const url = `${BASE}?${new URLSearchParams(chunk!.params)}`;
  const huge = await handler(rawMultipart(url, filePart("x".repeat(200_000)) + "--b--\r\n"));
  assert.equal(huge.status, 400);
  assert.equal((await huge.json()).error.code, "body_too_large");
});

Deno.test("both multipart parsers answer 408 to a body that errors midway, and store nothing", async () => {
  for (const parser of PARSERS) {
    const { handler } = handlerFor(parser);
    const [chunk] = clientChunks(seededBytes(2000, 9), { identifier: `gone-${parser}`, chunkSize: 4096 });
    const head = new TextEncoder().encode(fieldsOf(chunk!.params) + filePart("").slice(0, -2));
    let sent = false;
    // A client that goes away: the fields and part of the file arrive, then the connection resets.
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent) return controller.error(new Error("connection reset"));
        sent = true;
        controller.enqueue(head);
        controller.enqueue(chunk!.bytes.subarray(0, 1000));
      },
    });
    const response = await handler(rawMultipart(BASE, body as unknown as Uint8Array));
    assert.equal(response.status, 408, parser);
    assert.equal((await response.json()).error.code, "body_incomplete", parser);
    assert.equal((await handler(testRequest(BASE, chunk!))).status, 204, `${parser}: nothing stored`);
  }
});

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

Deno.test("flow.js multipart refused before its fields are read gets flow.js statuses: 413 too large, 415 malformed", async () => {
  // flow.js puts no parameter in the URL, so only the missing query says which client this is.
  const [big] = clientChunks(seededBytes(1 << 20, 1), {
    identifier: "big",
    chunkSize: 1 << 20,
    dialect: "flow",
  });
  const server = await serve(createResumableHandler({ storage: new MemoryStorage(), maxChunkSize: 1024 }));
  try {
    const declared = await fetch(chunkRequest(server.url, big!)); // with Content-Length
    assert.equal(declared.status, 413);
    assert.equal((await declared.json()).error.code, "body_too_large");
  } finally {
    await server.close();
  }
  for (const parser of PARSERS) {
    const handler = createResumableHandler({
      storage: new MemoryStorage(),
      maxChunkSize: 1024,
      multipartParser: parser,
    });
    // No Content-Length: cut off while read, in a part before the fields.
    const other = `--b\r\nContent-Disposition: form-data; name="other"; filename="x"\r\n\r\n` +
      `${"x".repeat(1 << 20)}\r\n`;
    const counted = await handler(
      rawMultipart(BASE, other + fieldsOf(big!.params) + filePart("x") + "--b--\r\n"),
    );
    assert.equal(counted.status, 413, parser);
    assert.equal((await counted.json()).error.code, "body_too_large", parser);
    const malformed = await handler(
      rawMultipart(BASE, fieldsOf({ flowChunkNumber: "1" }) + "--b\r\nbroken\r\n\r\nx\r\n--b--\r\n"),
    );
    assert.equal(malformed.status, 415, parser);
    // The platform parser skips the broken part, then finds no file field: 415 too.
    const code = parser === "stream" ? "malformed_body" : "unsupported_media_type";
    assert.equal((await malformed.json()).error.code, code, parser);
  }
});

Deno.test("both parsers accept a resumable.js base64 chunk as large as the default chunkSize allows", async () => {
  // One chunk of 2 MiB - 1: the largest legal chunk for chunkSize 1 MiB, 2.7 MB as a data: URL.
  const data = seededBytes(2 * 1024 * 1024 - 1, 3);
  const [chunk] = clientChunks(data, { identifier: "b64-big", chunkSize: 1024 * 1024 });
  for (const parser of PARSERS) {
    const { storage, handler } = handlerFor(parser);
    const form = new FormData(); // resumable.js: parameters in the URL and the form
    for (const [key, value] of Object.entries(chunk!.params)) form.set(key, value);
    form.set("file", `data:application/octet-stream;base64,${base64(data)}`);
    const url = `${BASE}?${new URLSearchParams(chunk!.params)}`;
    const response = await handler(new Request(url, { method: "POST", body: form }));
    assert.equal(response.status, 200, `${parser}: ${await response.clone().text()}`);
    const status = await response.json();
    assert.equal(status.complete, true, parser);
    const opened = await storage.openFile(status.file.id);
    assert.equal(await sha256(await new Response(opened!.body).arrayBuffer()), await sha256(data), parser);
  }
});

Deno.test("the stream parser reads a base64 chunk only as far as the fields before it allow, unauthorized or not", async () => {
  let authorized = 0;
  const handler = createResumableHandler({
    storage: new MemoryStorage(),
    authorize: () => (authorized++, "unauthorized"),
  });
  // flow.js style (no query string): ten bytes declared, then 60 MiB of data: URL.
  const [chunk] = clientChunks(seededBytes(10, 1), { identifier: "10-b64", chunkSize: 10, dialect: "flow" });
  const head = new TextEncoder().encode(
    fieldsOf(chunk!.params) + `--b\r\nContent-Disposition: form-data; name="file"\r\n\r\ndata:x;base64,`,
  );
  const filler = new Uint8Array(64 * 1024).fill(65); // "AAAA…"
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      const piece = pulled === 0 ? head : filler;
      pulled += piece.byteLength;
      controller.enqueue(piece.slice());
      if (pulled > 60 * 1024 * 1024) controller.close();
    },
  });
  const response = await handler(
    new Request(BASE, {
      method: "POST",
      headers: { "content-type": "multipart/form-data; boundary=b" },
      body,
    }),
  );
  assert.equal(response.status, 413);
  const { error } = await response.json();
  assert.equal(error.code, "body_too_large");
  assert.match(error.message, /"file" is larger than \d+ bytes/);
  assert.ok(pulled < 1024 * 1024, `read ${pulled} bytes of the body`);
  assert.equal(authorized, 0);

  // Fields that are themselves wrong are refused in their own terms, before the value is read.
  const wrong = { ...chunk!.params, flowCurrentChunkSize: "11" };
  const refused = await handler(rawMultipart(
    BASE,
    fieldsOf(wrong) +
      `--b\r\nContent-Disposition: form-data; name="file"\r\n\r\ndata:x;base64,${
        "A".repeat(4096)
      }\r\n--b--\r\n`,
  ));
  assert.equal(refused.status, 415);
  assert.equal((await refused.json()).error.code, "chunk_size_mismatch");
});

Deno.test("the stream parser refuses megabytes of text fields before a small file part", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage(), maxChunkSize: 1 << 20 });
  const [chunk] = clientChunks(seededBytes(10, 1), {
    identifier: "10-junk",
    chunkSize: 1 << 20,
    dialect: "flow",
  });
  const form = new FormData();
  form.set("junk", "x".repeat(1_900_000));
  for (const [key, value] of Object.entries(chunk!.params)) form.set(key, value);
  form.set("file", new Blob([chunk!.bytes]), "blob");
  const response = await handler(new Request(BASE, { method: "POST", body: form }));
  assert.equal(response.status, 413);
  const { error } = await response.json();
  assert.equal(error.code, "body_too_large");
  assert.match(error.message, /text fields/);
});

Deno.test("the stream parser reads the request body without a stream of its own: one stream per upload, the file part's", async () => {
  // Under Deno every stream survives V8's young-generation collections until a full one; one less
  // per request made each of a multipart server's collections keep about a fifth less (docs/performance.md).
  let made = 0;
  const Platform = globalThis.ReadableStream;
  class Counted<R> extends Platform<R> {
    constructor(...args: ConstructorParameters<typeof ReadableStream<R>>) {
      super(...args);
      made++;
    }
  }
  const { handler } = handlerFor("stream");
  // The first of two chunks: no assembly, whose streams are the storage's.
  const [chunk] = clientChunks(seededBytes(1000, 3), { identifier: "one-stream", chunkSize: 500 });
  const request = chunkRequest(BASE, chunk!);
  const body = request.body; // the platform's own, made before counting
  globalThis.ReadableStream = Counted as typeof ReadableStream;
  let response;
  try {
    response = await handler(request);
  } finally {
    globalThis.ReadableStream = Platform;
  }
  assert.equal(response.status, 200, await response.text());
  assert.ok(body instanceof Platform);
  assert.equal(made, 1);
});

for (const parser of PARSERS) {
  Deno.test(`${parser} parser: a multipart upload without a body is refused as malformed, in either client's terms`, async () => {
    const { handler, storage } = handlerFor(parser);
    const [chunk] = clientChunks(seededBytes(10, 21), { identifier: "10-empty", chunkSize: 100 });
    const noBody = (url: string) =>
      new Request(url, { method: "POST", headers: { "content-type": "multipart/form-data; boundary=b" } });
    // resumable.js: parameters in the URL; 400 is final there.
    const resumable = await handler(noBody(`${BASE}?${new URLSearchParams(chunk!.params)}`));
    assert.equal(resumable.status, 400);
    assert.deepEqual((await resumable.json()).error, {
      code: "malformed_body",
      message: "Multipart request has no body",
    });
    // flow.js: everything in the body, so nothing says which upload; 415 is final there.
    const flow = await handler(noBody(BASE));
    assert.equal(flow.status, 415);
    assert.equal((await flow.json()).error.code, "malformed_body");
    for await (const upload of storage.listUploads()) assert.fail(`nothing is stored: ${upload.key}`);
  });
}

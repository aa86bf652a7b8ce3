// `detachBodyBuffers`: the file-system storage frees each piece of a request body once written.
// Deno's own request bodies are byte streams, read into reused buffers, so the server here hands the
// handler a body of fresh pieces, as Bun's are, and keeps them to look at afterwards. The pieces are
// cut at sizes that put multipart delimiters and headers across and inside them.
import assert from "node:assert/strict";
import { createResumableHandler, type ResumableHandlerOptions } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { chunkRequest, clientChunks, seededBytes, serve, sha256, testRequest } from "./_helpers.ts";

const CHUNK = 256 * 1024;

const PIECE_SIZES = [1, 3, 70, 4093, 65536, 200_000, 2, 131_072];

/** A default (not byte) stream of `body`'s bytes in fresh buffers of PIECE_SIZES, kept in `seen`. */
function freshPieces(body: ReadableStream<Uint8Array>, seen: Uint8Array[]): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let pending = new Uint8Array(0);
  let ended = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const size = PIECE_SIZES[seen.length % PIECE_SIZES.length]!;
      while (!ended && pending.length < size) {
        const { done, value } = await reader.read();
        if (done) ended = true;
        else pending = new Uint8Array([...pending, ...value]);
      }
      if (pending.length === 0) return controller.close();
      const piece = pending.slice(0, size);
      pending = pending.slice(size);
      seen.push(piece);
      controller.enqueue(piece);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

async function fixture(options: Partial<ResumableHandlerOptions> = {}) {
  const parent = await Deno.makeTempDir({ prefix: "resumable-detach-" });
  const storage = new FileSystemStorage({ directory: `${parent}/root` });
  const handler = createResumableHandler({ storage, ...options });
  const pieces: Uint8Array[] = [];
  const server = await serve((request) =>
    handler(
      request.body
        ? new Request(request.url, {
          method: request.method,
          headers: request.headers,
          body: freshPieces(request.body, pieces),
          duplex: "half",
        } as RequestInit)
        : request,
    )
  );
  return {
    storage,
    handler,
    server,
    pieces,
    /** Uploads `data` chunk by chunk over HTTP; returns the stored file's bytes. */
    async upload(data: Uint8Array<ArrayBuffer>, mode: "octet" | "multipart", identifier: string) {
      let id: string | undefined;
      for (const chunk of clientChunks(data, { identifier, chunkSize: CHUNK, fileName: "név.bin" })) {
        const response = await fetch(chunkRequest(server.url, chunk, mode));
        const status = await response.json();
        assert.equal(response.status, 200, JSON.stringify(status));
        // The fields came through whole, the file name's UTF-8 included.
        assert.equal(status.identifier, identifier);
        assert.equal(status.fileName, "név.bin");
        id ??= status.file?.id;
      }
      assert.ok(id, "the last chunk completed the upload");
      const opened = await storage.openFile(id);
      return new Uint8Array(await new Response(opened!.body).arrayBuffer());
    },
    async close() {
      await server.close();
      await Deno.remove(parent, { recursive: true });
    },
  };
}

Deno.test("an octet body's pieces are freed once the file-system storage has written them, and the file is intact", async () => {
  const f = await fixture();
  try {
    const data = seededBytes(3 * CHUNK + 1000, 11);
    const stored = await f.upload(data, "octet", "detach-octet");
    assert.equal(await sha256(stored), await sha256(data));
    assert.ok(f.pieces.length >= 4, `one piece or more per chunk, got ${f.pieces.length}`);
    const kept = f.pieces.filter((piece) => piece.byteLength > 0).length;
    assert.equal(kept, 0, `${kept} of ${f.pieces.length} pieces still hold their bytes`);
  } finally {
    await f.close();
  }
});

Deno.test("detachBodyBuffers: false leaves every piece of an octet body as it was", async () => {
  const f = await fixture({ detachBodyBuffers: false });
  try {
    const data = seededBytes(3 * CHUNK + 1000, 12);
    const stored = await f.upload(data, "octet", "keep-octet");
    assert.equal(await sha256(stored), await sha256(data));
    assert.ok(f.pieces.length >= 4);
    assert.ok(f.pieces.every((piece) => piece.byteLength > 0), "a piece was detached");
  } finally {
    await f.close();
  }
});

Deno.test("a multipart body's pieces are all freed once read and stored, fields and delimiters included, and the file and its fields are intact", async () => {
  const f = await fixture();
  try {
    const data = seededBytes(3 * CHUNK + 1000, 13);
    const stored = await f.upload(data, "multipart", "detach-multipart");
    assert.equal(await sha256(stored), await sha256(data));
    assert.ok(f.pieces.length >= 12, `pieces split fields, delimiters and file bytes: ${f.pieces.length}`);
    // Pieces holding only fields or a delimiter are freed once read, those with file bytes once
    // stored: the piece that ends with the fields and starts the file, and the one that ends it.
    const kept = f.pieces.filter((piece) => piece.byteLength > 0).length;
    assert.equal(kept, 0, `${kept} of ${f.pieces.length} pieces still hold their bytes`);
  } finally {
    await f.close();
  }
});

Deno.test("detachBodyBuffers: false leaves every piece of a multipart body as it was", async () => {
  const f = await fixture({ detachBodyBuffers: false });
  try {
    const data = seededBytes(3 * CHUNK + 1000, 15);
    const stored = await f.upload(data, "multipart", "keep-multipart");
    assert.equal(await sha256(stored), await sha256(data));
    assert.ok(f.pieces.every((piece) => piece.byteLength > 0), "a piece was detached");
  } finally {
    await f.close();
  }
});

Deno.test("a body stream that hands out one buffer twice is refused whole, or stored with detachBodyBuffers: false", async () => {
  const half = () => seededBytes(CHUNK / 2, 14);
  const [chunk] = clientChunks(new Uint8Array([...half(), ...half()]), {
    identifier: "twice",
    chunkSize: CHUNK,
  });
  const request = () => {
    const piece = half();
    return new Request(`http://localhost/upload?${new URLSearchParams(chunk!.params)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: ReadableStream.from([piece, piece]),
    });
  };
  for (const detachBodyBuffers of [true, false]) {
    const parent = await Deno.makeTempDir({ prefix: "resumable-twice-" });
    try {
      const handler = createResumableHandler({
        storage: new FileSystemStorage({ directory: `${parent}/root` }),
        detachBodyBuffers,
      });
      const response = await handler(request());
      const body = await response.json();
      const test = await handler(testRequest("http://localhost/upload", chunk!));
      if (detachBodyBuffers) {
        // The second read finds the buffer emptied: the chunk comes up short, and nothing is kept.
        assert.equal(response.status, 400, JSON.stringify(body));
        assert.equal(body.error.code, "chunk_size_mismatch");
        assert.equal(test.status, 204);
      } else {
        assert.equal(response.status, 200, JSON.stringify(body));
        assert.equal(body.complete, true);
        assert.equal(test.status, 200);
      }
      await test.body?.cancel();
    } finally {
      await Deno.remove(parent, { recursive: true });
    }
  }
});

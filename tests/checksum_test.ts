import assert from "node:assert/strict";
import { createResumableHandler, type ResumableHandlerOptions } from "../mod.ts";
import { verifiedStream } from "../src/checksum.ts";
import { uploadKey } from "../src/identifier.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import {
  chunkRequest,
  type ClientChunk,
  clientChunks,
  seededBytes,
  sha256,
  testRequest,
} from "./_helpers.ts";

const BASE = "http://localhost/upload";

function setup(checksum: ResumableHandlerOptions["checksum"] = true) {
  const storage = new MemoryStorage();
  return { storage, handler: createResumableHandler({ storage, checksum }) };
}

function base64(hex: string): string {
  return btoa(String.fromCharCode(...hex.match(/../g)!.map((pair) => parseInt(pair, 16))));
}

function withParam(chunk: ClientChunk, name: string, value: string): ClientChunk {
  return { ...chunk, params: { ...chunk.params, [name]: value } };
}

const chunks = clientChunks(seededBytes(2500, 7), { identifier: "2500-sum", chunkSize: 1000 });
const flowChunks = clientChunks(seededBytes(2500, 8), {
  identifier: "2500-flow",
  chunkSize: 1000,
  dialect: "flow",
});
const wrong = "0".repeat(64);

Deno.test("checksum: a matching SHA-256 parameter (hex or base64) stores the chunk", async () => {
  const { handler, storage } = setup();
  const [first, second] = chunks;
  const one = await handler(
    chunkRequest(BASE, withParam(first!, "checksum", await sha256(first!.bytes)), "octet"),
  );
  assert.equal(one.status, 200, await one.text());
  const b64 = base64(await sha256(second!.bytes));
  const two = await handler(chunkRequest(BASE, withParam(second!, "checksum", b64), "multipart"));
  assert.equal(two.status, 200);
  assert.equal((await two.json()).complete, true);
  assert.ok(await storage.getCompleted(uploadKey("", "2500-sum")));
});

Deno.test("checksum: a mismatch answers 422 (retryable), stores nothing, and the retry succeeds", async () => {
  const { handler, storage } = setup();
  const [first] = chunks;
  for (const mode of ["octet", "multipart"] as const) {
    const refused = await handler(chunkRequest(BASE, withParam(first!, "checksum", wrong), mode));
    assert.equal(refused.status, 422);
    assert.equal((await refused.json()).error.code, "checksum_mismatch");
    assert.equal((await handler(testRequest(BASE, first!))).status, 204);
  }
  assert.equal(await storage.countChunks(uploadKey("", "2500-sum")), 0);
  const retried = await handler(
    chunkRequest(BASE, withParam(first!, "checksum", await sha256(first!.bytes)), "octet"),
  );
  assert.equal(retried.status, 200);
  await retried.body?.cancel();
});

Deno.test("checksum: flow.js multipart sends it as a form field; mismatch is 422 for flow too", async () => {
  const { handler } = setup();
  const [first] = flowChunks;
  const bad = await handler(chunkRequest(BASE, withParam(first!, "checksum", wrong)));
  assert.equal(bad.status, 422);
  await bad.body?.cancel();
  const good = await handler(chunkRequest(BASE, withParam(first!, "checksum", await sha256(first!.bytes))));
  assert.equal(good.status, 200);
  await good.body?.cancel();
});

Deno.test("checksum: a digest field after the file part is refused, never skipped, and nothing is stored", async () => {
  for (const parser of ["stream", "native"] as const) {
    const storage = new MemoryStorage();
    const handler = createResumableHandler({ storage, checksum: true, multipartParser: parser });
    const [first] = flowChunks;
    const form = new FormData();
    for (const [key, value] of Object.entries(first!.params)) form.set(key, value);
    form.set("file", new Blob([first!.bytes]), "blob");
    form.set("checksum", wrong); // after the file part: checked by nobody before the bytes are stored
    const refused = await handler(new Request(BASE, { method: "POST", body: form }));
    const { error } = await refused.json();
    // The platform's parser has the whole body first, so it can check the digest.
    if (parser === "native") assert.equal(error.code, "checksum_mismatch");
    else {
      assert.equal(refused.status, 415, "malformed, in flow.js' terms");
      assert.equal(error.code, "malformed_body");
      assert.match(error.message, /"checksum" must precede the file part/);
    }
    assert.equal(await storage.countChunks(uploadKey("", "2500-flow")), 0, parser);
  }
});

Deno.test("checksum: octet chunks may carry Content-Digest (RFC 9530) or Digest (RFC 3230)", async () => {
  const { handler } = setup();
  const [first, second] = chunks;
  const digestOf = async (chunk: ClientChunk) => base64(await sha256(chunk.bytes));
  const mismatch = chunkRequest(BASE, first!, "octet");
  mismatch.headers.set("content-digest", `sha-512=:AAAA:, sha-256=:${base64(wrong)}:`);
  assert.equal((await handler(mismatch)).status, 422);
  const modern = chunkRequest(BASE, first!, "octet");
  modern.headers.set("content-digest", `sha-256=:${await digestOf(first!)}:`);
  assert.equal((await handler(modern)).status, 200);
  const legacy = chunkRequest(BASE, second!, "octet");
  legacy.headers.set("digest", `SHA-256=${await digestOf(second!)}`);
  assert.equal((await handler(legacy)).status, 200);
});

Deno.test("checksum: required refuses a chunk without digest; unreadable digests are refused", async () => {
  const { handler } = setup({ required: true, parameter: "sum" });
  const [first] = chunks;
  const missing = await handler(chunkRequest(BASE, first!, "octet"));
  assert.equal(missing.status, 400);
  assert.equal((await missing.json()).error.code, "invalid_parameters");
  const garbage = await handler(chunkRequest(BASE, withParam(first!, "sum", "not-a-digest"), "octet"));
  assert.equal(garbage.status, 400);
  await garbage.body?.cancel();
  const named = await handler(
    chunkRequest(BASE, withParam(first!, "sum", await sha256(first!.bytes)), "octet"),
  );
  assert.equal(named.status, 200);
  await named.body?.cancel();
});

Deno.test("checksum: off by default, so a digest is ignored; bad option shapes throw", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage() });
  const response = await handler(chunkRequest(BASE, withParam(chunks[0]!, "checksum", wrong), "octet"));
  assert.equal(response.status, 200);
  await response.body?.cancel();
  assert.throws(() => createResumableHandler({ checksum: "yes" as never }), TypeError);
  assert.throws(() => createResumableHandler({ checksum: { parameter: "" } }), TypeError);
});

// The same identifier may name another file of the same size once the first is cancelled: a chunk
// of the old file that was still arriving must not land in the new upload. The storages check which
// upload a chunk belongs to when they start storing it, so a checked chunk must reach the storage
// before its body is read, not after.
for (const kind of ["memory", "file system", "Deno KV"] as const) {
  Deno.test(`checksum: a chunk still arriving when its upload is cancelled and begun again is not stored in the new one (${kind})`, async () => {
    const directory = await Deno.makeTempDir({ prefix: "resumable-checksum-" });
    try {
      await using kv = await Deno.openKv(":memory:");
      const storage = kind === "memory"
        ? new MemoryStorage()
        : kind === "Deno KV"
        ? new DenoKvStorage({ kv })
        : new FileSystemStorage({ directory });
      const handler = createResumableHandler({ storage, checksum: true });
      const options = { identifier: "6-same-name", chunkSize: 3 };
      const [, oldSecond] = clientChunks(new TextEncoder().encode("abcdef"), options);
      const fresh = clientChunks(new TextEncoder().encode("ABCDEF"), options);
      let release!: () => void;
      const held = new Promise<void>((resolve) => release = resolve);
      let started!: () => void;
      const reading = new Promise<void>((resolve) => started = resolve);
      const slow = new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(oldSecond!.bytes.subarray(0, 1));
          started();
          await held;
          controller.enqueue(oldSecond!.bytes.subarray(1));
          controller.close();
        },
      });
      const old = withParam(oldSecond!, "checksum", await sha256(oldSecond!.bytes));
      const inFlight = handler(
        new Request(`${BASE}?${new URLSearchParams(old.params)}`, {
          method: "POST",
          headers: { "content-type": "application/octet-stream" },
          body: slow,
          duplex: "half",
        } as RequestInit),
      );
      await reading;
      await new Promise((resolve) => setTimeout(resolve, 20));
      const cancelled = await handler(
        new Request(`${BASE}?resumableIdentifier=6-same-name`, { method: "DELETE" }),
      );
      assert.equal(cancelled.status, 200, await cancelled.text());
      const first = await handler(
        chunkRequest(BASE, withParam(fresh[0]!, "checksum", await sha256(fresh[0]!.bytes)), "octet"),
      );
      assert.equal(first.status, 200, await first.text());
      release();
      const late = await inFlight;
      await late.body?.cancel();
      assert.notEqual(late.status, 200, "the old file's chunk is refused");
      assert.equal(
        (await handler(testRequest(BASE, fresh[1]!))).status,
        204,
        "the new upload still needs chunk 2",
      );
      const second = await handler(
        chunkRequest(BASE, withParam(fresh[1]!, "checksum", await sha256(fresh[1]!.bytes)), "octet"),
      );
      assert.equal(second.status, 200);
      const done = await storage.getCompleted(uploadKey("", "6-same-name"));
      await second.body?.cancel();
      assert.equal(await new Response((await storage.openFile(done!.id))!.body).text(), "ABCDEF");
    } finally {
      await Deno.remove(directory, { recursive: true });
    }
  });
}

Deno.test("checksum: cancelling a checked chunk while its body is read cancels the body", async () => {
  let cancelled: unknown;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(3));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const checked = verifiedStream(body, new Uint8Array(32), "chunk 1");
  const reader = checked.getReader();
  const reading = reader.read();
  await new Promise((resolve) => setTimeout(resolve, 10));
  await reader.cancel("gone");
  assert.equal(cancelled, "gone");
  assert.deepEqual(await reading, { done: true, value: undefined });
});

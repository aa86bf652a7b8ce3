import assert from "node:assert/strict";
import { type S3CredentialProvider, type S3Credentials, S3Storage } from "../../src/storage/s3.ts";
import { S3Client, type S3Request } from "../../src/storage/_s3_client.ts";
import { newFileId, uploadKey } from "../../src/identifier.ts";
import { readProgress } from "../../src/progress.ts";
import { cleanupExpired } from "../../src/cleanup.ts";
import { createResumableHandler, type UploadRecord } from "../../mod.ts";
import { chunkRequest, clientChunks, testRequest } from "../_helpers.ts";
import { fileOf, storageSuite } from "../_storage_suite.ts";
import { type S3Fixture, startS3 } from "./_s3rver.ts";
import { failingFetch } from "../_faults.ts";

function storageOn(
  s3: S3Fixture,
  prefix = `t${crypto.randomUUID()}/`,
  fetch?: typeof globalThis.fetch,
): S3Storage {
  return new S3Storage({
    endpoint: s3.endpoint,
    bucket: s3.bucket,
    credentials: s3.credentials,
    forcePathStyle: true,
    prefix,
    partSize: 5 * 1024 * 1024,
    fetch,
  });
}

storageSuite("S3Storage (s3rver + conditional-write shim)", async () => {
  const s3 = await startS3();
  return { storage: storageOn(s3), cleanup: () => s3.close() };
});

async function withS3(fn: (s3: S3Fixture) => Promise<void>): Promise<void> {
  const s3 = await startS3();
  try {
    await fn(s3);
  } finally {
    await s3.close();
  }
}

function newRecord(totalSize: number, chunkSize: number): UploadRecord {
  return {
    key: uploadKey("", crypto.randomUUID()),
    fileId: newFileId(),
    identifier: "id",
    fileName: "big file.bin",
    relativePath: "big file.bin",
    type: "application/octet-stream",
    totalSize,
    chunkSize,
    createdAt: Date.now(),
  };
}

function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
}

/** A stream of `bytes` in pieces of `piece` bytes, like chunks concatenated by assembly. */
function piecewise(bytes: Uint8Array, piece: number, failAfter?: number): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (failAfter !== undefined && offset >= failAfter) return controller.error(new Error("chunk lost"));
      if (offset >= bytes.byteLength) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + piece));
      offset += piece;
    },
  });
}

async function digest(stream: ReadableStream<Uint8Array>): Promise<string> {
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))).join(",");
}

/** Fails unless the file `fileId` in `storage` holds exactly `bytes`. */
async function assertFileIs(storage: S3Storage, fileId: string, bytes: Uint8Array): Promise<void> {
  const opened = await storage.openFile(fileId);
  assert.ok(opened, `file ${fileId} is stored`);
  assert.equal(
    await digest(opened.body),
    await digest(new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()),
  );
}

Deno.test("S3Storage assembles 1 MiB pieces into 5 MiB multipart parts and publishes only on completion", async () => {
  await withS3(async (s3) => {
    const prefix = "m/";
    const storage = storageOn(s3, prefix);
    const bytes = randomBytes(11 * 1024 * 1024 + 123);
    const rec = await storage.createUpload(newRecord(bytes.byteLength, 1024 * 1024));
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    assert.ok(claim);
    // While parts go up, nothing exists under files/ yet: the object appears on completion.
    const seenBeforeComplete: string[][] = [];
    const source = piecewise(bytes, 1024 * 1024).pipeThrough(
      new TransformStream({
        async transform(piece, controller) {
          if (s3.log.some((line) => line.includes("partNumber=2"))) {
            seenBeforeComplete.push(await s3.keys(`${prefix}files/`));
          }
          controller.enqueue(piece);
        },
      }),
    );
    const stored = await storage.commit(claim, source, fileOf(rec));
    assert.equal(stored?.size, bytes.byteLength);
    assert.ok(seenBeforeComplete.length > 0);
    assert.ok(
      seenBeforeComplete.every((keys) => keys.length === 0),
      "no object before CompleteMultipartUpload",
    );
    assert.deepEqual(await s3.keys(`${prefix}files/`), [
      `${prefix}files/${rec.fileId}/.file.json`,
      `${prefix}files/${rec.fileId}/big file.bin`,
    ]);
    const parts = s3.log.filter((line) => line.startsWith("PUT ") && line.includes("partNumber="));
    assert.equal(parts.length, 3, "11 MiB in 5 MiB parts is 5 + 5 + 1");
    assert.equal(s3.openMultipartUploads.size, 0);
    await assertFileIs(storage, rec.fileId, bytes);
  });
});

Deno.test("S3Storage aborts the multipart upload when the assembled stream fails", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3);
    const bytes = randomBytes(7 * 1024 * 1024);
    const rec = await storage.createUpload(newRecord(bytes.byteLength, 1024 * 1024));
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    await assert.rejects(storage.commit(claim!, piecewise(bytes, 1024 * 1024, 6 * 1024 * 1024), fileOf(rec)));
    assert.ok(
      s3.log.some((line) => line.startsWith("POST ") && line.includes("uploads")),
      "a multipart upload began",
    );
    assert.equal(s3.openMultipartUploads.size, 0, "and was aborted");
    assert.equal(await storage.openFile(rec.fileId), undefined);
    assert.equal(await storage.getCompleted(rec.key), undefined);
  });
});

/**
 * An assembler under prefix `p/` whose data stops after the first 5 MiB part went up, as if its
 * process died: its multipart upload stays open until `release` ends the stream, and its claim's
 * lease runs out (a removal waits for a live one).
 */
async function stallAfterFirstPart(s3: S3Fixture) {
  const storage = storageOn(s3, "p/");
  const bytes = randomBytes(6 * 1024 * 1024);
  const rec = await storage.createUpload(newRecord(bytes.byteLength, 1024 * 1024));
  const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 50 });
  let release!: () => void;
  const stalled = new Promise<void>((resolve) => release = resolve);
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= 5 * 1024 * 1024) {
        await stalled;
        return controller.error(new Error("crashed"));
      }
      controller.enqueue(bytes.slice(sent, sent + 1024 * 1024));
      sent += 1024 * 1024;
    },
  });
  const committing = storage.commit(claim!, stream, fileOf(rec)).catch(() => undefined);
  while (!s3.log.some((l) => l.includes("partNumber=1"))) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 60));
  return { rec, release, committing };
}

Deno.test("S3Storage expiry removal aborts a multipart upload a crashed assembler left behind", async () => {
  await withS3(async (s3) => {
    const { rec, release, committing } = await stallAfterFirstPart(s3);
    // A sweep (in any process) sees the stale upload and removes it, aborting the multipart upload.
    const sweeper = storageOn(s3, "p/");
    const seen: string[] = [];
    for await (const activity of sweeper.listUploads()) seen.push(activity.key);
    assert.deepEqual(seen, [rec.key]);
    await sweeper.removeUpload(rec.key);
    assert.equal(s3.openMultipartUploads.size, 0);
    release();
    await committing;
  });
});

for (const status of [409, 429] as const) {
  Deno.test(`S3Storage treats ${status} ${status === 409 ? "ConditionalRequestConflict" : "(R2's one write of a key a second)"} on a conditional write as a lost race`, async () => {
    await withS3(async (s3) => {
      const storage = storageOn(s3);
      const rec = newRecord(6, 3);
      s3.conflicts.status = status;
      s3.conflicts.next = 1;
      assert.equal(
        (await storage.createUpload(rec)).fileId,
        rec.fileId,
        `retries after ${status} and creates it`,
      );
      s3.conflicts.next = 1;
      assert.equal(await storage.claim(rec.key, { owner: "a", ttlMs: 60_000 }), undefined);
      const claim = await storage.claim(rec.key, { owner: "b", ttlMs: 60_000 });
      assert.equal(claim?.generation, 1);
      s3.conflicts.next = 1;
      assert.equal(await storage.renewClaim(claim!, { owner: "b", ttlMs: 60_000 }), false);
      // Both racing creators refused, several times: the record is made all the same.
      const again = newRecord(6, 3);
      s3.conflicts.next = 3;
      assert.equal((await storage.createUpload(again)).fileId, again.fileId);
    });
  });
}

Deno.test("S3Storage counts chunks without relisting the ones it has seen in order", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    const rec = await storage.createUpload(newRecord(30, 3));
    for (let i = 1; i <= 10; i++) {
      if (i === 5) continue;
      await storage.putChunk(rec.key, i, new Blob(["abc"]).stream());
    }
    assert.equal(await storage.countChunks(rec.key), 9);
    await storage.putChunk(rec.key, 5, new Blob(["abc"]).stream());
    s3.log.length = 0;
    assert.equal(await storage.countChunks(rec.key), 10);
    const list = s3.log.find((line) => line.includes("list-type=2"));
    assert.match(list ?? "", /start-after=[^&]*0000000004/, "lists only after the run 1..4 it knew");
    assert.equal(
      await storageOn(s3, "p/").countChunks(rec.key),
      10,
      "a process with no memory counts the same",
    );
  });
});

Deno.test("S3Storage finds an existing upload record with one GET, without a refused PUT", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    const rec = await storage.createUpload(newRecord(6, 3));
    s3.log.length = 0;
    // What every chunk after the first does: the record is there already.
    assert.deepEqual(await storageOn(s3, "p/").createUpload({ ...rec, fileId: newFileId() }), rec);
    assert.deepEqual(s3.log.map((line) => line.split(" ")[0]), ["GET"]);
  });
});

Deno.test("S3Storage: a chunk whose checksum does not match is refused with 422 and nothing is stored", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    const handler = createResumableHandler({ storage, checksum: true });
    const [chunk] = clientChunks(new TextEncoder().encode("abcdef"), { identifier: "6-sum", chunkSize: 3 });
    const wrong = { ...chunk!, params: { ...chunk!.params, checksum: "0".repeat(64) } };
    for (const mode of ["octet", "multipart"] as const) {
      const refused = await handler(chunkRequest("http://localhost/upload", wrong, mode));
      assert.equal(refused.status, 422, await refused.text());
    }
    assert.deepEqual((await s3.keys("p/")).filter((key) => key.includes("/chunks/")), []);
  });
});

Deno.test("S3Storage signs virtual-host and path-style URLs", () => {
  const credentials = { accessKeyId: "a", secretAccessKey: "b" };
  const seen: string[] = [];
  const fake = (input: URL | RequestInfo) => {
    seen.push(String(input));
    return Promise.resolve(new Response(null, { status: 404 }));
  };
  const virtual = new S3Storage({
    bucket: "bkt",
    region: "eu-west-1",
    credentials,
    fetch: fake as typeof fetch,
  });
  return virtual.getUpload("0".repeat(32)).then(async (found) => {
    assert.equal(found, undefined);
    assert.deepEqual(seen, [
      `https://bkt.s3.eu-west-1.amazonaws.com/resumable/uploads/${"0".repeat(32)}/upload.json`,
    ]);
    seen.length = 0;
    const path = new S3Storage({
      bucket: "bkt",
      endpoint: "http://127.0.0.1:9000",
      forcePathStyle: true,
      credentials,
      prefix: "",
      fetch: fake as typeof fetch,
    });
    // The upload record's GET goes out with it (see getCompleted), in either order.
    await path.getCompleted("1".repeat(32));
    assert.deepEqual(seen.sort(), [
      `http://127.0.0.1:9000/bkt/uploads/${"1".repeat(32)}/complete.json`,
      `http://127.0.0.1:9000/bkt/uploads/${"1".repeat(32)}/upload.json`,
    ]);
    assert.throws(() => new S3Storage({ bucket: "b", credentials, partSize: 1024 }), RangeError);
  });
});

Deno.test("S3Storage sends an idempotent request again when its connection fails, before the store got it or after it answered: an upload is stored whole", async () => {
  await withS3(async (s3) => {
    const failed: string[] = [];
    const seen = new Set<string>();
    let answered = false;
    // The first of each distinct idempotent request fails: alternately before it is sent (refused)
    // and after the store applied it (the reply lost).
    const storage = storageOn(
      s3,
      undefined,
      failingFetch((method, path, headers) => {
        const conditional = [...headers.keys()].some((name) => name.startsWith("if-"));
        const request = `${method} ${path}`;
        if (method === "POST" || conditional || seen.has(request)) return undefined;
        seen.add(request);
        failed.push(request);
        answered = !answered;
        return answered ? "after" : "before";
      }),
    );
    const handler = createResumableHandler({ storage });
    const bytes = randomBytes(3 * 64 * 1024) as Uint8Array<ArrayBuffer>;
    let body: { complete?: boolean; file?: { id: string } } = {};
    for (const chunk of clientChunks(bytes, { identifier: "flaky", chunkSize: 64 * 1024 })) {
      const response = await handler(chunkRequest("http://x/upload", chunk, "octet"));
      assert.equal(response.status, 200, await response.clone().text());
      body = await response.json();
    }
    assert.equal(body.complete, true);
    const kinds = new Set(failed.map((request) => request.split("/").at(-1)!.replace(/^\d+$/, "<chunk>")));
    for (const kind of ["complete.json", "upload.json", "<chunk>"]) {
      assert.ok(kinds.has(kind), `a request for ${kind} failed once: ${failed.join(", ")}`);
    }
    const stored = new Uint8Array(
      await new Response((await storage.openFile(body.file!.id))!.body).arrayBuffer(),
    );
    assert.deepEqual(stored, bytes);
  });
});

Deno.test("S3 requests whose connection fails: a GET or a DeleteObjects POST is sent again three times at most; a conditional PUT, another POST and an aborted request are not", async () => {
  const sent: string[] = [];
  const client = new S3Client({
    bucket: "bkt",
    endpoint: "http://127.0.0.1:9",
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "a", secretAccessKey: "b" },
    fetch: ((_input: URL | RequestInfo, init?: RequestInit) => {
      sent.push(init?.method ?? "GET");
      return Promise.reject(new TypeError("error sending request: connection refused"));
    }) as typeof fetch,
  });
  const attempts = async (method: string, request: S3Request = {}) => {
    sent.length = 0;
    await assert.rejects(client.send(method, "k", request), /connection refused/);
    return sent.length;
  };
  assert.equal(await attempts("GET"), 4);
  assert.equal(await attempts("PUT", { body: "x" }), 4);
  // Whether a conditional PUT applied is for its caller to find out (a second one would be refused).
  assert.equal(await attempts("PUT", { body: "x", headers: { "if-none-match": "*" } }), 1);
  assert.equal(await attempts("POST", { body: "x" }), 1);
  assert.equal(await attempts("POST", { body: "x", idempotent: true }), 4);
  const controller = new AbortController();
  controller.abort();
  assert.equal(await attempts("GET", { signal: controller.signal }), 1);
});

async function uploadChunks(storage: S3Storage, bytes: Uint8Array, chunkSize: number): Promise<UploadRecord> {
  const rec = await storage.createUpload(newRecord(bytes.byteLength, chunkSize));
  const count = Math.max(Math.floor(bytes.byteLength / chunkSize), 1);
  for (let n = 1; n <= count; n++) {
    const end = n === count ? bytes.byteLength : n * chunkSize;
    await storage.putChunk(rec.key, n, new Blob([bytes.slice((n - 1) * chunkSize, end)]).stream());
  }
  return rec;
}

Deno.test("S3Storage assembles chunks of 5 MiB and more with server-side UploadPartCopy, a stretched last chunk as two parts, as R2 requires", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3);
    const bytes = randomBytes(2 * 5 * 1024 * 1024 + 3 * 1024 * 1024);
    const rec = await uploadChunks(storage, bytes, 5 * 1024 * 1024);
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    const stored = await storage.commitChunks(claim!, 2, fileOf(rec));
    assert.equal(stored?.size, bytes.byteLength);
    // Chunks of 5 and 8 MiB: parts of 5, 5 and 3 MiB. The shim refuses a last part larger than the
    // others, as R2 does.
    assert.equal(s3.copies.count, 3, "a copy per chunk, the last one split; no bytes streamed");
    assert.equal(s3.openMultipartUploads.size, 0);
    await assertFileIs(storage, rec.fileId, bytes);
    assert.equal(await storage.commitChunks(claim!, 2, fileOf(rec)), undefined, "publishes once");
  });
});

for (const status of [200, 500] as const) {
  Deno.test(`S3Storage sends CompleteMultipartUpload and UploadPartCopy again when S3 answers a transient error (${status === 200 ? "200 with InternalError in the body" : "500"})`, async () => {
    await withS3(async (s3) => {
      const storage = storageOn(s3);
      // Streamed in parts (chunks of 1 MiB): the completion fails once, then twice in a row.
      for (const failures of [1, 2]) {
        const bytes = randomBytes(6 * 1024 * 1024);
        const rec = await uploadChunks(storage, bytes, 1024 * 1024);
        const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
        s3.completes.next = failures;
        s3.completes.status = status;
        const before = s3.completes.count;
        const stored = await storage.commitChunks(claim!, 6, fileOf(rec));
        assert.equal(stored?.size, bytes.byteLength);
        assert.equal(s3.completes.count - before, failures + 1);
        await assertFileIs(storage, rec.fileId, bytes);
      }
      if (status === 500) return;
      // Copied part by part (chunks of 5 MiB): one copy fails in its body.
      const bytes = randomBytes(2 * 5 * 1024 * 1024);
      const rec = await uploadChunks(storage, bytes, 5 * 1024 * 1024);
      const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
      s3.copies.failNext = 1;
      const stored = await storage.commitChunks(claim!, 2, fileOf(rec));
      assert.equal(stored?.size, bytes.byteLength);
      assert.equal(s3.copies.failNext, 0);
      assert.equal(s3.openMultipartUploads.size, 0);
      await assertFileIs(storage, rec.fileId, bytes);
    });
  });
}

Deno.test("S3Storage aborts a copied assembly that failed only once the copies under way have landed", async () => {
  await withS3(async (s3) => {
    const events: string[] = [];
    const fetching: typeof fetch = async (input, init) => {
      const url = new URL(String(input instanceof Request ? input.url : input));
      const headers = new Headers(init?.headers);
      if (init?.method === "PUT" && headers.has("x-amz-copy-source")) {
        const part = url.searchParams.get("partNumber");
        // The first copy fails for good at once; the others take a while.
        if (part === "1") {
          return new Response("<Error><Code>AccessDenied</Code><Message>no</Message></Error>", {
            status: 403,
          });
        }
        await new Promise((resolve) => setTimeout(resolve, 300));
        const response = await fetch(input, init);
        events.push(`copied ${part}`);
        return response;
      }
      if (init?.method === "DELETE" && url.searchParams.has("uploadId")) events.push("aborted");
      return await fetch(input, init);
    };
    const storage = storageOn(s3, undefined, fetching);
    const bytes = randomBytes(4 * 5 * 1024 * 1024);
    const rec = await uploadChunks(storage, bytes, 5 * 1024 * 1024);
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    await assert.rejects(storage.commitChunks(claim!, 4, fileOf(rec)), /403 AccessDenied/);
    assert.deepEqual(events.slice(-1), ["aborted"], `in this order: ${events.join(", ")}`);
    assert.equal(events.filter((event) => event.startsWith("copied")).length, 3);
    assert.equal(s3.openMultipartUploads.size, 0);
  });
});

Deno.test("S3Storage takes a CompleteMultipartUpload whose reply was lost, and whose retry finds the upload gone, for done once the object is there", async () => {
  await withS3(async (s3) => {
    let lose = true;
    const completes: number[] = [];
    const fetching: typeof fetch = async (input, init) => {
      const url = new URL(String(input instanceof Request ? input.url : input));
      const response = await fetch(input, init);
      if (init?.method === "POST" && url.searchParams.has("uploadId")) {
        completes.push(response.status);
        if (lose) {
          lose = false;
          await response.body?.cancel();
          throw new TypeError("error reading a body from connection: connection reset");
        }
      }
      return response;
    };
    const storage = storageOn(s3, undefined, fetching);
    const bytes = randomBytes(6 * 1024 * 1024);
    const rec = await uploadChunks(storage, bytes, 1024 * 1024);
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    const stored = await storage.commitChunks(claim!, 6, fileOf(rec));
    assert.equal(stored?.size, bytes.byteLength);
    assert.deepEqual(
      completes,
      [200, 404],
      "the retry found the upload completed and gone, as MinIO answers",
    );
    await assertFileIs(storage, rec.fileId, bytes);
  });
});

Deno.test("S3Storage streams small chunks instead of copying, and refuses missing or short chunks", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3);
    const bytes = randomBytes(6 * 1024 * 1024);
    const rec = await uploadChunks(storage, bytes, 1024 * 1024);
    const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    await assert.rejects(storage.commitChunks(claim!, 7, fileOf(rec)), /Chunk 7 .* is not stored/);
    await assert.rejects(storage.commitChunks(claim!, 6, { ...fileOf(rec), size: 1 }), /expected 1/);
    const stored = await storage.commitChunks(claim!, 6, fileOf(rec));
    assert.equal(stored?.size, bytes.byteLength);
    assert.equal(s3.copies.count, 0);
    await assertFileIs(storage, rec.fileId, bytes);
  });
});

Deno.test("S3Storage counts afresh when another process removed the upload and the same file began again", async () => {
  await withS3(async (s3) => {
    const a = storageOn(s3, "p/");
    const b = storageOn(s3, "p/");
    const first = await a.createUpload(newRecord(3, 1));
    for (const n of [1, 2]) await a.putChunk(first.key, n, new Blob(["x"]).stream());
    assert.equal(await a.countChunks(first.key), 2);
    // Cancelled through process B, then the same file (same key, new record) lands on process A.
    await b.removeUpload(first.key);
    const again = await a.createUpload({ ...first, fileId: newFileId() });
    assert.notEqual(again.fileId, first.fileId);
    for (const n of [1, 3]) await a.putChunk(first.key, n, new Blob(["x"]).stream());
    assert.equal(await a.countChunks(first.key), 2, "chunk 2 of the removed upload is not counted");
    assert.equal((await readProgress(a, again)).ready, false);
  });
});

/** A chunk body that gives its first byte, then waits for `release` before the rest. */
function heldBody(text: string) {
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new TextEncoder().encode(text.slice(0, 1)));
      await held;
      controller.enqueue(new TextEncoder().encode(text.slice(1)));
      controller.close();
    },
  });
  return { body, release };
}

Deno.test("S3Storage: a chunk whose PUT ends after its upload was removed and begun again elsewhere is not in the new upload", async () => {
  await withS3(async (s3) => {
    const a = storageOn(s3, "p/");
    const b = storageOn(s3, "p/");
    const first = await a.createUpload(newRecord(6, 3));
    const old = heldBody("abc");
    const inFlight = a.putChunk(first.key, 2, old.body).catch((error) => error);
    // Cancelled through process B, and the same name and size (another file) begun again there.
    await b.removeUpload(first.key);
    const again = await b.createUpload({ ...first, fileId: newFileId() });
    old.release();
    await inFlight;
    assert.equal(await b.chunkSize(first.key, 2), undefined, "B still needs chunk 2");
    assert.equal(await b.countChunks(first.key), 0);
    assert.equal(await storageOn(s3, "p/").chunkSize(first.key, 2), undefined, "so does a third process");
    // A learns of the new record as the handler's test does, before asking for the chunk.
    assert.deepEqual(await a.getUpload(first.key), again);
    assert.equal(await a.chunkSize(first.key, 2), undefined, "and A, once it read the record");
    await b.putChunk(first.key, 1, new Blob(["ABC"]).stream());
    await b.putChunk(first.key, 2, new Blob(["DEF"]).stream());
    assert.equal(await a.countChunks(first.key), 2);
    const claim = await a.claim(first.key, { owner: "o", ttlMs: 60_000 });
    const file = await a.commitChunks(claim!, 2, fileOf(again));
    assert.equal(await new Response((await b.openFile(file!.id))!.body).text(), "ABCDEF");
  });
});

Deno.test("S3Storage: a process that stored a chunk of a cancelled upload late does not offer it to the upload begun again", async () => {
  await withS3(async (s3) => {
    const onA = createResumableHandler({ storage: storageOn(s3, "p/") });
    const b = storageOn(s3, "p/");
    const onB = createResumableHandler({ storage: b });
    const base = "http://localhost/upload";
    const options = { identifier: "6-same-name", chunkSize: 3 };
    const [oldFirst] = clientChunks(new TextEncoder().encode("abcdef"), options);
    const fresh = clientChunks(new TextEncoder().encode("ABCDEF"), options);
    // The old file's chunk 1 is still arriving at A when it is cancelled through B and another file
    // of the same name and size begins there.
    const old = heldBody("abc");
    const inFlight = onA(
      new Request(`${base}?${new URLSearchParams(oldFirst!.params)}`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: old.body,
        duplex: "half",
      } as RequestInit),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    const cancel = await onB(new Request(`${base}?resumableIdentifier=6-same-name`, { method: "DELETE" }));
    assert.equal(cancel.status, 200, await cancel.text());
    const second = await onB(chunkRequest(base, fresh[1]!, "octet"));
    assert.equal(second.status, 200, await second.text());
    old.release();
    await (await inFlight).body?.cancel();
    const test = await onA(testRequest(base, fresh[0]!));
    assert.equal(test.status, 204, "A must not offer the old file's chunk 1");
    const first = await onA(chunkRequest(base, fresh[0]!, "octet"));
    assert.equal(first.status, 200, await first.text());
    const done = await b.getCompleted(uploadKey("", "6-same-name"));
    assert.equal(await new Response((await b.openFile(done!.id))!.body).text(), "ABCDEF");
  });
});

Deno.test("S3Storage forgets the chunks it counted when assembly finds one missing", async () => {
  await withS3(async (s3) => {
    const a = storageOn(s3, "p/");
    const b = storageOn(s3, "p/");
    const first = await a.createUpload(newRecord(2, 1));
    for (const n of [1, 2]) await a.putChunk(first.key, n, new Blob(["x"]).stream());
    assert.equal(await a.countChunks(first.key), 2);
    // Removed and begun again entirely through process B: A never saw the new record.
    await b.removeUpload(first.key);
    const again = await b.createUpload({ ...first, fileId: newFileId() });
    await b.putChunk(first.key, 1, new Blob(["x"]).stream());
    const claim = await a.claim(first.key, { owner: "o", ttlMs: 60_000 });
    await assert.rejects(a.commitChunks(claim!, 2, fileOf(again)), /Chunk 2 .* is not stored/);
    assert.equal(await a.countChunks(first.key), 1);
  });
});

Deno.test("S3Storage publishes a file whose type is not a plain ASCII MIME type as application/octet-stream", async () => {
  await withS3(async (s3) => {
    const types: (string | null)[] = [];
    const storage = new S3Storage({
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      credentials: s3.credentials,
      forcePathStyle: true,
      prefix: "p/",
      fetch: (input, init) => {
        if (init?.method === "PUT" && String(input).includes("/files/") && !String(input).endsWith(".json")) {
          types.push(new Headers(init.headers).get("content-type"));
        }
        return fetch(input, init);
      },
    });
    // resumableType is the client's; validation only refuses control characters.
    for (const type of ["text/plain; name=\u4e2d", "text/plain; charset=utf-8", "no type"]) {
      const rec = await storage.createUpload({ ...newRecord(1, 1), type });
      const claim = await storage.claim(rec.key, { owner: "o", ttlMs: 60_000 });
      const stored = await storage.commit(claim!, new Blob(["x"]).stream(), fileOf(rec));
      assert.equal(stored?.type, type, "the record keeps what the client sent");
    }
    assert.deepEqual(types, [
      "application/octet-stream",
      "text/plain; charset=utf-8",
      "application/octet-stream",
    ]);
  });
});

Deno.test("S3Storage keeps the multipart marker when aborting the multipart upload fails, so a later sweep aborts it", async () => {
  await withS3(async (s3) => {
    const { rec, release, committing } = await stallAfterFirstPart(s3);
    // The sweeping process may not abort it (403: no s3:AbortMultipartUpload permission).
    const denied = new S3Storage({
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      credentials: s3.credentials,
      forcePathStyle: true,
      prefix: "p/",
      fetch: (input, init) =>
        init?.method === "DELETE" && String(input).includes("uploadId=")
          ? Promise.resolve(new Response("<Error><Code>AccessDenied</Code></Error>", { status: 403 }))
          : fetch(input, init),
    });
    await denied.removeUpload(rec.key);
    assert.equal(s3.openMultipartUploads.size, 1);
    const left = await s3.keys(`p/uploads/${rec.key}/`);
    assert.equal(left.length, 1);
    assert.match(left[0]!, /\/multipart\//);
    // S3 lists the upload folder by that marker alone, so the next sweep removes it again.
    const report = await cleanupExpired(storageOn(s3, "p/"), {
      expireAfter: 0,
      completedExpireAfter: 0,
      now: Date.now() + 1000,
    });
    assert.equal(report.expired, 1);
    assert.equal(s3.openMultipartUploads.size, 0);
    assert.deepEqual(await s3.keys(`p/uploads/${rec.key}/`), []);
    release();
    await committing;
  });
});

Deno.test("S3Storage sends list queries encoded as it signs them, so a prefix with spaces or + lists itself", async () => {
  const queries: string[] = [];
  const storage = new S3Storage({
    bucket: "bkt",
    region: "eu-west-1",
    credentials: { accessKeyId: "a", secretAccessKey: "b" },
    prefix: "team uploads+old/",
    fetch: ((input: URL | RequestInfo) => {
      queries.push(new URL(String(input)).search);
      return Promise.resolve(
        new Response("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>", {
          status: 200,
        }),
      );
    }) as typeof fetch,
  });
  for await (const _ of storage.listUploads()) { /* none */ }
  assert.ok(queries.length > 0, "listing sends a request");
  for (const search of queries) {
    // S3 reads a query as RFC 3986 (a "+" is a plus), and so does the SigV4 canonical query.
    assert.doesNotMatch(search, /\+/, `the query ${search} must not use "+" for a space`);
    assert.match(search, /[?&]prefix=team%20uploads%2Bold%2F/, search);
  }
});

Deno.test("S3Storage: removing an upload deletes a file written for it whose publication failed, and keeps a published one", async () => {
  await withS3(async (s3) => {
    // Every write of a file's metadata fails: the file's bytes are stored, the file is never published.
    const failing = storageOn(
      s3,
      "p/",
      failingFetch((method, path) => method === "PUT" && path.endsWith("/.file.json") ? "before" : undefined),
    );
    const rec = await uploadChunks(failing, new TextEncoder().encode("abcdef"), 3);
    const claim = await failing.claim(rec.key, { owner: "assembler", ttlMs: 60_000 });
    await assert.rejects(failing.commitChunks(claim!, 2, fileOf(rec)), /connection refused/);
    assert.equal((await s3.keys(`p/files/${rec.fileId}/`)).length, 1, "the file's bytes were written");
    await failing.releaseClaim!(claim!);

    const storage = storageOn(s3, "p/");
    await storage.removeUpload(rec.key);
    assert.deepEqual(await s3.keys(`p/files/${rec.fileId}/`), [], "and go with the upload");
    assert.deepEqual(await s3.keys(`p/uploads/${rec.key}/`), []);

    // A published file stays when its upload's records are removed (an expired completion record).
    const done = await uploadChunks(storage, new TextEncoder().encode("ghijkl"), 3);
    const own = await storage.claim(done.key, { owner: "assembler", ttlMs: 60_000 });
    assert.ok(await storage.commitChunks(own!, 2, fileOf(done)));
    await storage.removeUpload(done.key);
    assert.equal(await new Response((await storage.openFile(done.fileId))!.body).text(), "ghijkl");
  });
});

Deno.test("S3Storage: a removal gives up after removalWaitMs behind an assembly that holds its claim, and a cancel answers 503", async () => {
  await withS3(async (s3) => {
    const storage = new S3Storage({
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      credentials: s3.credentials,
      forcePathStyle: true,
      prefix: "p/",
      removalWaitMs: 300,
    });
    const handler = createResumableHandler({ storage, onError: () => {} });
    const [first] = clientChunks(new Uint8Array(6), { identifier: "stuck", chunkSize: 3 });
    await (await handler(chunkRequest("http://x/upload", first!, "octet"))).body?.cancel();
    const key = uploadKey("", "stuck");
    // An assembler that holds the claim and renews it, but whose store connection hangs.
    assert.ok(await storage.claim(key, { owner: "hung assembler", ttlMs: 60_000 }));
    const started = Date.now();
    await assert.rejects(storage.removeUpload(key), /still being assembled after 300 ms/);
    assert.ok(Date.now() - started < 5_000);
    const cancel = await handler(
      new Request("http://x/upload?resumableIdentifier=stuck", { method: "DELETE" }),
    );
    assert.equal(cancel.status, 503);
    assert.equal((await cancel.json()).error.code, "storage_unavailable");
    assert.ok(await storage.getUpload(key), "the upload is left as it was");
  });
});

Deno.test("S3Storage gives up on a request that gets no answer within requestTimeoutMs, and sends a read again", async () => {
  await withS3(async (s3) => {
    const storage = new S3Storage({
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      credentials: s3.credentials,
      forcePathStyle: true,
      prefix: "p/",
      requestTimeoutMs: 300,
    });
    const record = newRecord(6, 3);
    await storage.createUpload(record);
    await storage.putChunk(record.key, 1, new Response("abc").body!, { fileId: record.fileId });
    // The listing behind the count goes unanswered once, as on a connection that went quiet.
    s3.stalls.next = 1;
    s3.stalls.method = "GET";
    const started = Date.now();
    assert.equal(await storage.countChunks(record.key), 1);
    const took = Date.now() - started;
    assert.equal(s3.stalls.count, 1);
    assert.ok(took >= 300 && took < 5_000, `took ${took} ms`);
  });
  const options = { bucket: "bkt", credentials: { accessKeyId: "a", secretAccessKey: "b" } };
  for (const requestTimeoutMs of [-1, Number.NaN, 2 ** 31]) {
    assert.throws(() => new S3Storage({ ...options, requestTimeoutMs }), RangeError);
  }
});

Deno.test("S3Storage: a chunk whose store connection goes quiet answers a retryable 503 in time, and the client's retry completes the upload", async () => {
  await withS3(async (s3) => {
    const storage = new S3Storage({
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      credentials: s3.credentials,
      forcePathStyle: true,
      prefix: "p/",
      requestTimeoutMs: 300,
    });
    const handler = createResumableHandler({ storage, onError: () => {} });
    const file = new TextEncoder().encode("abcdef");
    const [first, second] = clientChunks(file, { identifier: "quiet", chunkSize: 3 });
    assert.equal((await handler(chunkRequest("http://x/upload", first!, "octet"))).status, 200);
    // Every attempt at storing the second chunk goes unanswered: the first and its three retries.
    s3.stalls.next = 4;
    s3.stalls.method = "PUT";
    const started = Date.now();
    const stalled = await handler(chunkRequest("http://x/upload", second!, "octet"));
    const took = Date.now() - started;
    assert.equal(stalled.status, 503);
    assert.equal((await stalled.json()).error.code, "storage_unavailable");
    assert.equal(s3.stalls.count, 4);
    assert.ok(took < 10_000, `took ${took} ms`);
    const retried = await handler(chunkRequest("http://x/upload", second!, "octet"));
    assert.equal(retried.status, 200);
    assert.equal((await retried.json()).status, "complete");
    const done = await storage.getCompleted(uploadKey("", "quiet"));
    assert.ok(done);
    assert.equal(await new Response((await storage.openFile(done.id))!.body).text(), "abcdef");
  });
});

Deno.test("S3Storage: an assembly reading a chunk whose answer goes quiet after its headers fails in time, and the retry completes", async () => {
  await withS3(async (s3) => {
    const storage = new S3Storage({
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      credentials: s3.credentials,
      forcePathStyle: true,
      prefix: "p/",
      requestTimeoutMs: 300,
    });
    const handler = createResumableHandler({ storage, onError: () => {} });
    // Chunks under 5 MiB: the file is assembled by reading them back.
    const [first, second] = clientChunks(new TextEncoder().encode("abcdef"), {
      identifier: "mute",
      chunkSize: 3,
    });
    assert.equal((await handler(chunkRequest("http://x/upload", first!, "octet"))).status, 200);
    s3.stalls.next = 1;
    s3.stalls.method = "GET";
    s3.stalls.path = /\/chunks\/[0-9a-f]+\/0000000001$/;
    s3.stalls.afterHeaders = true;
    const started = Date.now();
    const stalled = await handler(chunkRequest("http://x/upload", second!, "octet"));
    const took = Date.now() - started;
    assert.equal(s3.stalls.count, 1);
    assert.equal(stalled.status, 503);
    assert.equal((await stalled.json()).error.code, "storage_unavailable");
    assert.ok(took < 10_000, `took ${took} ms`);
    // The claim was released: the client's retry assembles at once.
    const retried = await handler(chunkRequest("http://x/upload", second!, "octet"));
    assert.equal(retried.status, 200);
    const status = await retried.json();
    assert.equal(status.complete, true);
    assert.equal(await new Response((await storage.openFile(status.file.id))!.body).text(), "abcdef");
  });
});

Deno.test("S3Storage refuses a prefix with . or .. segments, which URLs would resolve to other keys or another bucket", () => {
  const options = { bucket: "bkt", credentials: { accessKeyId: "a", secretAccessKey: "b" } };
  for (const prefix of ["./up/", "../other/", "a/./b/", "a/..", ".."]) {
    assert.throws(() => new S3Storage({ ...options, prefix }), TypeError, prefix);
  }
  for (const prefix of ["", "up/", ".hidden/", "a..b/", "team uploads+old/"]) {
    assert.ok(new S3Storage({ ...options, prefix }), prefix);
  }
});

Deno.test("S3 listings that say they go on without a continuation token fail, rather than end early", async () => {
  const client = new S3Client({
    bucket: "bkt",
    endpoint: "http://127.0.0.1:9",
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "a", secretAccessKey: "b" },
    fetch: (() =>
      Promise.resolve(
        new Response(
          "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>p/1</Key><Size>1</Size></Contents></ListBucketResult>",
        ),
      )) as typeof fetch,
  });
  const keys: string[] = [];
  await assert.rejects(async () => {
    for await (const item of client.list("p/")) keys.push(item.key);
  }, /truncated without a continuation token/);
  assert.deepEqual(keys, ["p/1"]);
});

/**
 * A `fetch` that, once `hook.run` is set, runs it once before sending the next PUT whose URL ends
 * with `suffix`, then unsets it: a pause of the process at that point, or another request there.
 */
function beforeNextPut(suffix: string) {
  const hook: { run?: () => Promise<unknown> } = {};
  const fetching: typeof fetch = async (input, init) => {
    const run = hook.run;
    if (run && init?.method === "PUT" && String(input).endsWith(suffix)) {
      hook.run = undefined;
      await run();
    }
    return await fetch(input, init);
  };
  return { hook, fetch: fetching };
}

Deno.test("S3Storage: removing an upload while it assembles waits for the assembly, so an upload begun again meanwhile is not completed with the old file", async () => {
  await withS3(async (s3) => {
    // The assembler's process pauses once, just before it writes the file's metadata: after its last
    // check of the claim, before its completion record.
    const paused = beforeNextPut("/.file.json");
    const a = storageOn(s3, "p/", paused.fetch);
    const b = storageOn(s3, "p/");
    const old = await a.createUpload(newRecord(6, 3));
    await a.putChunk(old.key, 1, new Blob(["abc"]).stream(), { fileId: old.fileId });
    await a.putChunk(old.key, 2, new Blob(["def"]).stream(), { fileId: old.fileId });
    const claim = await a.claim(old.key, { owner: "o", ttlMs: 60_000 });
    const again = { ...old, fileId: newFileId() };
    let cancelled: Promise<void> | undefined;
    paused.hook.run = async () => {
      // Process B cancels then, and begins the same name and size again with other bytes; it has
      // half a second.
      cancelled = (async () => {
        await b.removeUpload(old.key);
        await b.createUpload(again);
        await b.putChunk(old.key, 1, new Blob(["xyz"]).stream(), { fileId: again.fileId });
      })();
      await Promise.race([cancelled, new Promise((resolve) => setTimeout(resolve, 500))]);
    };
    const stored = await a.commitChunks(claim!, 2, fileOf(old));
    assert.equal(stored?.id, old.fileId);
    await cancelled;
    assert.equal(await new Response((await b.openFile(old.fileId))!.body).text(), "abcdef");
    assert.equal(await b.getCompleted(old.key), undefined, "the new upload is not complete");
    assert.equal((await b.getUpload(old.key))?.fileId, again.fileId);
    assert.equal(await b.countChunks(old.key), 1);
    assert.equal(await new Response(await b.openChunk(old.key, 1)).text(), "xyz");
  });
});

Deno.test("S3Storage: an expiry sweep deletes notes of removals older than ten minutes, and keeps recent ones", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    const sweep = async () => {
      for await (const _ of storage.listUploads()) { /* the sweep's listing */ }
    };
    const old = await storage.createUpload(newRecord(6, 3));
    await storage.removeUpload(old.key);
    assert.deepEqual(await s3.keys("p/removed/"), [`p/removed/${old.key}`]);
    await sweep();
    assert.deepEqual(await s3.keys("p/removed/"), [`p/removed/${old.key}`], "a recent note stays");
    // Eleven minutes on, as a process sweeping then sees it (the store dates its objects itself).
    const now = Date.now;
    Date.now = () => now() + 11 * 60_000;
    try {
      await sweep();
      assert.deepEqual(await s3.keys("p/removed/"), []);
      assert.equal(await storage.removedAt(old.key), undefined);
    } finally {
      Date.now = now;
    }
  });
});

Deno.test("S3Storage aborts the multipart upload an initiating POST started though its reply was lost, streamed or copied", async () => {
  await withS3(async (s3) => {
    let lose = false;
    const storage = storageOn(
      s3,
      "p/",
      failingFetch((method, path) => {
        if (!lose || method !== "POST" || !path.includes("/files/")) return undefined;
        lose = false; // the initiating POST: its CompleteMultipartUpload never comes
        return "after";
      }),
    );
    const big = 5 * 1024 * 1024;
    // Streamed: a file of more than one part. Copied: two chunks of a part each.
    for (const copied of [false, true]) {
      const bytes = randomBytes(2 * big);
      const rec = copied
        ? await uploadChunks(storage, bytes, big)
        : await storage.createUpload(newRecord(bytes.byteLength, bytes.byteLength));
      const claim = await storage.claim(rec.key, { owner: crypto.randomUUID(), ttlMs: 60_000 });
      lose = true;
      const assembly = copied
        ? storage.commitChunks(claim!, 2, fileOf(rec))
        : storage.commit(claim!, new Blob([bytes as Uint8Array<ArrayBuffer>]).stream(), fileOf(rec));
      await assert.rejects(assembly, /connection reset/);
      assert.equal(lose, false, "the initiating POST lost its reply");
      assert.equal(s3.openMultipartUploads.size, 0, `no multipart upload left open (copied: ${copied})`);
    }
  });
});

Deno.test("S3Storage: a cancel whose claim's PUT fails on its way asks again, and removes the upload", async () => {
  await withS3(async (s3) => {
    let failClaims = 2;
    const storage = storageOn(
      s3,
      "p/",
      failingFetch((method, path) =>
        method === "PUT" && path.endsWith("/claim.json") && failClaims-- > 0 ? "before" : undefined
      ),
    );
    const rec = await storage.createUpload(newRecord(6, 3));
    await storage.putChunk(rec.key, 1, new Blob(["abc"]).stream());
    await storage.removeUpload(rec.key);
    assert.equal(failClaims, -1, "both failures happened, and the third claim went through");
    assert.deepEqual(await s3.keys(`p/uploads/${rec.key}/`), []);
  });
});

Deno.test("S3Storage: a claim taken by a call whose reply and read back were lost is its lease's when asked again", async () => {
  await withS3(async (s3) => {
    let lost = false;
    let readsToFail = 0;
    const storage = storageOn(
      s3,
      "p/",
      failingFetch((method, path) => {
        if (!path.endsWith("/claim.json")) return undefined;
        if (method === "PUT" && !lost) {
          lost = true;
          readsToFail = 4; // the read back, sent again three times
          return "after";
        }
        return method === "GET" && readsToFail-- > 0 ? "before" : undefined;
      }),
    );
    const rec = await storage.createUpload(newRecord(6, 3));
    const lease = { owner: crypto.randomUUID(), ttlMs: 60_000 };
    await assert.rejects(storage.claim(rec.key, lease), /connection/);
    assert.deepEqual(await storage.claim(rec.key, lease), {
      key: rec.key,
      owner: lease.owner,
      generation: 1,
    });
    assert.equal(await storage.claim(rec.key, { owner: crypto.randomUUID(), ttlMs: 60_000 }), undefined);
  });
});

Deno.test("S3Storage keeps a claim, a lease renewal and a completion whose conditional PUT applied though its reply was lost", async () => {
  await withS3(async (s3) => {
    let lose = 0;
    const storage = storageOn(s3, undefined, async (input, init) => {
      const response = await fetch(input, init);
      const conditional = [...new Headers(init?.headers).keys()].some((name) => name.startsWith("if-"));
      if (init?.method === "PUT" && conditional && response.ok && lose > 0) {
        lose--;
        await response.body?.cancel();
        throw new TypeError("connection reset before the reply");
      }
      return response;
    });
    const rec = await storage.createUpload(newRecord(3, 3));
    await storage.putChunk(rec.key, 1, new Blob(["abc"]).stream());
    const lease = { owner: crypto.randomUUID(), ttlMs: 60_000 };
    lose = 1;
    const claim = await storage.claim(rec.key, lease);
    assert.ok(claim, "the claim it took is its own");
    assert.equal(await storage.claim(rec.key, { owner: crypto.randomUUID(), ttlMs: 60_000 }), undefined);
    lose = 1;
    assert.equal(await storage.renewClaim(claim, lease), true, "the renewal it made holds");
    lose = 1;
    const stored = await storage.commit(claim, new Blob(["abc"]).stream(), fileOf(rec));
    assert.equal(stored?.id, rec.fileId, "the completion it wrote is its own");
    assert.equal((await storage.getCompleted(rec.key))?.id, rec.fileId);
    assert.equal(await new Response((await storage.openFile(rec.fileId))!.body).text(), "abc");
  });
});

/**
 * A `fetch` that logs when each request to the store is sent and answered (`> GET upload.json`,
 * `< GET upload.json`, by the last part of the path), and holds the answer to a completion check
 * until the upload record's GET has been sent: were the two sent one after the other, it would
 * wait out `patience` and log `! sequential`.
 */
function roundTripLog(patience = 2_000) {
  const log: string[] = [];
  // Whether the record's GET was sent since the last completion check was answered.
  let recordSent = false;
  let onRecordSent: () => void = () => {};
  const fetching: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    const name = `${init?.method ?? "GET"} ${
      url.searchParams.has("list-type") ? "list" : url.pathname.split("/").at(-1)
    }`;
    if (name === "GET upload.json") {
      recordSent = true;
      onRecordSent();
    }
    const sent = name === "GET complete.json"
      ? new Promise<void>((resolve) => recordSent ? resolve() : onRecordSent = resolve)
      : undefined;
    log.push(`> ${name}`);
    const response = await fetch(input, init);
    if (sent) {
      recordSent = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waited = await Promise.race([
        sent.then(() => false),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(true), patience)),
      ]);
      clearTimeout(timer);
      if (waited) log.push("! sequential");
    }
    log.push(`< ${name}`);
    return response;
  };
  return { log, fetch: fetching };
}

/** What follows the completion check and the record's GET, after checking that they went out together. */
function bothSentThenAnswered(log: string[]): string[] {
  // The record's answer may come before the completion check is sent (each is signed on its own);
  // what the hold in `roundTripLog` proves is that the record's GET went out before the check was
  // answered, with no third request between.
  const both = ["GET complete.json", "GET upload.json"].flatMap((name) => [`< ${name}`, `> ${name}`]).sort();
  assert.deepEqual(log.slice(0, 4).sort(), both, log.join("\n"));
  assert.ok(log.indexOf("> GET upload.json") < log.indexOf("< GET complete.json"), log.join("\n"));
  return log.slice(4);
}

Deno.test("S3Storage reads the upload record alongside the completion check: a chunk or a chunk test costs a round trip less", async () => {
  await withS3(async (s3) => {
    const { log, fetch } = roundTripLog();
    const handler = createResumableHandler({ storage: storageOn(s3, "p/", fetch) });
    const [first, second, third] = clientChunks(new TextEncoder().encode("abcdefghi"), {
      identifier: "9-rt",
      chunkSize: 3,
    });
    assert.equal((await handler(chunkRequest("http://x/upload", first!))).status, 200);
    // A chunk, a test of a stored chunk, a test of a missing one: the status, and what follows the
    // completion check and the record's GET.
    const cases: [Request, number, string[]][] = [
      [chunkRequest("http://x/upload", second!), 200, [
        "> PUT 0000000002",
        "< PUT 0000000002",
        "> GET list",
        "< GET list",
      ]],
      [testRequest("http://x/upload", second!), 200, [
        "> HEAD 0000000002",
        "< HEAD 0000000002",
        "> GET list",
        "< GET list",
      ]],
      [testRequest("http://x/upload", third!), 204, ["> HEAD 0000000003", "< HEAD 0000000003"]],
    ];
    for (const [request, status, after] of cases) {
      log.length = 0;
      assert.equal((await handler(request)).status, status, request.url);
      assert.deepEqual(bothSentThenAnswered(log), after);
    }
  });
});

Deno.test("S3Storage does not take the upload record from a read begun before or while this process removed the upload", async () => {
  await withS3(async (s3) => {
    // While the removal below waits out assembly (its claim's PUT), another request checks for
    // completion, and its record read finds the record not yet deleted.
    const during = beforeNextPut("/claim.json");
    const storage = storageOn(s3, "p/", during.fetch);
    for (const when of ["before", "while"]) {
      const old = await storage.createUpload(newRecord(6, 3));
      assert.equal(await storage.getCompleted(old.key), undefined);
      if (when === "while") during.hook.run = () => storage.getCompleted(old.key);
      await storage.removeUpload(old.key);
      assert.equal(during.hook.run, undefined, "the completion check ran during the removal");
      const again = { ...old, fileId: newFileId() };
      assert.equal(
        (await storage.createUpload(again)).fileId,
        again.fileId,
        `read begun ${when} the removal`,
      );
      await storage.removeUpload(old.key);
    }
  });
});

Deno.test("S3Storage removes a late copy of a chunk stored once its upload was complete and its chunks removed", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    const rec = await uploadChunks(storage, new TextEncoder().encode("abcdef"), 3);
    const claim = await storage.claim(rec.key, { owner: "assembler", ttlMs: 60_000 });
    assert.ok(await storage.commitChunks(claim!, 2, fileOf(rec)));
    await storage.removeChunks(rec.key);
    // A retry of chunk 2 that passed the handler's completion check just before the assembly, from
    // another process; the handler counts the chunks next.
    const elsewhere = storageOn(s3, "p/");
    await elsewhere.createUpload(rec);
    await elsewhere.putChunk(rec.key, 2, new Blob(["def"]).stream(), { fileId: rec.fileId });
    await elsewhere.countChunks(rec.key);
    assert.deepEqual((await s3.keys(`p/uploads/${rec.key}/`)).filter((key) => key.includes("/chunks/")), []);
    assert.equal(await new Response((await storage.openFile(rec.fileId))!.body).text(), "abcdef");
  });
});

/** Completes an upload of `chunks` chunks of 4 bytes through the handler. */
async function completeThroughHandler(storage: S3Storage, chunks: number): Promise<void> {
  const handler = createResumableHandler({ storage });
  const bytes = crypto.getRandomValues(new Uint8Array(4 * chunks));
  let body: { complete?: boolean } = {};
  for (const chunk of clientChunks(bytes, { identifier: crypto.randomUUID(), chunkSize: 4 })) {
    const response = await handler(chunkRequest("http://x/upload", chunk, "octet"));
    assert.equal(response.status, 200, await response.clone().text());
    body = await response.json();
  }
  assert.equal(body.complete, true);
}

const chunkKeys = async (s3: S3Fixture, prefix: string) =>
  (await s3.keys(prefix)).filter((key) => key.includes("/chunks/"));
const singleDeletes = (s3: S3Fixture) => s3.log.filter((line) => line.startsWith("DELETE "));
const batchRequests = (s3: S3Fixture) => s3.log.filter((line) => line.startsWith("POST /test?delete"));

Deno.test("S3Storage removes a completed upload's chunks with one DeleteObjects request, its body's Content-MD5 as S3 requires", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    await completeThroughHandler(storage, 5);
    // The shim answers 400 to a request without the digest or with a wrong one.
    assert.deepEqual(batchRequests(s3), ["POST /test?delete="]);
    assert.equal(s3.batchDeletes.count, 1);
    assert.equal(s3.batchDeletes.keys, 5);
    assert.deepEqual(singleDeletes(s3), []);
    assert.deepEqual(await chunkKeys(s3, "p/"), []);
  });
});

Deno.test("S3Storage past 1000 chunks, a listing's page: counts, assembles and removes them, at most 1000 keys per DeleteObjects request", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    const bytes = crypto.getRandomValues(new Uint8Array(1001));
    const rec = await storage.createUpload(newRecord(bytes.byteLength, 1));
    const indexes = Array.from({ length: bytes.byteLength }, (_, i) => i + 1);
    // Stored 16 at a time, so the test spends its time on what it is about.
    for (let i = 0; i < indexes.length; i += 16) {
      await Promise.all(
        indexes.slice(i, i + 16).map((n) =>
          storage.putChunk(rec.key, n, new Blob([bytes.subarray(n - 1, n)]).stream())
        ),
      );
    }
    // A fresh process counts from nothing, through a listing of two pages.
    const other = storageOn(s3, "p/");
    assert.equal(await other.countChunks(rec.key), 1001);
    const claim = await other.claim(rec.key, { owner: "o", ttlMs: 60_000 });
    assert.equal((await other.commitChunks(claim!, 1001, fileOf(rec)))?.size, 1001);
    assert.deepEqual(
      new Uint8Array(await new Response((await other.openFile(rec.fileId))!.body).arrayBuffer()),
      bytes,
    );
    await other.removeChunks(rec.key);
    assert.equal(s3.batchDeletes.count, 2);
    assert.equal(s3.batchDeletes.keys, 1001);
    assert.deepEqual(await chunkKeys(s3, "p/"), []);
  });
});

Deno.test("S3Storage deletes on its own each key a DeleteObjects request reports it could not delete", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    s3.batchDeletes.failNext = 1;
    await completeThroughHandler(storage, 4);
    assert.equal(s3.batchDeletes.count, 1);
    assert.equal(singleDeletes(s3).length, 1, "the key reported as failed, deleted once more on its own");
    assert.deepEqual(await chunkKeys(s3, "p/"), []);
  });
});

Deno.test("S3Storage deletes one batch key by key when AWS answers it 400 RequestTimeout, and keeps batching", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    s3.batchDeletes.timeoutNext = 1;
    await completeThroughHandler(storage, 3);
    await completeThroughHandler(storage, 3);
    assert.equal(batchRequests(s3).length, 2, "the second upload's chunks went in a batch again");
    assert.equal(s3.batchDeletes.count, 1);
    assert.equal(new Set(singleDeletes(s3)).size, 3, "the first upload's chunks, one by one");
    assert.deepEqual(await chunkKeys(s3, "p/"), []);
  });
});

Deno.test("S3Storage falls back to one DELETE per key on a store that does not take DeleteObjects, and stops asking it", async () => {
  await withS3(async (s3) => {
    const storage = storageOn(s3, "p/");
    s3.batchDeletes.refuse = true;
    await completeThroughHandler(storage, 3);
    await completeThroughHandler(storage, 3);
    assert.equal(batchRequests(s3).length, 1, "asked once, answered 501");
    assert.equal(s3.batchDeletes.count, 0);
    // Distinct keys: s3rver answers 500 now and then to DELETEs racing in one folder, sent again.
    assert.equal(new Set(singleDeletes(s3)).size, 6);
    assert.deepEqual(await chunkKeys(s3, "p/"), []);
  });
});

Deno.test("S3Storage signs with a credential provider's keys: asked once while they stay fresh, again within five minutes of their expiration, once for requests that ask together", async () => {
  await withS3(async (s3) => {
    const upload = async (credentials: S3Credentials | S3CredentialProvider) => {
      const storage = new S3Storage({
        endpoint: s3.endpoint,
        bucket: s3.bucket,
        credentials,
        forcePathStyle: true,
        prefix: `t${crypto.randomUUID()}/`,
      });
      await completeThroughHandler(storage, 3);
    };
    // s3rver checks every signature, so a request signed with other keys would fail the upload.
    let asked = 0;
    await upload(async () => {
      asked++;
      await new Promise((resolve) => setTimeout(resolve, 5));
      return { ...s3.credentials, expiration: new Date(Date.now() + 3600_000) };
    });
    assert.equal(asked, 1, "one answer for the whole upload, though its first requests asked together");

    asked = 0;
    await upload(() => {
      asked++;
      return { ...s3.credentials, expiration: new Date(Date.now() + 4 * 60_000) };
    });
    assert.ok(asked >= 10, `about to expire, so asked again for every request: ${asked}`);

    asked = 0;
    await upload(() => (asked++, s3.credentials));
    assert.ok(asked >= 10, `no expiration: asked for every request (${asked})`);

    await assert.rejects(upload(() => ({ ...s3.credentials, secretAccessKey: "wrong" })), (error: Error) => {
      // The chunk's answer, as completeThroughHandler reports it: storage trouble, retryable.
      assert.match(error.message, /storage_unavailable/);
      return true;
    });
  });
});

Deno.test("S3Storage: a credential provider that fails, or returns no keys, fails the request with 503 and reports why", async () => {
  await withS3(async (s3) => {
    for (
      const provider of [
        () => Promise.reject(new Error("instance metadata service unreachable")),
        () => ({}) as S3Credentials,
      ]
    ) {
      const errors: unknown[] = [];
      const storage = new S3Storage({
        endpoint: s3.endpoint,
        bucket: s3.bucket,
        credentials: provider,
        forcePathStyle: true,
      });
      const handler = createResumableHandler({ storage, onError: (error) => errors.push(error) });
      const [chunk] = clientChunks(new Uint8Array(4), { identifier: "creds", chunkSize: 4 });
      const response = await handler(chunkRequest("http://x/upload", chunk!, "octet"));
      assert.equal(response.status, 503);
      assert.equal((await response.json()).error.code, "storage_unavailable");
      assert.match(String(errors[0]), /instance metadata service unreachable|no accessKeyId/);
    }
  });
});

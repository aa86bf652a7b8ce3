// `deno task bench:s3`: what removing an upload's 1000 chunks costs, in DeleteObjects requests of
// 1000 keys against one DELETE per key (a store that does not take DeleteObjects); and what storing a
// chunk after the first costs through the handler on
// S3Storage, in round trips to a store that answers after a delay (s3rver on loopback, every request
// held DELAY_MS before it is sent, as a store a few milliseconds away would be), against the floor
// of two round trips in a row: the chunk's PUT, then a listing that can tell whether it was the last.
import { createResumableHandler } from "../mod.ts";
import { S3Storage } from "../src/storage/s3.ts";
import { newFileId, uploadKey } from "../src/identifier.ts";
import { startS3 } from "../tests/storage/_s3rver.ts";

const DELAY_MS = Number(Deno.env.get("DELAY_MS") ?? 10);
const s3 = await startS3();
const delayed: typeof fetch = async (input, init) => {
  await new Promise((resolve) => setTimeout(resolve, DELAY_MS));
  return await fetch(input, init);
};
const storage = new S3Storage({
  endpoint: s3.endpoint,
  bucket: s3.bucket,
  credentials: s3.credentials,
  forcePathStyle: true,
  prefix: "bench/",
  fetch: delayed,
});
const handler = createResumableHandler({ storage });
const piece = new Uint8Array(1024);
// A file of 10 000 chunks of 1 KiB, so the benchmark never completes it.
const params = (n: number) =>
  new URLSearchParams({
    resumableChunkNumber: String(n),
    resumableChunkSize: "1024",
    resumableCurrentChunkSize: "1024",
    resumableTotalSize: String(1024 * 10_000),
    resumableIdentifier: "bench",
    resumableFilename: "bench.bin",
    resumableRelativePath: "bench.bin",
    resumableTotalChunks: "10000",
  });
const post = async (n: number) => {
  const response = await handler(
    new Request(`http://bench/upload?${params(n)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: piece,
    }),
  );
  if (response.status !== 200) throw new Error(`chunk ${n}: ${response.status} ${await response.text()}`);
};
try {
  await post(1);
} catch (error) {
  await s3.close();
  throw error;
}
let index = 1;
const options = { group: "a chunk after the first", n: 100, warmup: 5 };

Deno.bench(
  `two round trips in a row (PUT, list), ${DELAY_MS} ms each`,
  { ...options, baseline: true },
  async () => {
    const key = `bench/floor/${++index}`;
    await (await delayed(`${s3.endpoint}/${s3.bucket}/${key}`, { method: "PUT", body: piece })).body
      ?.cancel();
    await (await delayed(`${s3.endpoint}/${s3.bucket}?list-type=2&prefix=bench/floor/&max-keys=1`)).body
      ?.cancel();
  },
);

Deno.bench(`handler, octet chunk of 1 KiB on S3Storage`, options, async () => {
  await post(++index);
});

// Removal: an upload of 1000 chunks of one byte, stored anew before each measured removal. s3rver
// spends about 2 ms deleting each key from its disk whichever way it is asked (it reads the key's
// folder after each), so the difference between the two is the round trips.
const CHUNKS = 1000;
const removal = { group: `removing an upload of ${CHUNKS} chunks`, n: 5, warmup: 1 };
const storageWith = (batches: boolean) => {
  const storage = new S3Storage({
    endpoint: s3.endpoint,
    bucket: s3.bucket,
    credentials: s3.credentials,
    forcePathStyle: true,
    prefix: `bench-remove-${batches}/`,
    fetch: delayed,
  });
  return async (b: Deno.BenchContext) => {
    // The fixture refuses DeleteObjects (501) for the storage measuring single DELETEs only.
    s3.batchDeletes.refuse = !batches;
    const record = await storage.createUpload({
      key: uploadKey("", crypto.randomUUID()),
      fileId: newFileId(),
      identifier: "bench",
      fileName: "bench.bin",
      relativePath: "bench.bin",
      type: "application/octet-stream",
      totalSize: CHUNKS,
      chunkSize: 1,
      createdAt: Date.now(),
    });
    for (let n = 1; n <= CHUNKS; n += 50) {
      const batch = Array.from({ length: Math.min(50, CHUNKS - n + 1) }, (_, i) => n + i);
      await Promise.all(batch.map((i) => storage.putChunk(record.key, i, new Blob(["x"]).stream())));
    }
    b.start();
    await storage.removeUpload(record.key);
    b.end();
    if ((await s3.keys(`bench-remove-${batches}/uploads/${record.key}/`)).length > 0) {
      throw new Error("chunks left after the removal");
    }
  };
};
Deno.bench(
  `one DELETE per chunk, 8 at a time, ${DELAY_MS} ms each`,
  { ...removal, baseline: true },
  storageWith(false),
);
Deno.bench(`DeleteObjects, 1000 keys per request, ${DELAY_MS} ms each`, removal, storageWith(true));

// Unload cannot await close(): the bucket's directory goes synchronously, the server with the process.
globalThis.addEventListener("unload", () => Deno.removeSync(s3.directory, { recursive: true }));

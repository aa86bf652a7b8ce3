import assert from "node:assert/strict";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { UploadRecord } from "../../src/storage/types.ts";
import { storageSuite } from "../_storage_suite.ts";

storageSuite(
  "MemoryStorage",
  () => Promise.resolve({ storage: new MemoryStorage(), cleanup: () => Promise.resolve() }),
);

Deno.test("MemoryStorage: a chunk arriving while its upload is removed and started again is not stored in the new one", async () => {
  const storage = new MemoryStorage();
  const record = (fileId: string): UploadRecord => ({
    key: "0".repeat(32),
    fileId,
    identifier: "id",
    fileName: "a.txt",
    relativePath: "a.txt",
    type: "",
    totalSize: 6,
    chunkSize: 3,
    createdAt: Date.now(),
  });
  await storage.createUpload(record("1".repeat(24)));
  let finish!: () => void;
  const arriving = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("a"));
      finish = () => {
        controller.enqueue(new TextEncoder().encode("bc"));
        controller.close();
      };
    },
  });
  const inFlight = storage.putChunk("0".repeat(32), 1, arriving);
  await storage.removeUpload("0".repeat(32));
  await storage.createUpload(record("2".repeat(24)));
  finish();
  await assert.rejects(inFlight, /was removed while the chunk arrived/);
  assert.equal(await storage.chunkSize("0".repeat(32), 1), undefined);
});

// `deno task bench:kv`: what storing a chunk after the first costs DenoKvStorage on a local database
// (the completion check, createUpload finding the record, then putChunk of 1 KiB, as the handler
// calls them), against the floor of one read and one commit of a value that size.
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { newFileId } from "../src/identifier.ts";

const dir = await Deno.makeTempDir({ prefix: "resumable-kv-bench-" });
const kv = await Deno.openKv(`${dir}/kv.sqlite3`);
const storage = new DenoKvStorage({ kv });
const key = "b".repeat(32);
const record = {
  key,
  fileId: newFileId(),
  identifier: "bench",
  fileName: "bench.bin",
  relativePath: "bench.bin",
  type: "",
  totalSize: 1024 ** 3,
  chunkSize: 1024,
  createdAt: Date.now(),
};
await storage.createUpload(record);
const piece = new Uint8Array(1024);
let index = 0;

Deno.bench(
  "one read and one commit of 1 KiB",
  { group: "a chunk after the first", baseline: true },
  async () => {
    await kv.get(["floor", "record"]);
    if (!(await kv.atomic().set(["floor", "chunk", ++index], piece).commit()).ok) throw new Error("refused");
  },
);

Deno.bench(
  "getCompleted + createUpload + putChunk of 1 KiB",
  { group: "a chunk after the first" },
  async () => {
    if (await storage.getCompleted(key)) throw new Error("completed");
    const found = await storage.createUpload({ ...record, fileId: newFileId() });
    await storage.putChunk(key, ++index, new Blob([piece]).stream(), { fileId: found.fileId });
  },
);

globalThis.addEventListener("unload", () => {
  kv.close();
  Deno.removeSync(dir, { recursive: true });
});

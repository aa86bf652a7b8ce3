// The checksum snippet of docs/security.md, run as written in Chromium with the real resumable.js
// and flow.js against a handler that requires a digest on every chunk.
import assert from "node:assert/strict";
import { createResumableHandler, type StoredFile } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { launchBrowser, libraryScripts, RUN_CLIENT_SCRIPT, scriptResponse } from "./_browser.ts";
import { serve, sha256 } from "./_helpers.ts";

const SIZE = 250_000;

// `preprocess` and `query` are the docs' snippet; `corrupt` only spoils the digest for the refusal case.
const PAGE = `<!doctype html><meta charset="utf-8"><title>checksum</title>
<script src="/resumable.js"></script><script src="/flow.js"></script>
<script>${RUN_CLIENT_SCRIPT}</script>
<script>
window.upload = (lib, corrupt) => {
  const bytes = new Uint8Array(${SIZE});
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 13 + 5) & 255;
  const file = new File([bytes], lib + (corrupt ? "-corrupt" : "") + ".bin");
  const options = {
    target: "/upload", chunkSize: 100000, maxChunkRetries: 2, chunkRetryInterval: 10,
    // One chunk at a time when corrupt: giving up on one chunk aborts the others in flight, and the
    // server rightly answers such a cut-off body 408, which no client sees.
    simultaneousUploads: corrupt ? 1 : 3,
    query: (file, chunk) => (chunk.checksum ? { checksum: chunk.checksum } : {}),
    preprocess: async (chunk) => {
      const blob = chunk.fileObj.file.slice(chunk.startByte, chunk.endByte);
      const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
      chunk.checksum = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
      if (corrupt) chunk.checksum = "0".repeat(64);
      chunk.preprocessFinished();
    },
  };
  return runClient(lib, options, file);
};
</script>`;

interface PageApi {
  upload(lib: string, corrupt: boolean): Promise<{ ok: boolean; message: string }>;
}

Deno.test({
  name:
    "checksum: the docs' preprocess snippet uploads with resumable.js and flow.js; a bad digest stores nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const scripts = await libraryScripts();
    const storage = new MemoryStorage();
    const completed: StoredFile[] = [];
    const statuses: number[] = [];
    const handler = createResumableHandler({
      storage,
      checksum: { required: true },
      onComplete: ({ file }) => {
        completed.push(file);
      },
    });
    const server = await serve(async (request) => {
      const { pathname } = new URL(request.url);
      if (pathname !== "/upload") {
        return scriptResponse(scripts, pathname) ??
          new Response(PAGE, { headers: { "content-type": "text/html" } });
      }
      const response = await handler(request);
      if (request.method === "POST") statuses.push(response.status);
      return response;
    });
    const browser = await launchBrowser();
    try {
      const tab = await browser.context.newPage();
      await tab.goto(`http://127.0.0.1:${server.port}/`);
      const expected = await sha256(new Uint8Array(SIZE).map((_, i) => (i * 13 + 5) & 255));
      for (const lib of ["resumable", "flow"]) {
        const result = await tab.evaluate(
          (lib) => (globalThis as unknown as PageApi).upload(lib, false),
          lib,
        );
        assert.equal(result.ok, true, `${lib}: ${result.message}`);
        for (let wait = 0; completed.at(-1)?.name !== `${lib}.bin`; wait++) {
          assert.ok(wait < 1000, `${lib}: the upload never completed on the server`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        const opened = await storage.openFile(completed.at(-1)!.id);
        assert.equal(await sha256(new Uint8Array(await new Response(opened!.body).arrayBuffer())), expected);
      }
      assert.ok(statuses.every((status) => status === 200), `every digest matched: ${statuses}`);
      statuses.length = 0;
      const before = completed.length;
      const refused = await tab.evaluate(() => (globalThis as unknown as PageApi).upload("resumable", true));
      assert.equal(refused.ok, false, "resumable.js gives up after its retries");
      const refusals: number[] = [...statuses];
      assert.deepEqual(refusals, [422, 422, 422], "the first chunk, refused once and on each of 2 retries");
      assert.equal(completed.length, before);
      for await (const upload of storage.listUploads()) {
        if (!upload.completed) {
          assert.equal(await storage.countChunks(upload.key), 0, "a bad digest stored a chunk");
        }
      }
    } finally {
      await browser.close();
      await server.close();
    }
  },
});

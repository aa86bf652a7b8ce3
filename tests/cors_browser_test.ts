// CORS from a real browser: a page on one loopback origin uploads with the real resumable.js and
// flow.js to the handler on another origin (another port), with credentials and a custom header,
// so every test and upload is preflighted (docs/protocol.md §10).
import assert from "node:assert/strict";
import { type CorsOptions, createResumableHandler, type StoredFile } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { launchBrowser, libraryScripts, RUN_CLIENT_SCRIPT, scriptResponse } from "./_browser.ts";
import { serve, sha256 } from "./_helpers.ts";

const SIZE = 300_000;

const PAGE = `<!doctype html><meta charset="utf-8"><title>cors</title>
<script src="/resumable.js"></script><script src="/flow.js"></script>
<script>${RUN_CLIENT_SCRIPT}</script>
<script>
window.upload = (lib, target, method) => {
  const bytes = new Uint8Array(${SIZE});
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 255;
  const file = new File([bytes], lib + ".bin", { type: "application/x-test" });
  const options = {
    target, method, chunkSize: 100000, testChunks: true, withCredentials: true,
    headers: { "X-Token": "secret" }, maxChunkRetries: 2, chunkRetryInterval: 10,
  };
  return runClient(lib, options, file);
};
</script>`;

interface PageApi {
  upload(lib: string, target: string, method: string): Promise<{ ok: boolean; message: string }>;
}

Deno.test({
  name: "CORS: resumable.js and flow.js on another loopback origin upload through preflights in Chromium",
  // playwright-core keeps pipes and timers of the browser process it manages.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const scripts = await libraryScripts();
    const page = await serve((request) =>
      Promise.resolve(
        scriptResponse(scripts, new URL(request.url).pathname) ??
          new Response(PAGE, { headers: { "content-type": "text/html" } }),
      )
    );
    const pageOrigin = `http://127.0.0.1:${page.port}`;
    const seen: string[] = [];
    const completed: StoredFile[] = [];
    const storage = new MemoryStorage();
    const makeApi = (cors: CorsOptions) => {
      const handler = createResumableHandler({
        storage,
        cors,
        authorize: (request) => request.headers.get("x-token") === "secret",
        onComplete: ({ file }) => {
          completed.push(file);
        },
      });
      return serve((request) => {
        seen.push(`${request.method} ${request.headers.get("access-control-request-method") ?? ""}`.trim());
        return handler(request);
      });
    };
    const api = await makeApi({
      origin: [pageOrigin],
      credentials: true,
      allowHeaders: ["X-Token"],
      maxAge: 60,
    });
    const closed = await makeApi({
      origin: ["http://127.0.0.1:1"],
      credentials: true,
      allowHeaders: ["X-Token"],
    });
    const browser = await launchBrowser();
    try {
      const tab = await browser.context.newPage();
      await tab.goto(`${pageOrigin}/`);
      const done = new Set<string>();
      const expected = new Uint8Array(SIZE).map((_, i) => (i * 31 + 7) & 255);
      for (const [lib, method] of [["resumable", "octet"], ["flow", "multipart"]] as const) {
        seen.length = 0;
        const result = await tab.evaluate(
          ([lib, target, method]) => (globalThis as unknown as PageApi).upload(lib, target, method),
          [lib, api.url, method] as const,
        );
        assert.equal(result.ok, true, `${lib}: ${result.message}`);
        // The message is whichever chunk finished last on the client (docs/protocol.md §8); the
        // completing request may still be assembling, so wait for the completion itself.
        for (
          let wait = 0;
          completed.at(-1)?.name !== `${lib}.bin` || done.has(completed.at(-1)!.id);
          wait++
        ) {
          assert.ok(wait < 1000, `${lib}: the upload never completed on the server`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        done.add(completed.at(-1)!.id);
        // Tests carry a custom header, so they are preflighted; Chromium caches a preflight per URL
        // and resumable.js posts to the test's URL, so its POSTs may reuse the GET's preflight.
        assert.ok(
          seen.includes("OPTIONS GET"),
          `${lib} tests with a custom header were preflighted: ${seen}`,
        );
        assert.ok(seen.includes("POST"), `${lib} chunks were posted: ${seen}`);
        const file = completed.at(-1)!;
        const opened = await storage.openFile(file.id);
        const bytes = new Uint8Array(await new Response(opened!.body).arrayBuffer());
        assert.equal(await sha256(bytes), await sha256(expected), `${lib} stored the page's bytes`);
      }
      // An origin the server does not list gets no CORS headers: the browser blocks the upload.
      const before = completed.length;
      const refused = await tab.evaluate(
        ([target]) => (globalThis as unknown as PageApi).upload("flow", target, "multipart"),
        [closed.url] as const,
      );
      assert.equal(refused.ok, false);
      assert.equal(completed.length, before);
    } finally {
      await browser.close();
      await Promise.all([page.close(), api.close(), closed.close()]);
    }
  },
});

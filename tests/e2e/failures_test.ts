// A server that fails a share of chunk uploads, and a file the server refuses, in headless Chromium.
import assert from "node:assert/strict";
import { uploadAndCheck } from "./_cases.ts";
import {
  addFiles,
  CHUNK,
  delay,
  listFiles,
  makeFiles,
  openDemo,
  rows,
  waitForRow,
  withFixture,
} from "./_harness.ts";

for (const client of ["resumable", "flow"] as const) {
  const label = client === "flow" ? "flow.js" : "resumable.js";

  Deno.test(`${label} retries chunk uploads that fail with 503 and completes`, async () => {
    await withFixture({ env: { FAIL_RATE: "0.3" } }, async ({ server, browser }) => {
      const chunks = 16;
      // resumable.js retries by default; flow.js only when maxChunkRetries is set (docs/protocol.md §4.2).
      const settings: Record<string, string | number> = client === "flow"
        ? { client, maxChunkRetries: 5 }
        : { client };
      const traffic = await uploadAndCheck(
        browser,
        server,
        [{ name: `flaky-${client}.bin`, size: chunks * CHUNK + 999, seed: 51 }],
        settings,
      );
      const failures = traffic.statuses.filter((status) => status === 503).length;
      assert.ok(failures >= 3, `the server failed some uploads (${failures})`);
      assert.equal(traffic.statuses.filter((status) => status === 200).length, chunks);
      assert.equal(traffic.posts.length, chunks + failures, "each failed upload was retried once more");
    });
  });

  Deno.test(`${label} stops on a file over maxFileSize and shows the server's message`, async () => {
    await withFixture({ env: { MAX_FILE_SIZE: String(4 * CHUNK) } }, async ({ server, browser }) => {
      const { page, traffic } = await openDemo(browser, server, { client, chunkSize: CHUNK });
      const bodies: Promise<string | undefined>[] = [];
      page.on("response", (response) => {
        if (new URL(response.url()).pathname === "/upload" && response.status() >= 400) {
          // The client aborts its other requests after the first refusal; their bodies may be gone.
          bodies.push(response.text().catch(() => undefined));
        }
      });
      let requests = 0;
      page.on("request", (request) => {
        if (new URL(request.url()).pathname === "/upload") requests++;
      });
      try {
        const name = `too-big-${client}.bin`;
        await makeFiles(page, [{ name, size: 16 * CHUNK, seed: 61 }]);
        await addFiles(page, [name]);
        const failed = await waitForRow(page, name, "error");
        const refusals = (await Promise.all(bodies)).filter((body) => body !== undefined);
        assert.ok(refusals.length >= 1);
        const { code, message } = JSON.parse(refusals[0]!).error as { code: string; message: string };
        assert.equal(code, "file_too_large");
        assert.ok(message.includes(String(4 * CHUNK)), `the message names the limit: ${message}`);
        assert.equal(failed.message, message, "the row shows the server's own message");
        assert.equal(
          await page.locator(`#queue li:has-text("${name}") .status`).innerText(),
          message,
        );
        // No retry storm: at most the chunks that were already in flight (3 tests + 3 uploads), and
        // nothing more after the error is shown.
        const atError = requests;
        assert.ok(atError <= 6, `${atError} requests before giving up`);
        await delay(1000);
        assert.equal(requests, atError, "no requests after the error");
        assert.equal(traffic.posts.length <= 3, true);
        assert.deepEqual((await rows(page)).map((row) => row.state), ["error"]);
        assert.deepEqual(await listFiles(server.uploadDir), [], "nothing left in storage");
      } finally {
        await page.close();
      }
    });
  });
}

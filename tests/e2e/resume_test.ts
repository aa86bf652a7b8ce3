// Interrupted uploads in headless Chromium: pause and resume, a closed page, a crashed server.
// The server delays every chunk upload (CHUNK_DELAY_MS) so there is time to interrupt mid-upload.
import assert from "node:assert/strict";
import { CHUNKS, DELAY_MS, restartCase } from "./_cases.ts";
import {
  addFiles,
  assertStored,
  CHUNK,
  delay,
  launchBrowser,
  makeFiles,
  openDemo,
  storedChunks,
  until,
  waitForCompleted,
  waitForRow,
  withFixture,
} from "./_harness.ts";

for (const client of ["resumable", "flow"] as const) {
  const label = client === "flow" ? "flow.js" : "resumable.js";

  Deno.test(`${label} pauses, resumes and survives a closed page`, async (t) => {
    await withFixture({ env: { CHUNK_DELAY_MS: String(DELAY_MS) } }, async ({ server, browser }) => {
      await t.step("pause stops sending chunks, resume finishes the file", async () => {
        const { page, traffic } = await openDemo(browser, server, { client, chunkSize: CHUNK });
        try {
          const name = `paused-${client}.bin`;
          const [sha] = await makeFiles(page, [{ name, size: CHUNKS * CHUNK, seed: 31 }]);
          await addFiles(page, [name]);
          await until(() => traffic.statuses.length >= 5, "5 stored chunks");
          await page.locator(`#queue li:has-text("${name}") [data-action=pause]`).click();
          await waitForRow(page, name, "paused");
          // Requests already on the wire are aborted; nothing new may start while paused.
          await delay(DELAY_MS * 3);
          const sentWhilePaused = traffic.posts.length;
          await delay(DELAY_MS * 8);
          assert.equal(traffic.posts.length, sentWhilePaused, "no chunk uploads while paused");
          assert.ok(sentWhilePaused < CHUNKS, `paused mid-upload (${sentWhilePaused} of ${CHUNKS} sent)`);
          assert.match(
            await page.locator(`#queue li:has-text("${name}") .status`).innerText(),
            /^Paused at \d+%$/,
          );
          await page.locator(`#queue li:has-text("${name}") [data-action=resume]`).click();
          const [done] = await waitForCompleted(page, [name]);
          await assertStored(server, done!, sha!);
        } finally {
          await page.close();
        }
      });

      await t.step(
        "a new page re-adding the file of a closed one sends only the missing chunks",
        async () => {
          const name = `reopened-${client}.bin`;
          const spec = { name, size: CHUNKS * CHUNK + 1234, seed: 32 };
          const first = await openDemo(browser, server, { client, chunkSize: CHUNK });
          await makeFiles(first.page, [spec]);
          await addFiles(first.page, [name]);
          await until(() => first.traffic.statuses.length >= 6, "6 stored chunks");
          await first.page.close();
          // Let requests that were already at the server finish or fail before counting.
          await delay(DELAY_MS * 5);
          const stored = await storedChunks(server.uploadDir);
          assert.ok(
            stored >= 6 && stored < CHUNKS,
            `closed mid-upload with ${stored} of ${CHUNKS} chunks stored`,
          );

          const second = await openDemo(browser, server, { client, chunkSize: CHUNK });
          try {
            const [sha] = await makeFiles(second.page, [spec]);
            await addFiles(second.page, [name]);
            const [done] = await waitForCompleted(second.page, [name]);
            assert.equal(second.traffic.posts.length, CHUNKS - stored, "stored chunks are not sent again");
            assert.equal(second.traffic.tests.length >= CHUNKS, true, "every chunk was tested first");
            await assertStored(server, done!, sha!);
          } finally {
            await second.page.close();
          }
        },
      );
    });
  });

  Deno.test(`${label} finishes an upload after the server is killed and restarted`, async () => {
    const browser = await launchBrowser();
    try {
      await restartCase(browser, "deno", client);
    } finally {
      await browser.close();
    }
  });
}

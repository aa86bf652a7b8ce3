// resumable.js and flow.js, unmodified, in headless Chromium, through the demo page, against
// examples/server.ts: every case ends with the stored file's SHA-256 checked against the source.
import assert from "node:assert/strict";
import { uploadAndCheck } from "./_cases.ts";
import {
  addFiles,
  assertStored,
  CHUNK,
  type FileSpec,
  makeFiles,
  openDemo,
  waitForCompleted,
  withFixture,
} from "./_harness.ts";

for (const client of ["resumable", "flow"] as const) {
  const label = client === "flow" ? "flow.js" : "resumable.js";

  Deno.test(`${label} uploads files intact through the demo page`, async (t) => {
    await withFixture({}, async ({ server, browser }) => {
      const open = (settings: Record<string, string | number | boolean> = {}) =>
        openDemo(browser, server, { client, chunkSize: CHUNK, ...settings });

      const upload = (specs: FileSpec[], settings: Record<string, string | number | boolean> = {}) =>
        uploadAndCheck(browser, server, specs, { client, ...settings });

      await t.step("a file of several chunks, 3 at a time, sends each chunk once", async () => {
        const traffic = await upload([{ name: `several-${client}.bin`, size: 8 * CHUNK, seed: 11 }], {
          simultaneousUploads: 3,
        });
        assert.equal(traffic.posts.length, 8);
        assert.ok(traffic.maxInFlight <= 3, `at most 3 chunk uploads at once, saw ${traffic.maxInFlight}`);
      });

      await t.step("the last chunk is larger than chunkSize by default", async () => {
        // 5 chunks and 40000 bytes: the remainder joins the 5th chunk, so 5 POSTs, not 6.
        const traffic = await upload([{
          name: `stretched-${client}.bin`,
          size: 5 * CHUNK + 40_000,
          seed: 12,
        }]);
        assert.equal(traffic.posts.length, 5);
      });

      await t.step("forceChunkSize sends the remainder as a short last chunk", async () => {
        const traffic = await upload([{ name: `forced-${client}.bin`, size: 5 * CHUNK + 40_000, seed: 13 }], {
          forceChunkSize: true,
        });
        assert.equal(traffic.posts.length, 6);
      });

      await t.step("a 1-byte file", async () => {
        const traffic = await upload([{ name: `one-${client}.bin`, size: 1, seed: 14 }]);
        assert.equal(traffic.posts.length, 1);
      });

      if (client === "flow") {
        await t.step("a 0-byte file", async () => {
          const traffic = await upload([{ name: "empty-flow.txt", size: 0, seed: 15 }]);
          assert.equal(traffic.posts.length, 1);
        });
      }

      await t.step("octet mode sends raw chunk bodies", async () => {
        const traffic = await upload([{
          name: `octet-${client}.bin`,
          size: 4 * CHUNK + 777,
          seed: 16,
          type: "application/x-test",
        }], { method: "octet" });
        assert.equal(traffic.posts.length, 4);
        for (const post of traffic.posts) {
          // resumable.js forces application/octet-stream; flow.js leaves the file's own type.
          const expected = client === "flow" ? "application/x-test" : "application/octet-stream";
          assert.equal(post.contentType, expected);
          assert.ok(post.url.searchParams.has(`${client}ChunkNumber`), "octet parameters travel in the URL");
        }
      });

      await t.step("ten files at once", async () => {
        const specs = Array.from({ length: 10 }, (_, i) => ({
          name: `ten-${client}-${i}.bin`,
          size: 1 + i * 23_456,
          seed: 100 + i,
        }));
        const traffic = await upload(specs);
        const chunks = specs.reduce((sum, spec) => sum + Math.max(Math.floor(spec.size / CHUNK), 1), 0);
        assert.equal(traffic.posts.length, chunks);
      });

      await t.step("two different files with the same name from two pages at once", async () => {
        const a = await open();
        const b = await open();
        try {
          // Same name, different content and size: the default identifiers (size-name) differ.
          const name = `same-name-${client}.bin`;
          const [shaA] = await makeFiles(a.page, [{ name, size: 6 * CHUNK + 5, seed: 21 }]);
          const [shaB] = await makeFiles(b.page, [{ name, size: 5 * CHUNK + 9, seed: 22 }]);
          assert.notEqual(shaA, shaB);
          await Promise.all([addFiles(a.page, [name]), addFiles(b.page, [name])]);
          const [[doneA], [doneB]] = await Promise.all([
            waitForCompleted(a.page, [name]),
            waitForCompleted(b.page, [name]),
          ]);
          assert.notEqual(doneA!.fileId, doneB!.fileId);
          await assertStored(server, doneA!, shaA!);
          await assertStored(server, doneB!, shaB!);
        } finally {
          await a.page.close();
          await b.page.close();
        }
      });
    });
  });
}

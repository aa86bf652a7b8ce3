// The demo page as a person uses it: picker, folder picker, drop, the client and body switches,
// speed and time left, pause/resume/cancel for all, and a layout that fits laptop and phone widths.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  addFiles,
  assertStored,
  CHUNK,
  delay,
  makeFiles,
  openDemo,
  prngBytes,
  rows,
  sha256,
  until,
  waitForCompleted,
  waitForRow,
  withFixture,
} from "./_harness.ts";

Deno.test("demo page adds files from the picker, a folder and a drop", async (t) => {
  await withFixture({}, async ({ server, browser }) => {
    for (const client of ["resumable", "flow"] as const) {
      await t.step(client, async () => {
        const { page } = await openDemo(browser, server, { client, chunkSize: CHUNK });
        const folder = await Deno.makeTempDir({ prefix: "e2e-folder-" });
        try {
          // File picker, with bytes made here from the same PRNG the page uses.
          const picked = [
            { name: `picked-${client}-a.bin`, bytes: prngBytes(81, 3 * CHUNK + 17) },
            { name: `picked-${client}-b.bin`, bytes: prngBytes(82, 1000) },
          ];
          await page.locator("#pick-files").setInputFiles(
            picked.map(({ name, bytes }) => ({
              name,
              mimeType: "application/octet-stream",
              buffer: Buffer.from(bytes),
            })),
          );
          const done = await waitForCompleted(page, picked.map((file) => file.name));
          for (const [i, file] of done.entries()) {
            await assertStored(server, file, await sha256(picked[i]!.bytes));
          }

          // Folder picker: the relative path reaches the page's list.
          await Deno.mkdir(`${folder}/album-${client}/sub`, { recursive: true });
          const inFolder = prngBytes(83, 2 * CHUNK + 5);
          await Deno.writeFile(`${folder}/album-${client}/sub/deep-${client}.bin`, inFolder);
          await page.locator("#pick-folder").setInputFiles(`${folder}/album-${client}`);
          const [deep] = await waitForCompleted(page, [`deep-${client}.bin`]);
          await assertStored(server, deep!, await sha256(inFolder));
          assert.equal(
            await page.locator(`#done li[data-file-id="${deep!.fileId}"] a`).innerText(),
            `album-${client}/sub/deep-${client}.bin`,
          );

          // A drop on the drop zone.
          const name = `dropped-${client}.bin`;
          const [sha] = await makeFiles(page, [{ name, size: 2 * CHUNK + 3, seed: 84 }]);
          // A scripted drop: the same event a person's drop fires (in-page code as a string, because
          // this file is type-checked without the DOM library).
          await page.evaluate(`(() => {
            const transfer = new DataTransfer();
            transfer.items.add(testFiles[${JSON.stringify(name)}]);
            document.getElementById("drop").dispatchEvent(
              new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }),
            );
          })()`);
          const [dropped] = await waitForCompleted(page, [name]);
          await assertStored(server, dropped!, sha!);
          // Every completed upload has a download link to its url.
          const links = await page.evaluate(
            `[...document.querySelectorAll("#done a")].map((link) => link.getAttribute("href"))`,
          ) as string[];
          assert.equal(links.length, 4);
          for (const href of links) assert.match(href ?? "", /^\/files\/[0-9a-zA-Z_-]+$/);
        } finally {
          await page.close();
          await Deno.remove(folder, { recursive: true });
        }
      });
    }
  });
});

Deno.test("demo page switches between resumable.js and flow.js, multipart and octet", async () => {
  await withFixture({ env: { CHUNK_DELAY_MS: "40" } }, async ({ server, browser }) => {
    const { page, traffic } = await openDemo(browser, server, { chunkSize: CHUNK });
    try {
      assert.equal(await page.evaluate("demo.client.kind"), "resumable");
      await page.getByLabel("flow.js").check();
      await page.getByLabel("octet").check();
      assert.equal(await page.evaluate("demo.client.kind"), "flow");
      assert.match(page.url(), /client=flow/);
      assert.match(page.url(), /method=octet/);
      const name = "switched.bin";
      const [sha] = await makeFiles(page, [{ name, size: 6 * CHUNK, seed: 91, type: "image/png" }]);
      await addFiles(page, [name]);
      // No switching while an upload runs: its requests would be orphaned.
      await until(() => traffic.posts.length > 0, "an upload");
      assert.equal(await page.getByLabel("resumable.js").isDisabled(), true);
      const [done] = await waitForCompleted(page, [name]);
      await assertStored(server, done!, sha!);
      assert.equal(await page.getByLabel("resumable.js").isDisabled(), false);
      for (const post of traffic.posts) {
        assert.ok(post.url.searchParams.has("flowChunkNumber"), "flow.js parameters");
        assert.equal(post.contentType, "image/png", "flow.js octet sends the file's type, not multipart");
      }
    } finally {
      await page.close();
    }
  });
});

for (const client of ["resumable", "flow"] as const) {
  Deno.test(`demo page shows speed and time left, and pauses, resumes and cancels all (${client})`, async () => {
    await withFixture({ env: { CHUNK_DELAY_MS: "100" } }, async ({ server, browser }) => {
      const { page, traffic } = await openDemo(browser, server, { client, chunkSize: CHUNK });
      try {
        const specs = [
          { name: `all-${client}-1.bin`, size: 20 * CHUNK, seed: 101 },
          { name: `all-${client}-2.bin`, size: 20 * CHUNK + 1, seed: 102 },
          { name: `all-${client}-3.bin`, size: 20 * CHUNK + 2, seed: 103 },
        ];
        const shas = await makeFiles(page, specs);
        await addFiles(page, specs.map((spec) => spec.name));
        // Speed and time left are sampled every 500 ms, on the row and overall.
        const statuses = () =>
          page.evaluate(
            `[...document.querySelectorAll("#queue .status")].map((s) => s.textContent)`,
          ) as Promise<
            string[]
          >;
        const speedText = /^\d+% · [\d.]+ [KM]?B\/s · \d.* left$/;
        await until(async () => (await statuses()).some((text) => speedText.test(text)), "a speed");
        await until(
          async () =>
            /^3 files · .* of .* · .*\/s · .* left$/.test(await page.locator("#overall-text").innerText()),
          "overall speed and time left",
        );

        await page.locator("#pause-all").click();
        for (const spec of specs) await waitForRow(page, spec.name, "paused");
        await delay(200);
        const sent = traffic.posts.length;
        await delay(500);
        assert.equal(traffic.posts.length, sent, "nothing is sent while all are paused");

        await page.locator("#resume-all").click();
        await page.locator(`#queue li:has-text("${specs[2]!.name}") [data-action=cancel]`).click();
        const done = await waitForCompleted(page, [specs[0]!.name, specs[1]!.name]);
        for (const [i, file] of done.entries()) await assertStored(server, file, shas[i]!);
        assert.deepEqual(await rows(page), [], "the cancelled file is gone from the list");
        assert.equal(await page.locator(`#done li`).count(), 2);
        // The page told the server, which removed what it had stored of the file.
        await until(() => traffic.deletes.some((sent) => sent.status === 200), "the cancel's answer");
        assert.equal(traffic.deletes.length, 1);
        const param = client === "flow" ? "flowIdentifier" : "resumableIdentifier";
        assert.match(
          traffic.deletes[0]!.url.searchParams.get(param) ?? "",
          new RegExp(`all-${client}-3bin$`),
        );

        // Cancel all: nothing more is sent.
        const more = [{ name: `later-${client}.bin`, size: 30 * CHUNK, seed: 104 }];
        await makeFiles(page, more);
        const before = traffic.posts.length;
        await addFiles(page, [more[0]!.name]);
        await until(() => traffic.posts.length > before, "an upload");
        await page.locator("#cancel-all").click();
        assert.deepEqual(await rows(page), []);
        await delay(200);
        const after = traffic.posts.length;
        await delay(500);
        assert.equal(traffic.posts.length, after, "nothing is sent after cancel all");
        assert.ok(after - before < 30, "cancelled mid-upload");
      } finally {
        await page.close();
      }
    });
  });
}

Deno.test("demo page fits laptop and phone widths without sideways scrolling", async () => {
  await withFixture(
    { env: { CHUNK_DELAY_MS: "200", MAX_FILE_SIZE: String(40 * CHUNK) } },
    async ({ server, browser }) => {
      for (const width of [1280, 390, 320]) {
        const { page } = await openDemo(browser, server, { chunkSize: CHUNK });
        try {
          await page.setViewportSize({ width, height: 800 });
          const long = "a-very-long-file-name-without-any-spaces-that-must-not-widen-the-page-0123456789.bin";
          await makeFiles(page, [{ name: long, size: 30 * CHUNK, seed: 111 }, {
            name: "big.bin",
            size: 41 * CHUNK,
            seed: 112,
          }]);
          await addFiles(page, ["big.bin", long]);
          await waitForRow(page, "big.bin", "error");
          await waitForRow(page, long, "uploading");
          const [scroll, inner] = await page.evaluate(
            "[document.documentElement.scrollWidth, innerWidth]",
          ) as [number, number];
          assert.ok(scroll <= inner, `${width}px: page is ${scroll}px wide`);
          // Every button of a row stays inside the viewport.
          const rights = await page.evaluate(
            `[...document.querySelectorAll("#queue button")].filter((b) => b.offsetParent)
            .map((b) => b.getBoundingClientRect().right)`,
          ) as number[];
          assert.ok(rights.length >= 3);
          for (const right of rights) assert.ok(right <= width, `${width}px: a button ends at ${right}px`);
        } finally {
          await page.close();
        }
      }
    },
  );
});

// Screenshots of the demo page mid-upload at a laptop and a phone width, for looking at by eye:
// `deno task demo:screenshots [out-dir]`. Not a test; the page's behaviour is tested in *_test.ts.
import {
  addFiles,
  CHUNK,
  launchBrowser,
  makeFiles,
  openDemo,
  startServer,
  until,
  waitForCompleted,
  waitForRow,
} from "./_harness.ts";

const out = Deno.args[0] ?? await Deno.makeTempDir({ prefix: "demo-screenshots-" });
await Deno.mkdir(out, { recursive: true });
const server = await startServer({ env: { CHUNK_DELAY_MS: "250", MAX_FILE_SIZE: String(3 * 1024 * 1024) } });
const browser = await launchBrowser();
try {
  for (
    const [label, viewport] of [["laptop", { width: 1280, height: 900 }], ["phone", {
      width: 390,
      height: 844,
    }]] as const
  ) {
    for (const client of ["resumable", "flow"] as const) {
      const { page } = await openDemo(browser, server, { client, chunkSize: CHUNK });
      await page.setViewportSize(viewport);
      await makeFiles(page, [
        { name: "holiday-photos/IMG_2041.jpg", size: 40_000, seed: 1 },
        { name: "notes.txt", size: 3_000, seed: 2 },
        {
          name: "a-very-long-file-name-of-a-quarterly-report-final-v2 (copy).pdf",
          size: 2 * 1024 * 1024,
          seed: 3,
        },
        { name: "screen-recording.mov", size: 2.5 * 1024 * 1024, seed: 4 },
        { name: "disk-image.iso", size: 4 * 1024 * 1024, seed: 5 },
      ]);
      await addFiles(page, ["holiday-photos/IMG_2041.jpg", "notes.txt"]);
      await waitForCompleted(page, ["holiday-photos/IMG_2041.jpg", "notes.txt"]);
      // Both libraries upload files in the order added: the refused one first, so it fails at once.
      await addFiles(page, [
        "disk-image.iso",
        "a-very-long-file-name-of-a-quarterly-report-final-v2 (copy).pdf",
        "screen-recording.mov",
      ]);
      await waitForRow(page, "disk-image.iso", "error");
      await until(
        async () => (await page.locator(".file[data-state=uploading] .status:has-text('/s')").count()) > 0,
        "a speed",
      );
      await page.locator('#queue li:has-text("screen-recording.mov") [data-action=pause]').click();
      await page.screenshot({ path: `${out}/${label}-${client}.png`, fullPage: true });
      await page.close();
    }
  }
  console.log(`Screenshots in ${out}`);
} finally {
  await browser.close();
  await server.stop();
  await Deno.remove(server.uploadDir, { recursive: true });
}

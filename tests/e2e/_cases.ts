// Browser cases shared by the Deno-server tests and the Bun-server tests.
import assert from "node:assert/strict";
import {
  addFiles,
  assertStored,
  type Browser,
  CHUNK,
  type FileSpec,
  launchBrowser,
  makeFiles,
  openDemo,
  rows,
  type Runtime,
  type Server,
  startServer,
  storedChunks,
  until,
  waitForCompleted,
  waitForRow,
  withFixture,
} from "./_harness.ts";

/** Delay of every chunk upload in the interruption cases: with `CHUNKS` chunks, about a second to interrupt mid-upload even on a loaded machine. */
export const DELAY_MS = 80;
/** Chunks of the file in the interruption cases. */
export const CHUNKS = 40;

export type Client = "resumable" | "flow";

/** Uploads `specs` from a new page and checks every stored file; returns the page's traffic. */
export async function uploadAndCheck(
  browser: Browser,
  server: Server,
  specs: FileSpec[],
  settings: Record<string, string | number | boolean>,
) {
  const demo = await openDemo(browser, server, { chunkSize: CHUNK, ...settings });
  try {
    const shas = await makeFiles(demo.page, specs);
    await addFiles(demo.page, specs.map((spec) => spec.name));
    const done = await waitForCompleted(demo.page, specs.map((spec) => spec.name));
    for (const [i, file] of done.entries()) await assertStored(server, file, shas[i]!);
    return demo.traffic;
  } finally {
    await demo.page.close();
  }
}

/**
 * Kills the server (SIGKILL) mid-upload, waits for the page to report the failure, starts the
 * server again on the same port and UPLOAD_DIR, and retries from the page: only the chunks that
 * did not reach the disk are sent again, and the file is intact. Also used against Bun.
 */
export async function restartCase(browser: Browser, runtime: Runtime, client: Client) {
  const env = { CHUNK_DELAY_MS: String(DELAY_MS) };
  let server = await startServer({ runtime, env });
  const uploadDir = server.uploadDir;
  try {
    const { page, traffic } = await openDemo(browser, server, { client, chunkSize: CHUNK });
    try {
      const name = `restarted-${client}-${runtime}.bin`;
      const [sha] = await makeFiles(page, [{ name, size: CHUNKS * CHUNK, seed: 41 }]);
      await addFiles(page, [name]);
      await until(() => traffic.statuses.length >= 6, "6 stored chunks");
      await server.stop("SIGKILL");
      // resumable.js retries a dead server 100 times at once, flow.js gives up at once: both end in
      // an error row, whose message the page shows.
      const failed = await waitForRow(page, name, "error");
      assert.ok(failed.message.length > 0, "the page explains the failure");
      const stored = await storedChunks(uploadDir);
      assert.ok(
        stored >= 6 && stored < CHUNKS,
        `killed mid-upload with ${stored} of ${CHUNKS} chunks stored`,
      );

      server = await startServer({ runtime, env, uploadDir, port: server.port });
      const before = traffic.posts.length;
      await page.locator(`#queue li:has-text("${name}") [data-action=retry]`).click();
      const [done] = await waitForCompleted(page, [name]);
      assert.equal(traffic.posts.length - before, CHUNKS - stored, "chunks on disk are not sent again");
      await assertStored(server, done!, sha!);
      assert.deepEqual((await rows(page)).filter((row) => row.state === "error"), []);
    } finally {
      await page.close();
    }
  } finally {
    await server.stop();
    await Deno.remove(uploadDir, { recursive: true });
  }
}

/** Fails with what to install, rather than skip: the cases of every runtime are part of the suite. */
export async function assertInstalled(command: string, install: string): Promise<void> {
  try {
    const { success } = await new Deno.Command(command, { args: ["--version"], stdout: "null" }).output();
    assert.ok(success);
  } catch {
    throw new Error(`${command} is not installed: ${install} (these cases never skip)`);
  }
}

/**
 * Registers the browser cases run against the example server under another runtime than Deno: per
 * client, one multipart and one octet upload, and the kill-and-restart case.
 */
export function otherRuntimeCases(runtime: "bun" | "node", seed: number): void {
  const name = runtime === "bun" ? "Bun" : "Node";
  const installed = () =>
    runtime === "bun"
      ? assertInstalled("bun", "npm install -g bun")
      : assertInstalled("node", "it comes with npm");
  for (const client of ["resumable", "flow"] as const) {
    const label = client === "flow" ? "flow.js" : "resumable.js";

    Deno.test(`${label} uploads multipart and octet to the ${name} server`, async (t) => {
      await installed();
      await withFixture({ runtime }, async ({ server, browser }) => {
        assert.equal(server.runtime, runtime);
        for (const method of ["multipart", "octet"] as const) {
          await t.step(method, async () => {
            const traffic = await uploadAndCheck(
              browser,
              server,
              [{ name: `${runtime}-${client}-${method}.bin`, size: 5 * CHUNK + 4321, seed }],
              { client, method },
            );
            assert.equal(traffic.posts.length, 5);
          });
        }
      });
    });

    Deno.test(`${label} finishes an upload after the ${name} server is killed and restarted`, async () => {
      await installed();
      const browser = await launchBrowser();
      try {
        await restartCase(browser, runtime, client);
      } finally {
        await browser.close();
      }
    });
  }
}

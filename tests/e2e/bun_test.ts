// The same example server under Bun (examples/bun_server.ts): one multipart and one octet upload per
// client, and the kill-and-restart case, in headless Chromium.
import assert from "node:assert/strict";
import { restartCase, uploadAndCheck } from "./_cases.ts";
import { CHUNK, launchBrowser, withFixture } from "./_harness.ts";

async function assertBun(): Promise<void> {
  // Fail with a clear message rather than skip: the Bun cases are part of the suite.
  try {
    const { success } = await new Deno.Command("bun", { args: ["--version"], stdout: "null" }).output();
    assert.ok(success);
  } catch {
    throw new Error("bun is not installed: npm install -g bun (the Bun server cases never skip)");
  }
}

for (const client of ["resumable", "flow"] as const) {
  const label = client === "flow" ? "flow.js" : "resumable.js";

  Deno.test(`${label} uploads multipart and octet to the Bun server`, async (t) => {
    await assertBun();
    await withFixture({ runtime: "bun" }, async ({ server, browser }) => {
      assert.equal(server.runtime, "bun");
      for (const method of ["multipart", "octet"] as const) {
        await t.step(method, async () => {
          const traffic = await uploadAndCheck(
            browser,
            server,
            [{ name: `bun-${client}-${method}.bin`, size: 5 * CHUNK + 4321, seed: 71 }],
            { client, method },
          );
          assert.equal(traffic.posts.length, 5);
        });
      }
    });
  });

  Deno.test(`${label} finishes an upload after the Bun server is killed and restarted`, async () => {
    await assertBun();
    const browser = await launchBrowser();
    try {
      await restartCase(browser, "bun", client);
    } finally {
      await browser.close();
    }
  });
}

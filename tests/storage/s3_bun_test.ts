// S3Storage uses Web APIs only, so it must work under Bun too: run an upload there against s3rver.
import assert from "node:assert/strict";
import { startS3 } from "./_s3rver.ts";

const FIXTURE = new URL("../fixtures/s3_bun_upload.ts", import.meta.url).pathname;

Deno.test("S3Storage stores and reads back an upload under Bun", async () => {
  const s3 = await startS3();
  try {
    const { code, stdout, stderr } = await new Deno.Command("bun", {
      args: ["run", FIXTURE],
      env: { S3_ENDPOINT: s3.endpoint, S3_BUCKET: s3.bucket },
      stdout: "piped",
      stderr: "piped",
    }).output().catch(() => {
      throw new Error("bun is not installed: npm install -g bun (this case never skips)");
    });
    const out = new TextDecoder().decode(stdout);
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const sent = /sent ([0-9a-f]{64})/.exec(out)?.[1];
    assert.ok(sent, out);
    assert.match(out, new RegExp(`read ${sent}`));
    assert.equal(s3.copies.count, 2, "Bun assembled by server-side copy");
  } finally {
    await s3.close();
  }
});

// S3Storage uses Web APIs only, so it must work under Bun too: run an upload there against s3rver.
import assert from "node:assert/strict";
import { runUnderBun } from "../_child.ts";
import { startS3 } from "./_s3rver.ts";

Deno.test("S3Storage stores and reads back an upload under Bun", async () => {
  const s3 = await startS3();
  try {
    const { code, stdout: out, stderr } = await runUnderBun("s3_bun_upload.ts", {
      S3_ENDPOINT: s3.endpoint,
      S3_BUCKET: s3.bucket,
    });
    assert.equal(code, 0, stderr);
    const sent = /sent ([0-9a-f]{64})/.exec(out)?.[1];
    assert.ok(sent, out);
    assert.match(out, new RegExp(`read ${sent}`));
    assert.equal(s3.copies.count, 2, "Bun assembled by server-side copy");
  } finally {
    await s3.close();
  }
});

// S3Storage uses Web APIs only, so it must work under Bun and Node too: run an upload there against
// s3rver.
import assert from "node:assert/strict";
import { runUnder } from "../_child.ts";
import { startS3 } from "./_s3rver.ts";

for (const runtime of ["bun", "node"] as const) {
  const name = runtime === "bun" ? "Bun" : "Node";
  Deno.test(`S3Storage stores and reads back an upload under ${name}`, async () => {
    const s3 = await startS3();
    try {
      const { code, stdout: out, stderr } = await runUnder(runtime, "s3_upload.ts", {
        S3_ENDPOINT: s3.endpoint,
        S3_BUCKET: s3.bucket,
      });
      assert.equal(code, 0, stderr);
      const sent = /sent ([0-9a-f]{64})/.exec(out)?.[1];
      assert.ok(sent, out);
      assert.match(out, new RegExp(`read ${sent}`));
      // Chunks of 5 MiB and 5 MiB + 12 345 bytes: the last is copied as two parts (see s3_test.ts).
      assert.equal(s3.copies.count, 3, `${name} assembled by server-side copy`);
    } finally {
      await s3.close();
    }
  });
}

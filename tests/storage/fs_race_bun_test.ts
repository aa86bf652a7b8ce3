// Under Deno the file-system storage makes synchronous calls, so one process never interleaves
// them; under Bun (and across processes) they interleave for real. This drives that race.
import assert from "node:assert/strict";

const FIXTURE = new URL("../fixtures/fs_race.ts", import.meta.url).pathname;

Deno.test("FileSystemStorage stores the first chunks of uploads arriving together from two writers, under Bun", async () => {
  const { code, stdout, stderr } = await new Deno.Command("bun", {
    args: ["run", FIXTURE],
    stdout: "piped",
    stderr: "piped",
  }).output().catch(() => {
    throw new Error("bun is not installed: npm install -g bun (this case never skips)");
  });
  const out = new TextDecoder().decode(stdout);
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  assert.match(out, /^failures 0$/m, out);
});

// Under Deno the file-system storage makes synchronous calls, so one process never interleaves
// them; under Bun (and across processes) they interleave for real. This drives that race.
import assert from "node:assert/strict";
import { runUnderBun } from "../_child.ts";

Deno.test("FileSystemStorage stores the first chunks of uploads arriving together from two writers, under Bun", async () => {
  const { code, stdout, stderr } = await runUnderBun("fs_race.ts");
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^failures 0$/m, stdout);
});

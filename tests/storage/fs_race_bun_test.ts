// The file-system storage runs on node:fs under Bun: the same race as under Deno (two storages on
// one directory, the first chunks of an upload together), through the other file API.
import assert from "node:assert/strict";
import { runUnderBun } from "../_child.ts";

Deno.test("FileSystemStorage stores the first chunks of uploads arriving together from two writers, under Bun", async () => {
  const { code, stdout, stderr } = await runUnderBun("fs_race.ts");
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^failures 0$/m, stdout);
});

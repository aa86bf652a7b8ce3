// The file-system storage runs on node:fs under Bun and Node: the same race as under Deno (two
// storages on one directory, the first chunks of an upload together), through the other file API.
import assert from "node:assert/strict";
import { runUnder } from "../_child.ts";

for (const runtime of ["bun", "node"] as const) {
  const name = runtime === "bun" ? "Bun" : "Node";
  Deno.test(`FileSystemStorage stores the first chunks of uploads arriving together from two writers, under ${name}`, async () => {
    const { code, stdout, stderr } = await runUnder(runtime, "fs_race.ts");
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^failures 0$/m, stdout);
  });
}

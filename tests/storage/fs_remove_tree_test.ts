// Under Node, the file storage removes a small tree (a completed upload's chunk folder) synchronously:
// Node's asynchronous `rm` walks it one thread-pool call at a time, each waiting for the event loop,
// and the request completing the upload waited on that. A large tree stays asynchronous.
import assert from "node:assert/strict";
import { runUnder } from "../_child.ts";

for (const runtime of ["bun", "node"] as const) {
  const name = runtime === "bun" ? "Bun" : "Node";
  Deno.test(`FileSystemStorage removes small and large trees, files and missing paths whole, under ${name}`, async () => {
    const { code, stdout, stderr } = await runUnder(runtime, "fs_remove_tree.ts");
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout);
    assert.deepEqual(result.left, [], "nothing is left of any of them");
    if (runtime === "node") {
      assert.equal(result.smallTurns, 0, "a small tree is removed without waiting for the event loop");
      assert.equal(result.fileTurns, 0, "so is a file");
      assert.ok(
        result.largeTurns > 0,
        `a tree past the bound is removed off the thread (${result.largeTurns} turns)`,
      );
    }
  });
}

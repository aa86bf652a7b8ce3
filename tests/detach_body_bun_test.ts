// Under Bun, where request bodies arrive as fresh buffers (no BYOB reads), the file-system storage
// frees each piece of an octet body once it is written: the reason `detachBodyBuffers` exists.
import assert from "node:assert/strict";
import { runUnderBun } from "./_child.ts";

for (const detach of [true, false]) {
  Deno.test(`under Bun, an octet upload ${detach ? "frees" : "keeps"} the pieces of its bodies (detachBodyBuffers: ${detach}), and the file is intact`, async () => {
    const { code, stdout, stderr } = await runUnderBun("detach_bun.ts", { DETACH: String(detach) });
    assert.equal(code, 0, stderr);
    const [, pieces, detached] = /pieces (\d+) detached (\d+)/.exec(stdout) ?? [];
    assert.ok(Number(pieces) >= 4, `a piece or more per chunk: ${stdout}`);
    assert.equal(Number(detached), detach ? Number(pieces) : 0, stdout);
    const sent = /sent ([0-9a-f]{64})/.exec(stdout)?.[1];
    assert.ok(sent, stdout);
    assert.match(stdout, new RegExp(`read ${sent}`));
  });
}

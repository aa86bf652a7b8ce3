// The Deno Deploy example must work with no file system at all: run it with reads and writes
// denied, upload a two-chunk file through it, and download the file back.
import assert from "node:assert/strict";

const EXAMPLE = new URL("../examples/deno_deploy.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

Deno.test("examples/deno_deploy.ts stores and serves an upload with file access denied", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "serve",
      "--config",
      CONFIG,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--allow-net=127.0.0.1",
      "--allow-env",
      "--deny-read",
      "--deny-write",
      EXAMPLE,
    ],
    env: { KV_PATH: ":memory:" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let output = "";
    let port: string | undefined;
    while (!port) {
      const { done, value } = await lines.read();
      if (done) throw new Error(`Example exited: ${output}`);
      output += value;
      port = /Listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1];
    }
    const bytes = crypto.getRandomValues(new Uint8Array(3000));
    let status: { complete: boolean; file?: { id: string; url?: string } } = { complete: false };
    for (const n of [1, 2]) {
      const query = new URLSearchParams({
        resumableChunkNumber: String(n),
        resumableChunkSize: "1024",
        resumableCurrentChunkSize: n === 1 ? "1024" : "1976",
        resumableTotalSize: "3000",
        resumableIdentifier: "3000-deploy",
        resumableFilename: "deploy.bin",
      });
      const response: Response = await fetch(`http://127.0.0.1:${port}/upload?${query}`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: n === 1 ? bytes.slice(0, 1024) : bytes.slice(1024),
      });
      assert.equal(response.status, 200);
      status = await response.json();
    }
    assert.equal(status.complete, true);
    const download = await fetch(`http://127.0.0.1:${port}${status.file!.url}`);
    assert.deepEqual(new Uint8Array(await download.arrayBuffer()), bytes);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await lines.cancel().catch(() => {});
    await child.stdout.cancel().catch(() => {});
  }
});

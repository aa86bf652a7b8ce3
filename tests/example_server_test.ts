// examples/server.ts as a newcomer runs it: a subprocess on a free port with its own UPLOAD_DIR.
import assert from "node:assert/strict";
import { chunkRequest, clientChunks, seededBytes, sha256 } from "./_helpers.ts";

Deno.test("examples/server.ts serves the demo page, the client library, uploads and downloads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "resumable-example-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../examples/server.ts", import.meta.url).pathname],
    env: { PORT: "0", UPLOAD_DIR: `${dir}/uploads` },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let output = "";
    while (!/Listening on (http:\/\/\S+)\//.test(output)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`server exited: ${output}`);
      output += value;
    }
    reader.releaseLock();
    child.stdout.cancel().catch(() => {});
    const origin = /Listening on (http:\/\/\S+?)\//.exec(output)![1]!;

    const page = await (await fetch(`${origin}/`)).text();
    assert.match(page, /<script src="\/vendor\/resumable\.js">/);
    const library = await fetch(`${origin}/vendor/resumable.js`);
    assert.equal(library.status, 200);
    assert.match(await library.text(), /function Resumable|var Resumable/);

    const data = seededBytes(5000, 77);
    const chunks = clientChunks(data, {
      identifier: "5000-example",
      chunkSize: 2048,
      fileName: "ünï côdé.bin",
    });
    let last;
    for (const chunk of chunks) last = await (await fetch(chunkRequest(`${origin}/upload`, chunk))).json();
    assert.equal(last.complete, true);
    assert.equal(last.file.url, `/files/${last.file.id}`);
    const download = await fetch(`${origin}${last.file.url}`);
    assert.equal(download.status, 200);
    assert.match(
      download.headers.get("content-disposition")!,
      /filename\*=UTF-8''%C3%BCn%C3%AF%20c%C3%B4d%C3%A9\.bin/,
    );
    assert.equal(await sha256(new Uint8Array(await download.arrayBuffer())), await sha256(data));
    assert.equal((await fetch(`${origin}/files/../../etc/passwd`)).status, 404);
    const malformed = await fetch(`${origin}/files/%E0%A4%A`);
    assert.equal(malformed.status, 404, "a malformed escape names no file");
    await malformed.body?.cancel();

    // A name with characters encodeURIComponent leaves as they are, which RFC 5987 does not allow.
    const quoted = clientChunks(seededBytes(10, 78), {
      identifier: "10-quoted",
      chunkSize: 2048,
      fileName: `it's (1)*.txt`,
    });
    const stored = await (await fetch(chunkRequest(`${origin}/upload`, quoted[0]!))).json();
    const named = await fetch(`${origin}${stored.file.url}`);
    await named.body?.cancel();
    assert.equal(
      named.headers.get("content-disposition"),
      `attachment; filename="it's (1)*.txt"; filename*=UTF-8''it%27s%20%281%29%2A.txt`,
    );
    await (await fetch(`${origin}/files/0123456789abcdef01234567`)).body?.cancel();
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

// The same example server under Node (examples/node_server.ts, bundled to JavaScript, behind its
// node:http adapter): the browser cases of Bun, and over the wire what the adapter must get right.
import assert from "node:assert/strict";
import { assertInstalled, otherRuntimeCases } from "./_cases.ts";
import { startServer } from "./_harness.ts";
import {
  chunkDataLeft,
  chunkRequest,
  type ClientChunk,
  clientChunks,
  listTree,
  rawExchange,
  seededBytes,
  sha256,
  testRequest,
} from "../_helpers.ts";

otherRuntimeCases("node", 73);

Deno.test("the Node server assembles parallel, duplicated and racing chunks once, and refuses an oversized, aborted or misaddressed request without harm", async () => {
  await assertInstalled("node", "it comes with npm");
  const server = await startServer({ runtime: "node" });
  const upload = `${server.url}upload`;
  try {
    // Chunks out of order and in parallel, then the last three twice at once, both body kinds.
    const uploads = Array.from({ length: 20 }, (_, i) => {
      const data = seededBytes(20_000 + i, 500 + i);
      return { data, chunks: clientChunks(data, { identifier: `node-race-${i}`, chunkSize: 2_000 }) };
    });
    const answers = await Promise.all(uploads.map(async ({ chunks }) => {
      const first = chunks.slice(0, -3).reverse();
      await Promise.all(first.map((chunk, i) => send(upload, chunk, i % 2 ? "octet" : "multipart")));
      const last = chunks.slice(-3);
      return await Promise.all(
        [...last, ...last].map((chunk, i) => send(upload, chunk, i % 2 ? "multipart" : "octet")),
      );
    }));
    for (const [i, { data }] of uploads.entries()) {
      const ids = new Set(answers[i]!.filter((body) => body.complete).map((body) => body.file.id));
      assert.equal(ids.size, 1, `node-race-${i} completed as one file`);
      const [id] = ids;
      const stored = await Deno.readFile(`${server.uploadDir}/files/${id}/file.bin`);
      assert.equal(await sha256(stored), await sha256(data), `node-race-${i}`);
    }
    const files = (await listTree(`${server.uploadDir}/files`)).filter((path) => /^[0-9a-f]{24}$/.test(path));
    assert.equal(files.length, 20, "one stored file per upload");

    // A client that goes away halfway through a chunk: nothing of it is stored, the server goes on.
    const [chunk] = clientChunks(seededBytes(100_000, 600), { identifier: "node-abort", chunkSize: 100_000 });
    const connection = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await connection.write(new TextEncoder().encode(
      `POST /upload?${new URLSearchParams(chunk!.params)} HTTP/1.1\r\nHost: x\r\n` +
        `Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n`,
    ));
    await connection.write(chunk!.bytes.subarray(0, 50_000));
    await new Promise((resolve) => setTimeout(resolve, 50));
    connection.close();
    assert.deepEqual(await chunkDataLeft(`${server.uploadDir}/uploads`), []);
    const tested = await fetch(testRequest(upload, chunk!));
    await tested.body?.cancel();
    assert.equal(tested.status, 204);
    assert.equal((await send(upload, chunk!, "octet")).complete, true, "the same chunk uploads afterwards");

    // A body over the limit is refused before it is read in full, by its length or as it streams.
    const [small] = clientChunks(seededBytes(1000, 700), { identifier: "node-big", chunkSize: 1000 });
    const target = `POST /upload?${new URLSearchParams(small!.params)} HTTP/1.1\r\nHost: x\r\n` +
      `Content-Type: application/octet-stream\r\n`;
    const declared = await rawExchange(
      server.port,
      `${target}Content-Length: ${1024 ** 3}\r\n\r\n`,
      new Uint8Array(64 * 1024),
      16_384,
    );
    assert.match(declared.statusLine, /^HTTP\/1\.1 400/);
    assert.ok(declared.piecesSent < 100, `sent ${declared.piecesSent} x 64 KiB before the answer`);
    const streamed = await rawExchange(
      server.port,
      `${target}Transfer-Encoding: chunked\r\n\r\n`,
      new TextEncoder().encode(`10000\r\n${"a".repeat(0x10000)}\r\n`),
      16_384,
    );
    assert.match(streamed.statusLine, /^HTTP\/1\.1 400/);
    assert.ok(streamed.piecesSent < 100, `sent ${streamed.piecesSent} x 64 KiB before the answer`);

    // A Host header that makes no URL is the client's error.
    const bad = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await bad.write(
        new TextEncoder().encode("GET /upload HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"),
      );
      const reply = new TextDecoder().decode((await new Response(bad.readable).bytes()).subarray(0, 64));
      assert.match(reply, /^HTTP\/1\.1 400/);
    } finally {
      try {
        bad.close();
      } catch { /* closed with its readable */ }
    }
    const page = await fetch(server.url);
    await page.body?.cancel();
    assert.equal(page.status, 200, "the server still serves");
  } catch (error) {
    // What the server printed (a crash's stack) says more than the client's failed fetch.
    throw new Error(`${error}\nNode server output:\n${server.output()}`, { cause: error });
  } finally {
    await server.stop();
    await Deno.remove(server.uploadDir, { recursive: true });
  }
});

async function send(url: string, chunk: ClientChunk, mode: "multipart" | "octet") {
  const response = await fetch(chunkRequest(url, chunk, mode));
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

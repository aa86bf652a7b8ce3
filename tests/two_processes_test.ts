// Two handler processes share one upload directory and race the same uploads' last chunks.
import assert from "node:assert/strict";
import { type ChildServer, spawnServer } from "./_child.ts";
import { chunkRequest, type ClientChunk, clientChunks, seededBytes, sha256 } from "./_helpers.ts";

function startChild(dir: string, log: string): Promise<ChildServer> {
  return spawnServer("fs_server.ts", { UPLOAD_DIR: dir, COMPLETIONS_LOG: log });
}

async function stop(child: ChildServer): Promise<void> {
  child.process.kill("SIGTERM");
  await child.process.status;
}

async function post(url: string, chunk: ClientChunk, mode: "multipart" | "octet") {
  const response = await fetch(chunkRequest(url, chunk, mode));
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

Deno.test("two processes sharing one directory assemble each raced upload exactly once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "resumable-2proc-" });
  const log = `${dir}/completions.log`;
  await Deno.writeTextFile(log, "");
  const children = await Promise.all([startChild(`${dir}/root`, log), startChild(`${dir}/root`, log)]);
  try {
    const uploads = Array.from({ length: 30 }, (_, i) => {
      const data = seededBytes(3000 + i * 7, 500 + i);
      return { data, chunks: clientChunks(data, { identifier: `shared-${i}`, chunkSize: 500 }) };
    });
    await Promise.all(uploads.map(async ({ chunks }, i) => {
      for (const [j, chunk] of chunks.slice(0, -2).entries()) {
        await post(children[(i + j) % 2]!.url, chunk, "multipart");
      }
      // The last two chunks go to both processes at once, twice each.
      const last = chunks.slice(-2);
      await Promise.all(
        [0, 1].flatMap((c) => last.map((chunk) => post(children[c]!.url, chunk, c ? "octet" : "multipart"))),
      );
    }));
    const lines = (await Deno.readTextFile(log)).trim().split("\n").map((line) => line.split(" "));
    const perUpload = Object.groupBy(lines, (fields) => fields[1]!);
    assert.equal(Object.keys(perUpload).length, uploads.length);
    for (const [identifier, entries] of Object.entries(perUpload)) {
      assert.equal(entries!.length, 1, `${identifier} completed ${entries!.length} times`);
    }
    const pids = new Set(lines.map((fields) => fields[0]));
    for (const [i, { data }] of uploads.entries()) {
      const location = perUpload[`shared-${i}`]![0]![3]!;
      assert.equal(await sha256(await Deno.readFile(location)), await sha256(data), `shared-${i}`);
    }
    console.log(
      `completions by process: ${[...pids].map((pid) => lines.filter((l) => l[0] === pid).length)}`,
    );
  } finally {
    await Promise.all(children.map(stop));
    await Deno.remove(dir, { recursive: true });
  }
});

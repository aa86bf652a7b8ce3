// Clients that send half a chunk and stall, or go away: over raw TCP on loopback, on a real disk.
import assert from "node:assert/strict";
import { createResumableHandler } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { chunkRequest, clientChunks, listTree, seededBytes, serve, testRequest } from "./_helpers.ts";

const encoder = new TextEncoder();

async function fixture(bodyTimeoutMs: number) {
  const parent = await Deno.makeTempDir({ prefix: "resumable-slow-" });
  const root = `${parent}/root`;
  const handler = createResumableHandler({
    storage: new FileSystemStorage({ directory: root }),
    bodyTimeoutMs,
  });
  // Every handler call is tracked, so the test can wait for a request the client abandoned.
  const inFlight = new Set<Promise<Response>>();
  let started = 0;
  const server = await serve((request) => {
    started++;
    const response = handler(request);
    inFlight.add(response);
    response.finally(() => inFlight.delete(response)).catch(() => {});
    return response;
  });
  return {
    root,
    server,
    started: () => started,
    /** Waits until `count` requests reached the handler and all of them finished. */
    settled: async (count: number) => {
      for (let wait = 0; started < count; wait++) {
        assert.ok(wait < 500, `only ${started} of ${count} requests reached the handler`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
    close: async () => {
      await server.close();
      await Deno.remove(parent, { recursive: true });
    },
  };
}

/** Sends the head and part of a body; `then` decides whether to stall (read the answer) or hang up. */
async function partial(port: number, path: string, headers: Record<string, string>, body: Uint8Array) {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = [
    `POST ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ]
    .join("\r\n");
  await connection.write(encoder.encode(`${head}\r\n\r\n`));
  await connection.write(body);
  return {
    /** Waits for the server's answer without sending more; gives up (failing the test) after 10 s. */
    async answer(): Promise<string> {
      const buffer = new Uint8Array(4096);
      let text = "";
      let gaveUp = false;
      const guard = setTimeout(() => {
        gaveUp = true;
        connection.close();
      }, 10_000);
      try {
        while (!text.includes("\r\n\r\n")) {
          const read = await connection.read(buffer);
          if (read === null) break;
          text += new TextDecoder().decode(buffer.subarray(0, read));
        }
      } catch (error) {
        if (!gaveUp) throw error;
      } finally {
        clearTimeout(guard);
      }
      if (!gaveUp) connection.close();
      return gaveUp ? "no answer: the server held the stalled request" : text;
    },
    hangUp: () => connection.close(),
  };
}

const data = seededBytes(4000, 9);
const chunks = clientChunks(data, { identifier: "4000-slow", chunkSize: 2000 });
const query = (n: number) => `/upload?${new URLSearchParams(chunks[n]!.params)}`;

async function assertNothingStored(root: string, url: string) {
  const test = await fetch(testRequest(url, chunks[0]!));
  assert.equal(test.status, 204, "the half-sent chunk does not test as present");
  await test.body?.cancel();
  const tree = await listTree(root).catch(() => []);
  assert.deepEqual(tree.filter((path) => path.endsWith(".tmp")), [], "temp data is cleaned up");
  assert.deepEqual(tree.filter((path) => /chunks\/[0-9]+$/.test(path)), []);
}

Deno.test("a stalled octet body is cut off after bodyTimeoutMs with 408, leaving nothing stored", async () => {
  const f = await fixture(150);
  try {
    const client = await partial(f.server.port, query(0), {
      "content-type": "application/octet-stream",
      "content-length": "2000",
    }, chunks[0]!.bytes.slice(0, 1000));
    const answer = await client.answer();
    assert.match(answer, /^HTTP\/1\.1 408/);
    await f.settled(1);
    await assertNothingStored(f.root, f.server.url);
  } finally {
    await f.close();
  }
});

Deno.test("a stalled multipart body is cut off with 408 too", async () => {
  const f = await fixture(150);
  try {
    const form = new FormData();
    for (const [key, value] of Object.entries(chunks[0]!.params)) form.set(key, value);
    form.set("file", new Blob([chunks[0]!.bytes]), "blob");
    const request = new Request("http://x/", { method: "POST", body: form });
    const body = new Uint8Array(await request.arrayBuffer());
    const client = await partial(f.server.port, "/upload", {
      "content-type": request.headers.get("content-type")!,
      "content-length": String(body.byteLength),
    }, body.slice(0, body.byteLength - 700));
    assert.match(await client.answer(), /^HTTP\/1\.1 408/);
    await f.settled(1);
    await assertNothingStored(f.root, f.server.url);
  } finally {
    await f.close();
  }
});

Deno.test("a client that disconnects mid-chunk leaves no chunk and no temp file; the upload then completes", async () => {
  const f = await fixture(30_000);
  try {
    for (const mode of ["octet", "multipart"] as const) {
      const full = chunkRequest("http://x/upload", chunks[0]!, mode);
      const body = new Uint8Array(await full.arrayBuffer());
      const path = mode === "octet" ? query(0) : "/upload";
      const before = f.started();
      const client = await partial(f.server.port, path, {
        "content-type": full.headers.get("content-type")!,
        "content-length": String(body.byteLength),
      }, body.slice(0, 900));
      client.hangUp();
      await f.settled(before + 1);
      await assertNothingStored(f.root, f.server.url);
    }
    for (const chunk of chunks) {
      const response = await fetch(chunkRequest(f.server.url, chunk));
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
    const done = await fetch(testRequest(f.server.url, chunks[1]!));
    assert.equal((await done.json()).complete, true);
  } finally {
    await f.close();
  }
});

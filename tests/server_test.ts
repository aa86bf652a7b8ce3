// Wire-level tests: Deno.serve on 127.0.0.1 with the file-system storage in a fresh temp directory.
import assert from "node:assert/strict";
import { createResumableHandler, type StoredFile } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import {
  chunkDataLeft,
  chunkRequest,
  type ClientChunk,
  clientChunks,
  listTree,
  type LoopbackServer,
  rawExchange,
  seededBytes,
  serve,
  sha256,
  testRequest,
} from "./_helpers.ts";

interface Fixture {
  parent: string;
  root: string;
  server: LoopbackServer;
  completions: StoredFile[];
  close(): Promise<void>;
}

async function start(): Promise<Fixture> {
  const parent = await Deno.makeTempDir({ prefix: "resumable-wire-" });
  const root = `${parent}/root`;
  const completions: StoredFile[] = [];
  const handler = createResumableHandler({
    storage: new FileSystemStorage({ directory: root }),
    onComplete: ({ file }) => {
      completions.push(file);
    },
  });
  const server = await serve(handler);
  return {
    parent,
    root,
    server,
    completions,
    close: async () => {
      await server.close();
      await Deno.remove(parent, { recursive: true });
    },
  };
}

async function send(url: string, chunk: ClientChunk, mode: "multipart" | "octet" = "multipart") {
  const response = await fetch(chunkRequest(url, chunk, mode));
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

async function fileOnDisk(file: StoredFile): Promise<Uint8Array> {
  assert.ok(file.location);
  return await Deno.readFile(file.location);
}

Deno.test("a loopback upload completes out of order with duplicates, byte-identical on disk", async () => {
  const fx = await start();
  try {
    const data = seededBytes(50_000, 100);
    const chunks = clientChunks(data, { identifier: "50000-wire", chunkSize: 4096 });
    const order = [...chunks].reverse();
    order.splice(3, 0, chunks[0]!, chunks[5]!);
    for (const [i, chunk] of order.entries()) await send(fx.server.url, chunk, i % 2 ? "octet" : "multipart");
    assert.equal(fx.completions.length, 1);
    const file = fx.completions[0]!;
    assert.equal(await sha256(await fileOnDisk(file)), await sha256(data));
    assert.ok(file.location!.startsWith(`${fx.root}/files/${file.id}/`));
    const tree = await listTree(fx.root);
    assert.ok(!tree.some((path) => /chunks\/|\.tmp\//.test(path)), `leftovers: ${tree.join(", ")}`);
  } finally {
    await fx.close();
  }
});

Deno.test("200 races of the last chunks, sent concurrently and twice, assemble each upload exactly once", async () => {
  const fx = await start();
  try {
    const uploads = Array.from({ length: 200 }, (_, i) => {
      const data = seededBytes(2000 + i, 1000 + i);
      return { data, chunks: clientChunks(data, { identifier: `race-${i}`, chunkSize: 400 }) };
    });
    const raceOne = async ({ chunks }: (typeof uploads)[number]) => {
      for (const chunk of chunks.slice(0, -3)) await send(fx.server.url, chunk);
      const last = chunks.slice(-3);
      const results = await Promise.all(
        [...last, ...last].map((chunk, i) => send(fx.server.url, chunk, i % 2 ? "octet" : "multipart")),
      );
      return results;
    };
    // Ten uploads at a time keep 60 requests in flight without exhausting the loopback.
    for (let i = 0; i < uploads.length; i += 10) await Promise.all(uploads.slice(i, i + 10).map(raceOne));
    assert.equal(fx.completions.length, 200);
    const byIdentifier = new Map(fx.completions.map((file) => [file.identifier, file]));
    assert.equal(byIdentifier.size, 200, "no upload completed twice");
    for (const [i, { data }] of uploads.entries()) {
      const file = byIdentifier.get(`race-${i}`)!;
      assert.equal(await sha256(await fileOnDisk(file)), await sha256(data), `race-${i}`);
    }
    const files = (await listTree(`${fx.root}/files`)).filter((path) => /^[0-9a-f]{24}$/.test(path));
    assert.equal(files.length, 200, "one stored file per upload");
  } finally {
    await fx.close();
  }
});

Deno.test("hostile identifiers, names and paths never write outside the storage root", async () => {
  const fx = await start();
  try {
    const hostile = [
      "../../../../tmp/pwned",
      "/etc/passwd",
      "..%2f..%2fescape",
      "a/../../b",
      "..\\..\\windows",
      "C:\\evil.txt",
      ".",
      "..",
      "CON",
      "x".repeat(999),
      "名前/../../ファイル",
    ];
    let accepted = 0;
    for (const [i, text] of hostile.entries()) {
      const data = seededBytes(10, 200 + i);
      const [chunk] = clientChunks(data, { identifier: text, fileName: text, chunkSize: 100 });
      chunk!.params.resumableRelativePath = `../../${text}`;
      const body = await send(fx.server.url, chunk!, i % 2 ? "octet" : "multipart");
      assert.equal(body.complete, true);
      assert.equal(body.file.name, text, "the original name is kept as metadata");
      accepted += 1;
    }
    for (const text of ["a\u0000b", "x".repeat(1001)]) {
      const [chunk] = clientChunks(seededBytes(10, 1), { identifier: text, chunkSize: 100 });
      const response = await fetch(chunkRequest(fx.server.url, chunk!, "octet"));
      assert.equal(response.status, 400);
      assert.equal((await response.json()).error.code, "invalid_identifier");
    }
    assert.deepEqual(await listTree(fx.parent).then((paths) => paths.filter((p) => !p.startsWith("root/"))), [
      "root",
    ]);
    const stored = (await listTree(`${fx.root}/files`)).filter((path) => path.split("/").length === 2);
    assert.equal(stored.filter((path) => !path.endsWith(".file.json")).length, accepted);
    for (const path of stored) {
      assert.ok(!path.split("/")[1]!.startsWith(".") || path.endsWith(".file.json"), path);
    }
    assert.equal(fx.completions.length, accepted, "two uploads with equal names both survive");
  } finally {
    await fx.close();
  }
});

Deno.test("an oversized body is rejected before it is read in full, by length or by count", async () => {
  const fx = await start();
  try {
    const [chunk] = clientChunks(seededBytes(1000, 300), { identifier: "1000-big", chunkSize: 1000 });
    const query = new URLSearchParams(chunk!.params);
    const piece = new Uint8Array(64 * 1024);
    const declared = await rawExchange(
      fx.server.port,
      `POST /upload?${query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n` +
        `Content-Length: ${1024 * 1024 * 1024}\r\n\r\n`,
      piece,
      16_384,
    );
    assert.match(declared.statusLine, /^HTTP\/1\.1 400/);
    assert.ok(declared.piecesSent < 100, `sent ${declared.piecesSent} x 64 KiB before the answer`);

    const chunkedPiece = new TextEncoder().encode(`10000\r\n${"a".repeat(0x10000)}\r\n`);
    const streamed = await rawExchange(
      fx.server.port,
      `POST /upload?${query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n` +
        `Transfer-Encoding: chunked\r\n\r\n`,
      chunkedPiece,
      16_384,
    );
    assert.match(streamed.statusLine, /^HTTP\/1\.1 400/);
    assert.ok(streamed.piecesSent < 100, `sent ${streamed.piecesSent} x 64 KiB before the answer`);
    assert.equal((await fetch(testRequest(fx.server.url, chunk!))).status, 204);
  } finally {
    await fx.close();
  }
});

Deno.test("an aborted body leaves no chunk and no temp file behind", async () => {
  const fx = await start();
  try {
    const [chunk] = clientChunks(seededBytes(100_000, 400), {
      identifier: "100000-abort",
      chunkSize: 100_000,
    });
    const query = new URLSearchParams(chunk!.params);
    for (const mode of ["octet", "multipart"] as const) {
      const connection = await Deno.connect({ hostname: "127.0.0.1", port: fx.server.port });
      const head = mode === "octet"
        ? `POST /upload?${query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n` +
          `Content-Length: 100000\r\n\r\n`
        : `POST /upload?${query} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n` +
          `Content-Length: 100200\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n`;
      await connection.write(new TextEncoder().encode(head));
      await connection.write(chunk!.bytes.subarray(0, 50_000));
      await new Promise((resolve) => setTimeout(resolve, 50));
      connection.close();
    }
    assert.deepEqual(await chunkDataLeft(fx.root), []);
    assert.equal((await fetch(testRequest(fx.server.url, chunk!))).status, 204);
    const body = await send(fx.server.url, chunk!, "octet");
    assert.equal(body.complete, true, "the same chunk uploads fine afterwards");
  } finally {
    await fx.close();
  }
});

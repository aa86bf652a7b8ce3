// Property test: thousands of generated hostile requests, in process and over raw TCP on loopback,
// against the file-system storage. After every request: no 5xx, no hang, nothing outside the
// storage root, the victim's completed file unchanged, and the victim's stored chunks unchanged
// unless the request was accepted (2xx). Afterwards a normal upload still succeeds.
//
// Replay: FUZZ_SEED=<seed> [FUZZ_CASE=<index>] [FUZZ_COUNT=<n>] deno test -A tests/fuzz_test.ts
import assert from "node:assert/strict";
import { createResumableHandler, type UploadStorage } from "../mod.ts";
import { uploadKey } from "../src/identifier.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { type FuzzCase, fuzzCase } from "./_fuzz_cases.ts";
import { chunkRequest, clientChunks, seededBytes, serve, sha256 } from "./_helpers.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const ONLY = Deno.env.get("FUZZ_CASE");
const COUNT = Number(Deno.env.get("FUZZ_COUNT") ?? 4000);
const WIRE_COUNT = Math.ceil(COUNT / 4);
const HANG_MS = 10_000;
console.log(`fuzz seed ${SEED} (replay: FUZZ_SEED=${SEED} deno test -A tests/fuzz_test.ts)`);

function indices(count: number): number[] {
  return ONLY !== undefined ? [Number(ONLY)] : Array.from({ length: count }, (_, i) => i);
}

interface World {
  parent: string;
  storage: FileSystemStorage;
  handler: (request: Request) => Promise<Response>;
  doneId: string;
  doneHash: string;
  partialKey: string;
}

async function makeWorld(): Promise<World> {
  const parent = await Deno.makeTempDir({ prefix: "resumable-fuzz-" });
  const storage = new FileSystemStorage({ directory: `${parent}/root` });
  const handler = createResumableHandler({
    storage,
    scope: (request) => request.headers.get("x-user") ?? "",
    checksum: true,
    bodyTimeoutMs: 200,
    cors: { origin: ["https://app.example"], allowHeaders: ["x-user"] },
    // Limits answer 507/429 by design; they are tested in limits_test.ts, not here.
    maxPendingBytes: Infinity,
    maxUploadsPerScope: Infinity,
    onError: () => {},
  });
  const as = (request: Request) => {
    request.headers.set("x-user", "victim");
    return request;
  };
  const done = clientChunks(seededBytes(300, 1), { identifier: "victim-done", chunkSize: 100 });
  let doneId = "";
  for (const chunk of done) {
    const body = await (await handler(as(chunkRequest("http://127.0.0.1/upload", chunk)))).json();
    if (body.complete) doneId = body.file.id;
  }
  const partial = clientChunks(seededBytes(300, 2), { identifier: "victim-partial", chunkSize: 100 });
  for (const chunk of partial.slice(0, 2)) {
    await (await handler(as(chunkRequest("http://127.0.0.1/upload", chunk, "octet")))).body?.cancel();
  }
  const world = {
    parent,
    storage,
    handler,
    doneId,
    doneHash: "",
    partialKey: uploadKey("victim", "victim-partial"),
  };
  world.doneHash = await fileHash(storage, doneId);
  assert.equal(world.doneHash, await sha256(seededBytes(300, 1)));
  return world;
}

async function fileHash(storage: UploadStorage, id: string): Promise<string> {
  const opened = await storage.openFile(id);
  if (!opened) return "missing";
  return await sha256(new Uint8Array(await new Response(opened.body).arrayBuffer()));
}

/** The victim's partial upload as stored: each chunk's hash, and whether it completed. */
async function partialState(world: World): Promise<string> {
  const parts: string[] = [];
  for (let i = 1; i <= 3; i++) {
    if (await world.storage.chunkSize(world.partialKey, i) === undefined) parts.push("-");
    else {
      const stream = await world.storage.openChunk(world.partialKey, i);
      parts.push(await sha256(new Uint8Array(await new Response(stream).arrayBuffer())));
    }
  }
  parts.push(String((await world.storage.getCompleted(world.partialKey))?.id));
  return parts.join(",");
}

async function checkInvariants(world: World, status: number, before: string, label: string): Promise<string> {
  assert.ok(status < 500, `${label}: answered ${status}`);
  const outside = [];
  for await (const entry of Deno.readDir(world.parent)) outside.push(entry.name);
  assert.deepEqual(outside, ["root"], `${label}: something was created outside the storage root`);
  for await (const entry of Deno.readDir(`${world.parent}/root`)) {
    assert.ok(["uploads", "files"].includes(entry.name), `${label}: unexpected ${entry.name} in the root`);
  }
  assert.equal(
    await fileHash(world.storage, world.doneId),
    world.doneHash,
    `${label}: completed file changed`,
  );
  const after = await partialState(world);
  // A refused request changes nothing; an accepted one may legitimately add a chunk or complete.
  if (status < 200 || status >= 300 || status === 204) {
    assert.equal(after, before, `${label}: a refused request (${status}) changed stored chunks`);
  }
  return after;
}

async function withHangGuard<T>(work: Promise<T>, label: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: no answer within ${HANG_MS} ms (hang)`)), HANG_MS);
  });
  try {
    return await Promise.race([work, guard]);
  } finally {
    clearTimeout(timer);
  }
}

function inProcessRequest(c: FuzzCase): Request {
  const canHaveBody = c.method !== "GET" && c.method !== "HEAD";
  return new Request(`http://127.0.0.1${c.target}`, {
    method: c.method,
    headers: c.headers.filter(([name]) => canHaveBody || name !== "content-length"),
    body: canHaveBody ? c.body as Uint8Array<ArrayBuffer> | null : null,
  });
}

async function normalUploadStillWorks(url: string, handler?: (r: Request) => Promise<Response>) {
  const data = seededBytes(2500, 77);
  const chunks = clientChunks(data, { identifier: `after-fuzz-${crypto.randomUUID()}`, chunkSize: 1000 });
  let last;
  for (const chunk of chunks) {
    const request = chunkRequest(url, chunk);
    request.headers.set("x-user", "victim");
    const response = handler ? await handler(request) : await fetch(request);
    assert.equal(response.status, 200);
    last = await response.json();
  }
  assert.equal(last.complete, true);
  assert.equal(last.file.size, 2500);
}

Deno.test(`fuzz: ${COUNT} hostile requests in process leave stored data intact (seed ${SEED})`, async () => {
  const world = await makeWorld();
  try {
    let state = await partialState(world);
    const statuses = new Map<number, number>();
    for (const index of indices(COUNT)) {
      const c = fuzzCase(SEED, index);
      const label = `seed ${SEED} case ${index}: ${c.summary}`;
      const response = await withHangGuard(world.handler(inProcessRequest(c)), label);
      await response.body?.cancel();
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      state = await checkInvariants(world, response.status, state, label);
    }
    console.log("in-process statuses:", Object.fromEntries([...statuses].sort(([a], [b]) => a - b)));
    await normalUploadStillWorks("http://127.0.0.1/upload", world.handler);
  } finally {
    await Deno.remove(world.parent, { recursive: true });
  }
});

/** Sends a case over raw TCP (so paths and lengths are exactly as generated); returns the status. */
async function sendRaw(port: number, c: FuzzCase): Promise<number> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const head = [`${c.method} ${c.target} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close"]
      .concat(c.headers.map(([name, value]) => `${name}: ${value}`)).join("\r\n");
    await connection.write(new TextEncoder().encode(`${head}\r\n\r\n`));
    // The server may answer (and close) before reading a body it refuses.
    if (c.body) await connection.write(c.body).catch(() => {});
    const buffer = new Uint8Array(1024);
    let text = "";
    while (!/^HTTP\/1\.[01] \d{3}/.test(text)) {
      const read = await connection.read(buffer).catch(() => null);
      if (read === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, read));
    }
    const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
    assert.ok(match, `no status line in ${JSON.stringify(text.slice(0, 80))}`);
    return Number(match[1]);
  } finally {
    connection.close();
  }
}

Deno.test(`fuzz: ${WIRE_COUNT} hostile requests over raw TCP, lying lengths included (seed ${SEED})`, async () => {
  const world = await makeWorld();
  const server = await serve(world.handler);
  try {
    let state = await partialState(world);
    const statuses = new Map<number, number>();
    for (const index of indices(WIRE_COUNT)) {
      const c = fuzzCase(SEED + 1, index);
      const label = `seed ${SEED + 1} case ${index} (wire): ${c.summary}`;
      const status = await withHangGuard(sendRaw(server.port, c), label);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      state = await checkInvariants(world, status, state, label);
    }
    console.log("wire statuses:", Object.fromEntries([...statuses].sort(([a], [b]) => a - b)));
    await normalUploadStillWorks(server.url);
  } finally {
    await server.close();
    await Deno.remove(world.parent, { recursive: true });
  }
});

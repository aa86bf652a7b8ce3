// Three handler processes on one shared storage, a client that sends each upload's chunks to
// random processes (the last ones in parallel), and processes killed mid-upload and mid-assembly.
import assert from "node:assert/strict";
import type { UploadStorage } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { S3Storage } from "../src/storage/s3.ts";
import { startS3 } from "./storage/_s3rver.ts";

const FIXTURE = new URL("./fixtures/cluster_server.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Node {
  name: string;
  port: number;
  child: Deno.ChildProcess;
  alive: boolean;
}

async function startNode(name: string, state: string, env: Record<string, string>): Promise<Node> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, FIXTURE],
    env: { ...env, STATE: state, NAME: name },
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  for (let waited = 0; waited < 30_000; waited += 50) {
    const text = await Deno.readTextFile(`${state}/port-${name}`).catch(() => "");
    if (/^\d+$/.test(text)) return { name, port: Number(text), child, alive: true };
    await sleep(50);
  }
  child.kill("SIGKILL");
  await child.status;
  throw new Error(`Process ${name} did not start`);
}

async function kill(node: Node): Promise<void> {
  if (!node.alive) return;
  node.alive = false;
  node.child.kill("SIGKILL");
  await node.child.status;
}

function randomBytes(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)), (b) => b.toString(16)).join(
    "",
  );
}

interface Status {
  complete: boolean;
  status: string;
  file?: { id: string; size: number };
}

/** A resumable.js-style client: chunk `n` of a file, posted as an octet body. */
class Upload {
  readonly count: number;
  constructor(readonly name: string, readonly bytes: Uint8Array<ArrayBuffer>, readonly chunkSize: number) {
    this.count = Math.max(Math.floor(bytes.byteLength / chunkSize), 1);
  }

  query(n: number): string {
    const start = (n - 1) * this.chunkSize;
    const end = n === this.count ? this.bytes.byteLength : start + this.chunkSize;
    return new URLSearchParams({
      resumableChunkNumber: String(n),
      resumableChunkSize: String(this.chunkSize),
      resumableCurrentChunkSize: String(end - start),
      resumableTotalSize: String(this.bytes.byteLength),
      resumableTotalChunks: String(this.count),
      resumableIdentifier: `${this.bytes.byteLength}-${this.name}`,
      resumableFilename: this.name,
    }).toString();
  }

  body(n: number): Uint8Array<ArrayBuffer> {
    const start = (n - 1) * this.chunkSize;
    return this.bytes.slice(start, n === this.count ? this.bytes.byteLength : start + this.chunkSize);
  }
}

function pick(nodes: Node[]): Node {
  const alive = nodes.filter((node) => node.alive);
  return alive[Math.floor(Math.random() * alive.length)]!;
}

/** Sends one chunk to `first` (or a random live process), retrying elsewhere like the client does. */
async function send(nodes: Node[], upload: Upload, n: number, first?: Node): Promise<Status> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const node = attempt === 0 && first ? first : pick(nodes);
    try {
      const response = await fetch(`http://127.0.0.1:${node.port}/upload?${upload.query(n)}`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: upload.body(n),
      });
      if (response.ok) return await response.json() as Status;
      await response.body?.cancel();
    } catch {
      // Connection refused or reset: the process is gone; try another, as resumable.js retries.
    }
    await sleep(100);
  }
  throw new Error(`Chunk ${n} of ${upload.name} could not be sent`);
}

/** Tests the last chunk until the upload reports complete (a taken-over assembly may take a lease). */
async function awaitComplete(nodes: Node[], upload: Upload, status: Status): Promise<Status> {
  for (let waited = 0; !status.complete; waited += 200) {
    if (waited > 30_000) throw new Error(`${upload.name} never completed: ${JSON.stringify(status)}`);
    await sleep(200);
    const response = await fetch(`http://127.0.0.1:${pick(nodes).port}/upload?${upload.query(upload.count)}`)
      .catch(() => undefined);
    if (response?.status === 200) status = await response.json();
    else await response?.body?.cancel();
  }
  return status;
}

/** Chunks 1..N-3 one by one to random processes, the last three at once to random processes. */
async function uploadAll(nodes: Node[], upload: Upload): Promise<Status> {
  const tail = Math.min(3, upload.count);
  for (let n = 1; n <= upload.count - tail; n++) await send(nodes, upload, n);
  const last = await Promise.all(
    Array.from({ length: tail }, (_, i) => send(nodes, upload, upload.count - tail + 1 + i)),
  );
  return awaitComplete(nodes, upload, last.find((s) => s.complete) ?? last[0]!);
}

async function verify(storage: UploadStorage, upload: Upload, status: Status): Promise<string> {
  assert.ok(status.file, `${upload.name} has a stored file`);
  const opened = await storage.openFile(status.file.id);
  assert.ok(opened, `${upload.name} can be opened`);
  const stored = new Uint8Array(await new Response(opened.body).arrayBuffer());
  assert.equal(stored.byteLength, upload.bytes.byteLength);
  assert.equal(await sha256(stored), await sha256(upload.bytes), `${upload.name} is byte-identical`);
  return status.file.id;
}

async function cluster(
  env: Record<string, string>,
  storage: UploadStorage,
  /** Counts stored files, after checking that no chunks are left behind. */
  countFiles: () => Promise<number>,
  sizes: number[],
): Promise<void> {
  const state = await Deno.makeTempDir({ prefix: "resumable-cluster-" });
  const nodes: Node[] = [];
  try {
    nodes.push(
      ...await Promise.all([
        startNode("a", state, env),
        startNode("b", state, env),
        startNode("c", state, { ...env, SLOW_COMMIT_MS: "4000" }),
      ]),
    );
    const ids: string[] = [];

    // Every file through all three processes at once.
    // Files of 10 MiB and more use 5 MiB chunks, which S3 assembles by server-side copy.
    const uploads = sizes.map((size, i) =>
      new Upload(`file-${i}.bin`, randomBytes(size), size >= 10 * 1024 * 1024 ? 5 * 1024 * 1024 : 256 * 1024)
    );
    const statuses = await Promise.all(uploads.map((upload) => uploadAll(nodes, upload)));
    for (const [i, upload] of uploads.entries()) ids.push(await verify(storage, upload, statuses[i]!));

    // Kill "c" while it assembles: its last chunk is in, it holds the claim, then it dies.
    const crash = new Upload("crash-assembly.bin", randomBytes(1024 * 1024 + 5), 256 * 1024);
    for (let n = 1; n < crash.count; n++) await send(nodes, crash, n, nodes[n % 2]);
    const pending = send(nodes, crash, crash.count, nodes[2]).catch(() => undefined);
    for (let waited = 0; !await Deno.stat(`${state}/committing-c`).catch(() => undefined); waited += 20) {
      if (waited > 30_000) throw new Error("Process c never started assembling");
      await sleep(20);
    }
    await kill(nodes[2]!);
    await pending;
    ids.push(
      await verify(storage, crash, await awaitComplete(nodes, crash, await send(nodes, crash, crash.count))),
    );

    // Kill "b" in the middle of an upload; "a" finishes it.
    const half = new Upload("killed-midway.bin", randomBytes(2 * 1024 * 1024 + 3), 256 * 1024);
    for (let n = 1; n <= 4; n++) await send(nodes, half, n);
    await kill(nodes[1]!);
    let status: Status | undefined;
    for (let n = 5; n <= half.count; n++) status = await send(nodes, half, n);
    ids.push(await verify(storage, half, await awaitComplete(nodes, half, status!)));

    const lines = (await Deno.readTextFile(`${state}/completed.log`)).trim().split("\n");
    assert.deepEqual(
      lines.map((line) => line.split(" ")[0]).sort(),
      [...ids].sort(),
      "onComplete ran exactly once per file, across all processes",
    );
    assert.ok(
      !lines.some((line) => line.endsWith(" c") && line.startsWith(ids.at(-2)!)),
      "not by the killed one",
    );
    assert.equal(await countFiles(), ids.length, "one stored file per upload");
  } finally {
    for (const node of nodes) await kill(node);
    await Deno.remove(state, { recursive: true });
  }
}

Deno.test("three processes on one file-system directory store every file exactly once", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-cluster-fs-" });
  try {
    await cluster(
      { STORAGE: "fs", DIRECTORY: directory },
      new FileSystemStorage({ directory }),
      async () => {
        for await (const upload of Deno.readDir(`${directory}/uploads`)) {
          const chunks = await Array.fromAsync(Deno.readDir(`${directory}/uploads/${upload.name}/chunks`))
            .catch(() => []);
          assert.deepEqual(chunks, [], `chunks of ${upload.name} were removed after assembly`);
        }
        let count = 0;
        for await (const entry of Deno.readDir(`${directory}/files`)) if (entry.name !== ".tmp") count++;
        return count;
      },
      [1, 300_000, 1024 * 1024 + 17, 2_500_000],
    );
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("three processes on one S3 bucket store every file exactly once", async () => {
  const s3 = await startS3();
  const prefix = "cluster/";
  try {
    const storage = new S3Storage({
      endpoint: s3.endpoint,
      bucket: s3.bucket,
      prefix,
      forcePathStyle: true,
      credentials: s3.credentials,
    });
    await cluster(
      { STORAGE: "s3", S3_ENDPOINT: s3.endpoint, S3_BUCKET: s3.bucket, S3_PREFIX: prefix },
      storage,
      async () => {
        const ids = new Set(
          s3.log.filter((line) => /^(PUT|POST) \/test\/cluster\/files\/[0-9a-f]{24}\/[^.?]/.test(line))
            .map((line) => line.split("/")[4]),
        );
        assert.equal(s3.openMultipartUploads.size, 0, "no multipart upload left open");
        const chunks = (await s3.keys(`${prefix}uploads/`)).filter((key) => key.includes("/chunks/"));
        assert.deepEqual(chunks, [], "every chunk object was removed after assembly");
        assert.equal(s3.copies.count, 2, "the 11 MiB file was assembled by copying its two chunks");
        return ids.size;
      },
      [1, 300_000, 6 * 1024 * 1024 + 17, 11 * 1024 * 1024],
    );
  } finally {
    await s3.close();
  }
});

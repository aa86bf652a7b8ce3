// Crash safety: a handler process is SIGKILLed during chunk writes and during assembly, at seeded
// random points (mid-stream or right after a storage write) or after a random delay, then restarted
// on the same directory; the upload is finished the way a client resumes (test, then send what is
// missing). Replay: CRASH_SEED=<seed> deno test -A tests/crash_test.ts
import assert from "node:assert/strict";
import { type ChildServer, spawnServer } from "./_child.ts";
import { cleanupExpired } from "../src/cleanup.ts";
import { uploadKey } from "../src/identifier.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { rng } from "./_fuzz_cases.ts";
import {
  chunkRequest,
  type ClientChunk,
  clientChunks,
  listTree,
  seededBytes,
  sha256,
  testRequest,
} from "./_helpers.ts";

const SEED = Number(Deno.env.get("CRASH_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const ITERATIONS = Number(Deno.env.get("CRASH_ITERATIONS") ?? 20);
const CHUNK = 64 * 1024;
const IDENTIFIER = "crash-upload";
const OPS = [
  "putChunk mid-write",
  "putChunk",
  "commit mid-write",
  "commitChunks",
  "claim",
  "removeChunks",
  "createUpload",
  "external",
];
console.log(`crash seed ${SEED} (replay: CRASH_SEED=${SEED} deno test -A tests/crash_test.ts)`);

function startChild(root: string, log: string, env: Record<string, string>): Promise<ChildServer> {
  return spawnServer(
    "crash_server.ts",
    { UPLOAD_DIR: root, COMPLETIONS_LOG: log, LEASE_MS: "200", ...env },
    true,
  );
}

/** Resumes like resumable.js: tests each chunk, sends the missing ones three at a time. */
async function drive(url: string, chunks: ClientChunk[], random: () => number): Promise<boolean> {
  let complete = false;
  const queue = [...chunks];
  const worker = async () => {
    for (let chunk = queue.shift(); chunk; chunk = queue.shift()) {
      const test = await fetch(testRequest(url, chunk));
      if (test.status === 200) {
        complete ||= (await test.json()).complete;
        continue;
      }
      await test.body?.cancel();
      const response = await fetch(chunkRequest(url, chunk, random() < 0.5 ? "octet" : "multipart"));
      const body = await response.json();
      assert.equal(response.status, 200, JSON.stringify(body));
      complete ||= body.complete;
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  return complete;
}

/** Every published file must be whole: a data file under files/<id>/ is the full upload or absent. */
async function assertNothingHalfVisible(root: string, expected: string, label: string) {
  const storage = new FileSystemStorage({ directory: root });
  const completed = await storage.getCompleted(uploadKey("", IDENTIFIER));
  if (completed) {
    const opened = await storage.openFile(completed.id);
    assert.ok(opened, `${label}: a completion record without its file`);
    assert.equal(
      await sha256(new Uint8Array(await new Response(opened.body).arrayBuffer())),
      expected,
      label,
    );
  }
  for (const path of await listTree(`${root}/files`).catch(() => [])) {
    const [dir, name, ...rest] = path.split("/");
    if (dir === ".tmp" || !name || rest.length > 0 || name.startsWith(".")) continue;
    const bytes = await Deno.readFile(`${root}/files/${path}`);
    assert.equal(await sha256(bytes), expected, `${label}: ${path} is visible half-written`);
  }
}

Deno.test(`crash: SIGKILL during chunk writes and assembly, ${ITERATIONS} times, then finish (seed ${SEED})`, async () => {
  const random = rng(SEED);
  const int = (n: number) => Math.floor(random() * n);
  const crashLog = await Deno.makeTempFile({ prefix: "resumable-crash-log-" });
  let kills = 0;
  for (let iteration = 0; iteration < ITERATIONS; iteration++) {
    const dir = await Deno.makeTempDir({ prefix: "resumable-crash-" });
    const root = `${dir}/root`;
    const log = `${dir}/completions.log`;
    await Deno.writeTextFile(log, "");
    const data = seededBytes(6 * CHUNK + 1000, SEED + iteration);
    const expected = await sha256(data);
    const chunks = clientChunks(data, { identifier: IDENTIFIER, chunkSize: CHUNK });
    try {
      for (let round = 0; round < 1 + int(2); round++) {
        // Round 0 cycles through every crash point so each is hit whatever the seed; later rounds
        // (a second crash on the leftovers of the first) are random.
        const op = round === 0 ? OPS[iteration % OPS.length]! : OPS[int(OPS.length)]!;
        const external = op === "external";
        const env: Record<string, string> = external ? {} : {
          CRASH_OP: op.replace(" mid-write", ""),
          CRASH_AT: String(op.startsWith("putChunk") ? 1 + int(chunks.length) : 1),
          CRASH_LOG: crashLog,
        };
        if (op === "putChunk mid-write") env.CRASH_BYTES = String(int(CHUNK + 1000));
        if (op === "commit mid-write") env.CRASH_BYTES = String(int(data.byteLength + 1));
        const label = `seed ${SEED} iteration ${iteration} round ${round} ${JSON.stringify(env)}`;
        const child = await startChild(root, log, env);
        const killer = external ? setTimeout(() => child.process.kill("SIGKILL"), int(60)) : undefined;
        // The client sees the crash as a network error, or finishes first if the point is never reached.
        await drive(child.url, chunks, random).catch(() => false);
        clearTimeout(killer);
        // The point may not have been reached (a previous crash's live lease kept this round from
        // assembling): then stop the child normally.
        try {
          child.process.kill("SIGTERM");
        } catch {
          // already dead
        }
        const status = await child.process.status;
        if (status.signal === "SIGKILL") kills++;
        await assertNothingHalfVisible(root, expected, label);
      }
      const child = await startChild(root, log, {});
      try {
        let complete = false;
        // A crashed assembler's lease (200 ms here) must run out before the upload can finish.
        for (let attempt = 0; !complete; attempt++) {
          assert.ok(attempt < 200, `seed ${SEED} iteration ${iteration}: never completed`);
          complete = await drive(child.url, chunks, random);
          if (!complete) await new Promise((resolve) => setTimeout(resolve, 25));
        }
      } finally {
        child.process.kill("SIGTERM");
        await child.process.status;
      }
      const label = `seed ${SEED} iteration ${iteration}`;
      await assertNothingHalfVisible(root, expected, label);
      const published = (await listTree(`${root}/files`)).filter((path) =>
        !path.startsWith(".tmp") && !path.includes("/")
      );
      assert.equal(published.length, 1, `${label}: assembled into ${published.length} files`);
      const lines = (await Deno.readTextFile(log)).trim().split("\n").filter((line) => line !== "");
      assert.ok(lines.length <= 1, `${label}: onComplete ran ${lines.length} times`);
      // Leftovers: partial assemblies are gone once the upload completed, chunks (kept if the crash
      // came between publishing and deleting them) by the next periodic sweep...
      const storage = new FileSystemStorage({ directory: root });
      const tree = await listTree(root);
      assert.deepEqual(
        tree.filter((path) => path.startsWith("files/.tmp/")),
        [],
        `${label}: temp assemblies left`,
      );
      const sweep = await cleanupExpired(storage, { expireAfter: 3600_000, completedExpireAfter: 3600_000 });
      assert.deepEqual(sweep, { expired: 0, completedExpired: 0, kept: 1 });
      const swept = await listTree(root);
      assert.deepEqual(swept.filter((path) => path.includes("/chunks")), [], `${label}: chunks left`);
      // ...and the expiry sweep removes the rest of the upload's records, keeping only the file.
      await cleanupExpired(storage, {
        expireAfter: 1,
        completedExpireAfter: 1,
        now: Date.now() + 1000,
      });
      const left = (await listTree(root)).filter((path) => !/^(uploads|files|files\/\.tmp)$/.test(path));
      // The note that the upload was removed stays for ten minutes (see `removedAt`).
      assert.deepEqual(
        left.map((path) => path.replace(/[0-9a-f]{32}/, "<key>").replace(/[0-9a-f]{24}/, "<id>")),
        [
          "files/<id>",
          "files/<id>/.file.json",
          "files/<id>/file.bin",
          "uploads/.removals",
          "uploads/.removals/<key>",
        ],
        `${label}: leftovers after cleanup`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  const points = (await Deno.readTextFile(crashLog)).trim().split("\n").filter((line) => line !== "");
  await Deno.remove(crashLog);
  const hits = Object.groupBy(points, (point) => point);
  console.log(
    `${kills} kills; self-inflicted at:`,
    Object.fromEntries(Object.entries(hits).map(([k, v]) => [k, v!.length])),
  );
  if (ITERATIONS >= OPS.length) {
    for (const op of OPS.filter((op) => op !== "external")) assert.ok(hits[op], `no crash at ${op}`);
  }
});

Deno.test("crash: a process killed while it removes a completed upload's chunks has run onComplete, once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "resumable-crash-" });
  const root = `${dir}/root`;
  const log = `${dir}/completions.log`;
  await Deno.writeTextFile(log, "");
  const data = seededBytes(3 * CHUNK + 10, SEED);
  const chunks = clientChunks(data, { identifier: IDENTIFIER, chunkSize: CHUNK });
  try {
    const dying = await startChild(root, log, { CRASH_OP: "removeChunks", CRASH_BEFORE: "1" });
    // Stored and assembled by the last request, which dies as the chunks' removal begins (a deploy's
    // restart, say): the client sees a network error.
    await drive(dying.url, chunks, rng(SEED)).catch(() => false);
    assert.equal((await dying.process.status).signal, "SIGKILL", "the process died in removeChunks");
    const completions = async () => (await Deno.readTextFile(log)).trim().split("\n").filter((line) => line);
    assert.equal((await completions()).length, 1, "onComplete ran before the process died");
    // The client resumes against a fresh process: the upload is complete, and no hook runs again.
    const child = await startChild(root, log, {});
    try {
      assert.equal(await drive(child.url, chunks, rng(SEED)), true);
    } finally {
      child.process.kill("SIGTERM");
      await child.process.status;
    }
    assert.equal((await completions()).length, 1);
    await assertNothingHalfVisible(root, await sha256(data), "after the crash");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Shared fixtures of the browser tests: the example server as a child process (Deno, Bun or Node), a
// headless Chromium driven by playwright-core, the demo page, and checks of what reached the disk.
import assert from "node:assert/strict";
import type { Page, Request as PwRequest } from "playwright-core";
import { type Browser, launchBrowser } from "../_browser.ts";
import { bundleForNode } from "../_child.ts";
import { seededBytes } from "../_helpers.ts";

export { type Browser, launchBrowser };

const ROOT = new URL("../../", import.meta.url);

/** The chunk size every browser test uses unless a case says otherwise: small, so tests are quick. */
export const CHUNK = 64 * 1024;

export type Runtime = "deno" | "bun" | "node";

/** The example server running as a child process. */
export interface Server {
  runtime: Runtime;
  port: number;
  /** `http://127.0.0.1:<port>/` */
  url: string;
  uploadDir: string;
  /** Stops the process: `SIGTERM` (graceful) or `SIGKILL` (a crash). Waits until it has exited. */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /** Everything the process printed. */
  output(): string;
}

export interface ServerOptions {
  runtime?: Runtime;
  /** Reuse a directory (a restart); by default a new temp directory, removed by `removeDir`. */
  uploadDir?: string;
  port?: number;
  env?: Record<string, string>;
}

/**
 * Node runs JavaScript, so `examples/node_server.ts` is bundled (as its own comment says) into a
 * temp directory, next to links to the demo page's files and the npm packages it serves.
 */
async function bundleNodeServer(): Promise<{ entry: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "e2e-node-" });
  try {
    await Deno.mkdir(`${dir}/examples`);
    await Deno.symlink(new URL("examples/public", ROOT).pathname, `${dir}/examples/public`);
    await Deno.symlink(new URL("node_modules", ROOT).pathname, `${dir}/node_modules`);
    const entry = `${dir}/examples/node_server.mjs`;
    await bundleForNode(new URL("examples/node_server.ts", ROOT).pathname, entry);
    return { entry, dir };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

/** The command that runs the example server under `runtime`, and a directory to remove after it. */
async function serverCommand(runtime: Runtime): Promise<{ command: string; args: string[]; dir?: string }> {
  if (runtime === "deno") return { command: Deno.execPath(), args: ["run", "-A", "examples/server.ts"] };
  if (runtime === "bun") return { command: "bun", args: ["run", "examples/bun_server.ts"] };
  const { entry, dir } = await bundleNodeServer();
  return { command: "node", args: [entry], dir };
}

/**
 * Starts `examples/server.ts` (or `bun_server.ts`, or `node_server.ts`) on 127.0.0.1 and waits for its
 * "Listening" line.
 */
export async function startServer(options: ServerOptions = {}): Promise<Server> {
  const runtime = options.runtime ?? "deno";
  const uploadDir = options.uploadDir ?? await Deno.makeTempDir({ prefix: "e2e-uploads-" });
  const { command, args, dir: bundleDir } = await serverCommand(runtime);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command, {
      args,
      cwd: ROOT,
      env: {
        PORT: String(options.port ?? 0),
        HOST: "127.0.0.1",
        UPLOAD_DIR: uploadDir,
        NO_COLOR: "1",
        ...options.env,
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (bundleDir) await Deno.remove(bundleDir, { recursive: true });
    throw error;
  }

  let text = "";
  let listening: (port: number) => void;
  const port = new Promise<number>((resolve) => listening = resolve);
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const piece of stream.pipeThrough(new TextDecoderStream())) {
      text += piece;
      const match = /Listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(text);
      if (match) listening(Number(match[1]));
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const exited = child.status;
  const early = exited.then((status) => {
    throw new Error(`${runtime} server exited with ${status.code} before listening:\n${text}`);
  });
  const timeout = new Promise<never>((_, reject) => {
    const id = setTimeout(
      () => reject(new Error(`${runtime} server did not listen within 30 s:\n${text}`)),
      30_000,
    );
    port.finally(() => clearTimeout(id));
    early.catch(() => clearTimeout(id));
  });
  let stopped = false;
  const stop = async (signal: "SIGTERM" | "SIGKILL" = "SIGTERM") => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill(signal);
    } catch { /* already gone */ }
    // A graceful stop that hangs on an open connection becomes a kill.
    const id = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5_000);
    await exited;
    clearTimeout(id);
    await drained;
    if (bundleDir) await Deno.remove(bundleDir, { recursive: true });
  };
  try {
    const bound = await Promise.race([port, early, timeout]);
    return {
      runtime,
      port: bound,
      url: `http://127.0.0.1:${bound}/`,
      uploadDir,
      stop,
      output: () => text,
    };
  } catch (error) {
    await stop("SIGKILL");
    early.catch(() => {});
    throw error;
  }
}

/** Everything under `dir`, as paths relative to it. */
export async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const found: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return found;
    throw error;
  }
  for (const entry of entries) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...await listFiles(path, `${prefix}${entry.name}/`));
    else found.push(`${prefix}${entry.name}`);
  }
  return found;
}

/** Chunks stored on disk and not yet assembled (fs storage layout: `uploads/<key>/chunks/<n>`). */
export async function storedChunks(uploadDir: string): Promise<number> {
  return (await listFiles(`${uploadDir}/uploads`)).filter((path) => /\/chunks\/[0-9]+$/.test(path)).length;
}

export async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

// ---- the demo page ---------------------------------------------------------------------------

/** One request to `/upload`, as the page sent it. */
export interface Sent {
  url: URL;
  contentType: string | undefined;
}

/** Requests a page sent to `/upload`, and the most that were in flight at once. */
export interface Traffic {
  posts: Sent[];
  tests: Sent[];
  /** Cancels the page sent (DELETE), with the status each was answered. */
  deletes: (Sent & { status?: number })[];
  statuses: number[];
  maxInFlight: number;
}

export interface DemoPage {
  page: Page;
  traffic: Traffic;
}

/** Opens the demo page with the given URL settings (`client`, `method`, `chunkSize`, ...). */
export async function openDemo(
  browser: Browser,
  server: Server,
  settings: Record<string, string | number | boolean>,
): Promise<DemoPage> {
  const page = await browser.context.newPage();
  const traffic: Traffic = { posts: [], tests: [], deletes: [], statuses: [], maxInFlight: 0 };
  let inFlight = 0;
  const isUpload = (request: PwRequest) => new URL(request.url()).pathname === "/upload";
  page.on("request", (request) => {
    if (!isUpload(request)) return;
    // Read now: once the page is closed the request object can no longer be asked.
    const sent = { url: new URL(request.url()), contentType: request.headers()["content-type"] };
    if (request.method() === "POST") {
      traffic.posts.push(sent);
      traffic.maxInFlight = Math.max(traffic.maxInFlight, ++inFlight);
    } else if (request.method() === "DELETE") traffic.deletes.push(sent);
    else traffic.tests.push(sent);
  });
  const settled = (request: PwRequest) => {
    if (isUpload(request) && request.method() === "POST") inFlight--;
  };
  page.on("requestfinished", settled);
  page.on("requestfailed", settled);
  page.on("response", (response) => {
    if (isUpload(response.request()) && response.request().method() === "POST") {
      traffic.statuses.push(response.status());
    }
    if (isUpload(response.request()) && response.request().method() === "DELETE") {
      const sent = traffic.deletes.find((entry) =>
        entry.url.href === response.url() && entry.status === undefined
      );
      if (sent) sent.status = response.status();
    }
  });
  const query = new URLSearchParams(Object.entries(settings).map(([key, value]) => [key, String(value)]));
  await page.goto(`${server.url}?${query}`);
  await page.waitForFunction(() => "demo" in globalThis);
  return { page, traffic };
}

/** A file made in the page from a seeded PRNG. */
export interface FileSpec {
  name: string;
  size: number;
  seed: number;
  type?: string;
}

/** The bytes `makeFiles` makes in the page for `seed`: the same xorshift32 as `seededBytes`. */
export function prngBytes(seed: number, size: number): Uint8Array<ArrayBuffer> {
  return seededBytes(size, seed);
}

/**
 * Makes the files in the page (kept in `globalThis.testFiles`) and returns their SHA-256 as the
 * page's own `crypto.subtle` computes it: the reference every stored file is checked against.
 */
export function makeFiles(page: Page, specs: FileSpec[]): Promise<string[]> {
  return page.evaluate(async (specs) => {
    const made = specs.map(({ name, size, seed, type }) => {
      const bytes = new Uint8Array(size);
      // xorshift32, as `seededBytes` in tests/_helpers.ts: this copy runs in the page.
      let x = seed >>> 0 || 1;
      for (let i = 0; i < size; i++) {
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        bytes[i] = x & 0xff;
      }
      return new File([bytes], name, { type: type ?? "" });
    });
    const store = globalThis as unknown as { testFiles?: Record<string, File> };
    store.testFiles ??= {};
    for (const file of made) store.testFiles[file.name] = file;
    return await Promise.all(made.map(async (file) => {
      const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
      return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
    }));
  }, specs);
}

/** Hands files made by `makeFiles` to the library, as the file picker does. */
export async function addFiles(page: Page, names: string[]): Promise<void> {
  await page.evaluate((names) => {
    const g = globalThis as unknown as {
      testFiles: Record<string, File>;
      demo: { addFiles(files: File[]): void };
    };
    g.demo.addFiles(names.map((name) => g.testFiles[name]!));
  }, names);
}

/** A row of the page's file list, as `demo.snapshot()` reports it. */
export interface Row {
  name: string;
  size: number;
  identifier: string;
  state: string;
  message: string;
  bytes: number;
}

/** A finished upload, as the page learnt it from the completed JSON. */
export interface Completed {
  name: string;
  size: number;
  identifier: string;
  fileId: string;
  url: string;
}

export function rows(page: Page): Promise<Row[]> {
  return page.evaluate(() => (globalThis as unknown as { demo: { snapshot(): Row[] } }).demo.snapshot());
}

/** Waits until the row of `name` is in `state`; fails at once on an unexpected error row. */
export async function waitForRow(page: Page, name: string, state: string, timeout = 30_000): Promise<Row> {
  const handle = await page.waitForFunction(
    ([name, state]) => {
      const demo = (globalThis as unknown as { demo: { snapshot(): Row[] } }).demo;
      const row = demo.snapshot().find((row) => row.name === name);
      if (row && (row.state === state || (row.state === "error" && state !== "error"))) return row;
      return false;
    },
    [name, state],
    { timeout, polling: 50 },
  );
  const row = await handle.jsonValue() as Row;
  assert.equal(row.state, state, `${name}: ${row.message}`);
  return row;
}

/** Waits until the page lists `names` as completed; fails at once if one of them errs. */
export async function waitForCompleted(page: Page, names: string[], timeout = 60_000): Promise<Completed[]> {
  const handle = await page.waitForFunction(
    (names) => {
      const demo = (globalThis as unknown as {
        demo: { snapshot(): Row[]; completed(): Completed[] };
      }).demo;
      const failed = demo.snapshot().find((row) => names.includes(row.name) && row.state === "error");
      if (failed) return { failed };
      const done = demo.completed().filter((file) => names.includes(file.name));
      return done.length === names.length ? { done } : false;
    },
    names,
    { timeout, polling: 50 },
  );
  const result = await handle.jsonValue() as { failed?: Row; done?: Completed[] };
  if (result.failed) assert.fail(`${result.failed.name} failed: ${result.failed.message}`);
  return names.map((name) => result.done!.find((file) => file.name === name)!);
}

/**
 * Checks a completed upload both ways: the stored file in UPLOAD_DIR and the bytes its `url`
 * downloads must have the source's SHA-256 (and the name the page gave it).
 */
export async function assertStored(server: Server, done: Completed, expectedSha: string): Promise<void> {
  assert.match(done.fileId, /^[0-9a-zA-Z_-]+$/, "completed JSON carries a file id");
  assert.equal(done.url, `/files/${done.fileId}`, "completed JSON carries the download url");
  const dir = `${server.uploadDir}/files/${done.fileId}`;
  const stored = (await listFiles(dir)).filter((name) => !name.startsWith("."));
  assert.equal(stored.length, 1, `one stored file in ${dir}: ${stored.join(", ")}`);
  const onDisk = await Deno.readFile(`${dir}/${stored[0]}`);
  assert.equal(onDisk.length, done.size, `${done.name}: stored size`);
  assert.equal(await sha256(onDisk), expectedSha, `${done.name}: SHA-256 of the stored file`);
  const response = await fetch(new URL(done.url, server.url));
  assert.equal(response.status, 200);
  const downloaded = new Uint8Array(await response.arrayBuffer());
  assert.equal(await sha256(downloaded), expectedSha, `${done.name}: SHA-256 of the download`);
}

/** Resolves once `condition` holds, polling; rejects after `timeout` ms. */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeout = 30_000) {
  const end = Date.now() + timeout;
  while (!await condition()) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `body` with a fresh server and browser, and stops and removes both whatever happens. */
export async function withFixture(
  options: ServerOptions,
  body: (fixture: { server: Server; browser: Browser }) => Promise<void>,
): Promise<void> {
  const server = await startServer(options);
  let browser: Browser | undefined;
  try {
    browser = await launchBrowser();
    await body({ server, browser });
  } finally {
    await browser?.close();
    await server.stop();
    if (!options.uploadDir) await Deno.remove(server.uploadDir, { recursive: true });
  }
}

// The example server's routes, shared by the Deno (`server.ts`) and Bun (`bun_server.ts`) entry
// points. Web APIs plus node:fs only, so the same code runs under both runtimes.
import { createResumableHandler } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { serveFileDownload, serveStatic } from "./_serve.ts";

/** Settings read from the environment by both entry points. */
export interface ExampleConfig {
  port: number;
  hostname: string;
  uploadDir: string;
  maxFileSize: number;
  /** Share (0..1) of chunk uploads answered 503 after their body is read, to try client retries. */
  failRate: number;
  /** Milliseconds every chunk upload waits before it is handled, to watch progress, pause or crash. */
  chunkDelayMs: number;
}

/** Reads `PORT`, `HOST`, `UPLOAD_DIR`, `MAX_FILE_SIZE`, `FAIL_RATE` and `CHUNK_DELAY_MS`. */
export function configFromEnv(get: (name: string) => string | undefined): ExampleConfig {
  const number = (name: string, fallback: number, min: number, max: number): number => {
    const text = get(name);
    if (text === undefined || text === "") return fallback;
    const value = Number(text);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new RangeError(`${name} must be a number from ${min} to ${max}, got "${text}"`);
    }
    return value;
  };
  return {
    port: number("PORT", 8000, 0, 65535),
    hostname: get("HOST") || "127.0.0.1",
    uploadDir: get("UPLOAD_DIR") || "./uploads",
    maxFileSize: number("MAX_FILE_SIZE", 1024 ** 3, 0, Number.MAX_SAFE_INTEGER),
    failRate: number("FAIL_RATE", 0, 0, 1),
    chunkDelayMs: number("CHUNK_DELAY_MS", 0, 0, 60_000),
  };
}

/** The example's request handler: demo page, `/upload`, and `/files/<id>` downloads. */
export function createApp(config: ExampleConfig): (request: Request) => Promise<Response> {
  const storage = new FileSystemStorage({ directory: config.uploadDir });
  const upload = createResumableHandler({
    storage,
    maxFileSize: config.maxFileSize,
    fileUrl: (file) => `/files/${file.id}`,
    onComplete: ({ file }) =>
      console.log(`completed ${file.id} ${JSON.stringify(file.name)} ${file.size} bytes`),
  });
  // Abandoned uploads (the clients never say "cancel") are swept every 15 minutes; the timer
  // never keeps the process alive.
  unrefTimer(setInterval(() => upload.cleanup().catch((error) => console.error(error)), 15 * 60_000));
  let uploads = 0;
  let failed = 0;

  return async function exampleApp(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/upload") {
      if (request.method !== "POST") return upload(request);
      if (config.chunkDelayMs > 0) await new Promise((done) => setTimeout(done, config.chunkDelayMs));
      uploads++;
      // Deterministic rather than random, so a test run fails the same requests every time: the
      // n-th upload fails whenever that keeps the failures at `failRate` of all uploads so far.
      if (failed < Math.floor(uploads * config.failRate)) {
        failed++;
        // Read the body first, like a proxy that gives up after receiving the request.
        await request.arrayBuffer().catch(() => {});
        return Response.json(
          { error: { code: "injected_failure", message: "FAIL_RATE: this chunk upload failed on purpose" } },
          { status: 503, headers: { "cache-control": "no-store" } },
        );
      }
      return upload(request);
    }
    if (pathname.startsWith("/files/")) {
      let id: string;
      try {
        id = decodeURIComponent(pathname.slice("/files/".length));
      } catch {
        return new Response("Not found", { status: 404 }); // a malformed %-escape names no file
      }
      return serveFileDownload(storage, id);
    }
    return serveStatic(pathname);
  };
}

/** Lets a timer run without keeping the process alive, in Deno (numeric ids) and Bun/Node (objects). */
function unrefTimer(timer: unknown): void {
  if (typeof timer === "object" && timer !== null && "unref" in timer) (timer as { unref(): void }).unref();
  else (globalThis as { Deno?: { unrefTimer(id: number): void } }).Deno?.unrefTimer(timer as number);
}

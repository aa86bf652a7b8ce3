/**
 * An upload server with a demo page: `deno run -A examples/server.ts` (under Bun:
 * `bun run examples/bun_server.ts`).
 *
 * - `GET /`                 the demo page (resumable.js or flow.js, served from the npm packages)
 * - `GET|POST /upload`      the resumable handler
 * - `GET /files/<id>`       downloads a completed file
 *
 * Environment: `PORT` (default 8000; 0 picks a free port), `UPLOAD_DIR` (default `./uploads`),
 * `HOST` (default 127.0.0.1; not `HOSTNAME`, which shells and containers preset to the machine name), `MAX_FILE_SIZE` (bytes, default 1 GiB). For trying failures by
 * hand: `FAIL_RATE` (0..1, share of chunk uploads answered 503) and `CHUNK_DELAY_MS` (delay before
 * each chunk upload is handled).
 */
import { configFromEnv, createApp } from "./_app.ts";

const config = configFromEnv((name) => Deno.env.get(name));
const server = Deno.serve({
  port: config.port,
  hostname: config.hostname,
  onListen: ({ hostname, port }) => console.log(`Listening on http://${hostname}:${port}/`),
}, createApp(config));

Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;

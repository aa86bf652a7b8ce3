/**
 * An upload server with a demo page: `deno run -A examples/server.ts`.
 *
 * - `GET /`                 the demo page (resumable.js or flow.js, served from the npm packages)
 * - `GET|POST /upload`      the resumable handler
 * - `GET /files/<id>`       downloads a completed file
 *
 * Environment: `PORT` (default 8000; 0 picks a free port), `UPLOAD_DIR` (default `./uploads`),
 * `HOSTNAME` (default 127.0.0.1), `MAX_FILE_SIZE` (bytes, default 1 GiB).
 */
import { createResumableHandler } from "../mod.ts";
import { FileSystemStorage } from "../src/storage/fs.ts";
import { serveFileDownload, serveStatic } from "./_serve.ts";

const port = Number(Deno.env.get("PORT") ?? 8000);
const hostname = Deno.env.get("HOSTNAME") ?? "127.0.0.1";
const storage = new FileSystemStorage({ directory: Deno.env.get("UPLOAD_DIR") ?? "./uploads" });
const maxFileSize = Number(Deno.env.get("MAX_FILE_SIZE") ?? 1024 ** 3);

const upload = createResumableHandler({
  storage,
  maxFileSize,
  fileUrl: (file) => `/files/${file.id}`,
  onComplete: ({ file }) =>
    console.log(`completed ${file.id} ${JSON.stringify(file.name)} ${file.size} bytes`),
});

const server = Deno.serve({
  port,
  hostname,
  onListen: ({ hostname, port }) => console.log(`Listening on http://${hostname}:${port}/`),
}, (request) => {
  const { pathname } = new URL(request.url);
  if (pathname === "/upload") return upload(request);
  if (pathname.startsWith("/files/")) return serveFileDownload(storage, pathname.slice("/files/".length));
  return serveStatic(pathname);
});

Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;

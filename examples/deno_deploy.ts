/**
 * Resumable uploads on Deno Deploy: no file system, so chunks and files live in Deno KV, which every
 * isolate of the app shares. Deploy this file unchanged, or run it locally:
 *
 * ```sh
 * deno serve --unstable-kv --allow-net --allow-env examples/deno_deploy.ts
 * ```
 *
 * - `GET|POST /upload`   the resumable handler (point resumable.js or flow.js `target` here)
 * - `GET /files/<id>`    downloads a completed file
 *
 * Environment: `KV_PATH` (optional; Deploy's own database when unset, `:memory:` for a throwaway
 * one), `MAX_FILE_SIZE` (bytes, default 256 MiB: KV is a database, not a bucket; use S3Storage
 * for large files).
 *
 * @module
 */
import { createResumableHandler } from "../mod.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";

const kv = await Deno.openKv(Deno.env.get("KV_PATH"));
const storage = new DenoKvStorage({ kv });

const upload = createResumableHandler({
  storage,
  maxFileSize: Number(Deno.env.get("MAX_FILE_SIZE") ?? 256 * 1024 ** 2),
  fileUrl: (file) => `/files/${file.id}`,
  onComplete: ({ file }) =>
    console.log(`completed ${file.id} ${JSON.stringify(file.name)} ${file.size} bytes`),
});

async function download(id: string): Promise<Response> {
  const opened = /^[0-9a-f]{24}$/.test(id) ? await storage.openFile(id) : undefined;
  if (!opened) return new Response("Not found", { status: 404 });
  return new Response(opened.body, {
    headers: {
      "content-type": "application/octet-stream",
      "content-length": String(opened.file.size),
      "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(opened.file.name)}`,
    },
  });
}

export default {
  fetch(request: Request): Promise<Response> | Response {
    const { pathname } = new URL(request.url);
    if (pathname === "/upload") return upload(request);
    if (pathname.startsWith("/files/")) return download(pathname.slice("/files/".length));
    return new Response("Not found", { status: 404 });
  },
} satisfies Deno.ServeDefaultExport;

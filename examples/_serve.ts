// Static assets and downloads for the example servers. Uses Web APIs plus node:fs so it also runs
// under Bun.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { UploadStorage } from "../mod.ts";

const ASSETS: Record<string, { path: string; type: string }> = {
  "/": { path: new URL("./public/index.html", import.meta.url).href, type: "text/html; charset=utf-8" },
  "/app.js": {
    path: new URL("./public/app.js", import.meta.url).href,
    type: "text/javascript; charset=utf-8",
  },
  "/style.css": {
    path: new URL("./public/style.css", import.meta.url).href,
    type: "text/css; charset=utf-8",
  },
  // The client libraries come from the npm packages, never from a CDN.
  "/vendor/resumable.js": {
    path: import.meta.resolve("resumablejs/resumable.js"),
    type: "text/javascript; charset=utf-8",
  },
  "/vendor/flow.js": {
    path: import.meta.resolve("@flowjs/flow.js/dist/flow.js"),
    type: "text/javascript; charset=utf-8",
  },
};

/** Serves the demo page and the client libraries. */
export async function serveStatic(pathname: string): Promise<Response> {
  const asset = ASSETS[pathname];
  if (!asset) return new Response("Not found", { status: 404 });
  try {
    const body = await readFile(fileURLToPath(asset.path));
    return new Response(new Uint8Array(body), {
      headers: { "content-type": asset.type, "cache-control": "no-cache" },
    });
  } catch {
    return new Response("Not found", { status: 404 });
  }
}

/**
 * `attachment` with the name twice: RFC 5987's `filename*` (UTF-8, every character outside its
 * attr-char set escaped: `encodeURIComponent` leaves `'()*`, and a browser that meets a `'` there
 * drops the whole parameter and saves the file under its URL's last segment), and an ASCII
 * `filename` for clients that read only that.
 */
export function contentDisposition(name: string): string {
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

/** Streams a completed file with its original name as the download name. */
export async function serveFileDownload(storage: UploadStorage, id: string): Promise<Response> {
  const opened = await storage.openFile(id);
  if (!opened) return new Response("Not found", { status: 404 });
  const { file, body } = opened;
  return new Response(body, {
    headers: {
      "content-type": "application/octet-stream",
      "content-length": String(file.size),
      // RFC 6266 with an RFC 5987 UTF-8 name; the file is always a download, never rendered inline.
      "content-disposition": contentDisposition(file.name),
      "x-content-type-options": "nosniff",
    },
  });
}

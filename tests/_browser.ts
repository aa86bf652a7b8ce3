// Headless Chromium (Debian's, never a downloaded one) driven by playwright-core, and the client
// libraries as served from node_modules, for the browser tests.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium } from "playwright-core";

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

/** A headless Chromium with a throw-away profile. */
export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/**
 * Starts headless Chromium. Throws (never skips) when it is missing: a browser suite that silently
 * does nothing would report green without having tested anything.
 */
export async function launchBrowser(): Promise<Browser> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `Chromium not found at ${CHROMIUM}. The browser tests need it: apt-get install -y chromium ` +
        `(or set CHROMIUM_PATH). They fail rather than skip.`,
    );
  }
  const profile = await Deno.makeTempDir({ prefix: "e2e-chromium-" });
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    return {
      context,
      async close() {
        await context.close();
        await Deno.remove(profile, { recursive: true });
      },
    };
  } catch (error) {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
    throw error;
  }
}

/**
 * Page-side script defining `runClient(lib, options, file)`: uploads `file` with resumable.js or
 * flow.js and resolves `{ ok, message }` from `fileSuccess` or `fileError`.
 */
export const RUN_CLIENT_SCRIPT = `
window.runClient = (lib, options, file) => new Promise((resolve) => {
  const client = lib === "resumable" ? new Resumable(options) : new Flow(options);
  client.on("fileSuccess", (_file, message) => resolve({ ok: true, message }));
  client.on("fileError", (_file, message) => resolve({ ok: false, message }));
  if (lib === "resumable") {
    client.on("filesAdded", () => client.upload());
    client.addFile(file);
  } else {
    client.addFile(file);
    client.upload();
  }
});`;

/** The two client libraries by the path a test page loads them from. */
export async function libraryScripts(): Promise<Record<string, string>> {
  const read = (specifier: string) => readFile(fileURLToPath(import.meta.resolve(specifier)), "utf8");
  return {
    "/resumable.js": await read("resumablejs/resumable.js"),
    "/flow.js": await read("@flowjs/flow.js/dist/flow.js"),
  };
}

/** Answers a library path with its script, or `undefined`. */
export function scriptResponse(scripts: Record<string, string>, pathname: string): Response | undefined {
  const script = scripts[pathname];
  return script === undefined
    ? undefined
    : new Response(script, { headers: { "content-type": "text/javascript" } });
}

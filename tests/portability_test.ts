// The core must run on any fetch-style host: only the file-system storage may use node: modules,
// and only the Deno KV storage and the file-system storage's platform module may name Deno.
// Even there, node: modules are loaded only off Deno (_fs_platform.ts) or named as types: under
// Deno, importing one (node:path included) loads the Node compatibility layer, about 5.5 MiB of
// resident memory for every server.
import assert from "node:assert/strict";

const ALLOWED_NODE = new Set([
  "src/storage/_fs_platform.ts",
  "src/storage/_fs_file.ts",
]);
// The file-system storage picks Deno's own file API when it runs on Deno (see _fs_platform.ts).
const ALLOWED_DENO = new Set(["src/storage/deno_kv.ts", "src/storage/_fs_platform.ts"]);

async function sourceFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(new URL(`../${dir}`, import.meta.url))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...await sourceFiles(path));
    else if (path.endsWith(".ts")) files.push(path);
  }
  return files;
}

Deno.test("core modules use Web APIs only: node: and Deno appear only in their storages", async () => {
  const files = ["mod.ts", ...await sourceFiles("src")];
  assert.ok(files.includes("src/handler.ts"));
  for (const file of files) {
    const source = await Deno.readTextFile(new URL(`../${file}`, import.meta.url));
    const code = source.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
    if (!ALLOWED_NODE.has(file)) assert.doesNotMatch(code, /from\s+["']node:/, `${file} imports node:`);
    // Values from node: modules only through the platform module's lazy imports; types are erased.
    if (file === "src/storage/_fs_file.ts") {
      assert.doesNotMatch(code, /^import\s+(?!type\b)[^;]*from\s+["']node:/m);
    }
    if (!ALLOWED_DENO.has(file)) assert.doesNotMatch(code, /\bDeno\./, `${file} uses Deno.*`);
  }
});

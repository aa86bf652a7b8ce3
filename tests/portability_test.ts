// The core must run on any fetch-style host: only the file-system storage may use node: modules,
// and only the Deno KV storage and the file-system storage's platform module may name Deno.
import assert from "node:assert/strict";

const ALLOWED_NODE = new Set([
  "src/storage/fs.ts",
  "src/storage/_fs_claims.ts",
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
    if (!ALLOWED_DENO.has(file)) assert.doesNotMatch(code, /\bDeno\./, `${file} uses Deno.*`);
  }
});

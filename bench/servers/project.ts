// This project behind Deno.serve or Bun.serve, on the file-system storage. Environment: DIR (storage
// root), PARSER (stream | native), ASSEMBLY (rename | pipe: hide commitChunks to measure the
// general piping path).
import { createResumableHandler } from "../../mod.ts";
import { FileSystemStorage } from "../../src/storage/fs.ts";
import { env, serve } from "./_runtime.ts";

const storage = new FileSystemStorage({ directory: env("DIR") ?? "./uploads-bench" });
if (env("ASSEMBLY") === "pipe") Object.defineProperty(storage, "commitChunks", { value: undefined });

// Deno's own API under Deno: loading node:fs there would add ~8 MiB to the RSS this benchmark measures.
async function appendLine(path: string, line: string): Promise<void> {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno) await deno.writeTextFile(path, line + "\n", { append: true });
  else await (await import("node:fs/promises")).appendFile(path, line + "\n");
}

// Assembly time as the server sees it: from the end of an upload's last chunk write to its file
// being published. Appended to DIR/assembly.jsonl for bench/run.ts.
const lastPut = new Map<string, number>();
const putChunk = storage.putChunk.bind(storage);
storage.putChunk = async (key, index, data, options) => {
  await putChunk(key, index, data, options);
  lastPut.set(key, performance.now());
};
for (const name of ["commit", "commitChunks"] as const) {
  const original = storage[name]?.bind(storage) as
    | ((...args: unknown[]) => Promise<{ id: string } | undefined>)
    | undefined;
  if (!original) continue;
  Object.defineProperty(storage, name, {
    value: async (...args: unknown[]) => {
      const stored = await original(...args);
      const key = (args[0] as { key: string }).key;
      if (stored) {
        const ms = performance.now() - (lastPut.get(key) ?? NaN);
        await appendLine(`${storage.directory}/assembly.jsonl`, JSON.stringify({ id: stored.id, ms }));
      }
      return stored;
    },
  });
}

const handler = createResumableHandler({
  storage,
  maxFileSize: 64 * 1024 ** 3,
  maxChunks: 10_000_000,
  multipartParser: env("PARSER") === "native" ? "native" : "stream",
  onError: (error) => console.error(error),
});

await serve(handler);

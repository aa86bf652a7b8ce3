// A handler process from tests/fixtures/, started on a free loopback port for cross-process tests.

/** A running fixture server. */
export interface ChildServer {
  /** Its upload endpoint. */
  url: string;
  process: Deno.ChildProcess;
}

/**
 * Runs `tests/fixtures/<fixture>` with `env` and waits for its "listening <port>" line.
 * `stderr` is shown unless `quiet` (crash tests kill children on purpose, mid-sentence).
 */
export async function spawnServer(
  fixture: string,
  env: Record<string, string>,
  quiet = false,
): Promise<ChildServer> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`./fixtures/${fixture}`, import.meta.url).pathname],
    env,
    stdout: "piped",
    stderr: quiet ? "null" : "inherit",
  }).spawn();
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let output = "";
  while (!/listening (\d+)/.test(output)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${fixture} exited before listening: ${output}`);
    output += value;
  }
  reader.releaseLock();
  process.stdout.cancel().catch(() => {});
  return { url: `http://127.0.0.1:${/listening (\d+)/.exec(output)![1]}/upload`, process };
}

/** What a finished fixture run printed. */
export interface BunRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `tests/fixtures/<fixture>` under Bun to its end. A missing Bun fails the test with how to install
 * it: these cases never skip.
 */
export async function runUnderBun(fixture: string, env: Record<string, string> = {}): Promise<BunRun> {
  const { code, stdout, stderr } = await new Deno.Command("bun", {
    args: ["run", new URL(`./fixtures/${fixture}`, import.meta.url).pathname],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output().catch(() => {
    throw new Error("bun is not installed: npm install -g bun (this case never skips)");
  });
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

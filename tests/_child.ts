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
export interface FixtureRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** A runtime other than Deno that the code without Deno APIs must run under. */
export type OtherRuntime = "bun" | "node";

/**
 * Runs `tests/fixtures/<fixture>` under Bun or Node to its end. Node runs JavaScript, so the fixture is
 * bundled first (`deno bundle` keeps its `node:` imports), into a temp directory removed afterwards. A
 * missing runtime fails the test with how to install it: these cases never skip.
 */
export async function runUnder(
  runtime: OtherRuntime,
  fixture: string,
  env: Record<string, string> = {},
): Promise<FixtureRun> {
  const source = new URL(`./fixtures/${fixture}`, import.meta.url).pathname;
  if (runtime === "bun") return await run("bun", ["run", source], env, "npm install -g bun");
  const dir = await Deno.makeTempDir({ prefix: "resumable-node-fixture-" });
  try {
    const entry = `${dir}/${fixture.replace(/\.ts$/, ".mjs")}`;
    await bundleForNode(source, entry);
    return await run("node", [entry], env, "it comes with npm");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Bundles the TypeScript module `source` into one JavaScript file, `output`, that Node can run. */
export async function bundleForNode(source: string, output: string): Promise<void> {
  const { code, stderr } = await run(
    Deno.execPath(),
    ["bundle", "--platform", "deno", "-o", output, source],
    {},
    "",
  );
  if (code !== 0) throw new Error(`deno bundle ${source} failed:\n${stderr}`);
}

async function run(command: string, args: string[], env: Record<string, string>, install: string) {
  const { code, stdout, stderr } = await new Deno.Command(command, {
    args,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output().catch(() => {
    throw new Error(`${command} is not installed: ${install} (this case never skips)`);
  });
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

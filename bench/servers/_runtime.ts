// What the benchmark's servers share: their settings, and a listener under Deno or Bun on 127.0.0.1
// that prints "listening <port>" for bench/run.ts.
declare const Bun: {
  serve(options: {
    hostname: string;
    port: number;
    maxRequestBodySize: number;
    fetch: (request: Request) => Promise<Response>;
  }): { port: number };
};

/**
 * A setting from the environment. Deno.env under Deno: Deno has a `process` global too, but touching
 * it loads the Node compatibility layer, about 7 MiB of the RSS this benchmark measures.
 */
export const env = (name: string): string | undefined =>
  typeof Deno !== "undefined"
    ? Deno.env.get(name)
    : (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];

/** Serves `handler` on a free port of 127.0.0.1 with Bun.serve under Bun, Deno.serve otherwise. */
export function serve(handler: (request: Request) => Promise<Response>): void {
  if (typeof Bun !== "undefined") {
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      maxRequestBodySize: 1024 ** 3,
      fetch: handler,
    });
    console.log(`listening ${server.port}`);
  } else {
    Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(`listening ${port}`) },
      handler,
    );
  }
}

// What the benchmark's servers share: their settings, and a listener under Deno, Bun or Node on
// 127.0.0.1 that prints "listening <port>" for bench/run.ts.
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

/**
 * Serves `handler` on a free port of 127.0.0.1: Bun.serve under Bun, Deno.serve under Deno, and under
 * Node the example's `node:http` adapter, loaded only there (node:http would add to the others' RSS).
 */
export async function serve(handler: (request: Request) => Promise<Response>): Promise<void> {
  if (typeof Deno === "undefined" && typeof Bun === "undefined") {
    const { serveWithNode } = await import("../../examples/_node_http.ts");
    serveWithNode(handler, {
      hostname: "127.0.0.1",
      port: 0,
      onListen: (port) => console.log(`listening ${port}`),
    });
  } else if (typeof Bun !== "undefined") {
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

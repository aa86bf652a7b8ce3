// Reference servers of the benchmark. MODE=drain reads every body and discards it: the most any
// server can do on this machine (the limit). MODE=formdata only calls the platform's formData().
// Runs under Deno, and under Bun (drain only: to show that runtime's own floor).
declare const Bun: {
  serve(options: {
    hostname: string;
    port: number;
    maxRequestBodySize: number;
    fetch: (request: Request) => Promise<Response>;
  }): { port: number };
};

const env = (name: string) =>
  typeof Deno !== "undefined"
    ? Deno.env.get(name)
    : (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
const mode = env("MODE") ?? "drain";

async function drain(request: Request): Promise<Response> {
  if (request.body) { for await (const _ of request.body) { /* discard */ } }
  return new Response("{}", { headers: { "content-type": "application/json" } });
}

async function formData(request: Request): Promise<Response> {
  const form = await request.formData();
  if (!form.get("file")) return new Response("no file", { status: 400 });
  return new Response("{}", { headers: { "content-type": "application/json" } });
}

const handler = mode === "formdata" ? formData : drain;
if (typeof Bun !== "undefined") {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, maxRequestBodySize: 1024 ** 3, fetch: handler });
  console.log(`listening ${server.port}`);
} else {
  Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(`listening ${port}`) },
    handler,
  );
}

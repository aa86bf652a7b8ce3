// Reference servers of the benchmark. MODE=drain reads every body and discards it: the most any
// server can do on this machine (the limit). MODE=formdata only calls the platform's formData().
// Runs under Deno, and under Bun (drain only: to show that runtime's own floor).
import { env, serve } from "./_runtime.ts";

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

await serve(mode === "formdata" ? formData : drain);

/**
 * The example server under Node: same routes and environment variables as `server.ts` (see there).
 * Node's `http` module speaks its own request and response objects: `_node_http.ts` is the adapter a
 * Node application needs around a fetch-style handler, about a hundred lines with no dependency.
 *
 * Node runs JavaScript: `deno bundle --platform deno -o examples/node_server.mjs examples/node_server.ts`
 * (the bundle keeps the `node:` imports), then `node examples/node_server.mjs`. An application installs
 * the package's JavaScript build from JSR instead (`npx jsr add @resumable/server`).
 */
import process from "node:process";
import { configFromEnv, createApp } from "./_app.ts";
import { serveWithNode } from "./_node_http.ts";

const config = configFromEnv((name) => process.env[name]);

const server = serveWithNode(createApp(config), {
  hostname: config.hostname,
  port: config.port,
  onListen: (port) => console.log(`Listening on http://${config.hostname}:${port}/`),
});

process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});

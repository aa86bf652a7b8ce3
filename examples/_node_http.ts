// A fetch-style handler behind Node's `http` module: the adapter `node_server.ts` runs the example
// with, and the benchmark its Node servers. Node has no server that speaks `Request` and `Response`,
// and this is all one takes: about a hundred lines, no dependency, to copy into an application.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";

/**
 * Node's request body as a Web stream, read only as fast as the handler asks for it. Not
 * `Readable.toWeb`: under Node 20 a body cancelled while data still arrived made it throw an uncaught
 * "Controller is already closed" that took the whole server down (nodejs/node#54205; #64529 reports
 * the same in Node 22), and the handler cancels the bodies it refuses.
 */
function bodyOf(incoming: IncomingMessage): ReadableStream<Uint8Array> {
  let settled = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      incoming.pause();
      incoming.on("data", (piece: Uint8Array) => {
        if (settled) return;
        // A plain view, not the Buffer: Buffer's `slice` shares memory where Uint8Array's copies.
        controller.enqueue(new Uint8Array(piece.buffer, piece.byteOffset, piece.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) incoming.pause();
      });
      incoming.on("end", () => {
        if (settled) return;
        settled = true;
        controller.close();
      });
      // A client gone mid-body must error the body, never end it short.
      const cutOff = (error?: Error) => {
        if (settled) return;
        settled = true;
        controller.error(error ?? new Error("The client closed the connection before the body ended"));
      };
      incoming.on("error", cutOff);
      incoming.on("close", () => cutOff());
    },
    pull() {
      incoming.resume();
    },
    cancel() {
      // The rest is left unread; `send` closes the connection after the response instead of
      // reading a body nobody wants.
      settled = true;
    },
  });
}

/** Node's request as a Web `Request`, its body streamed as it arrives, never buffered here. */
function toRequest(incoming: IncomingMessage, hostname: string): Request {
  const headers = new Headers();
  const raw = incoming.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  // As Deno.serve and Bun.serve do: the origin from `Host`. A `Host` or target that makes no URL
  // throws a TypeError here, answered 400 below.
  const url = new URL(incoming.url ?? "/", `http://${incoming.headers.host ?? hostname}`);
  const method = incoming.method ?? "GET";
  const body = method === "GET" || method === "HEAD" ? null : bodyOf(incoming);
  // `duplex: "half"` is how a fetch implementation is told a request body is a stream.
  return new Request(url, { method, headers, body, duplex: "half" } as RequestInit);
}

/** Writes a Web `Response` to Node's response, streaming its body with back-pressure. */
async function send(response: Response, incoming: IncomingMessage, outgoing: ServerResponse): Promise<void> {
  outgoing.statusCode = response.status;
  // A body refused before its end: Node would read the rest to keep the connection; close it instead.
  if (!incoming.complete) outgoing.setHeader("connection", "close");
  for (const [name, value] of response.headers) {
    if (name !== "set-cookie") outgoing.setHeader(name, value);
  }
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) outgoing.setHeader("set-cookie", cookies);
  if (!response.body) {
    outgoing.end();
    return;
  }
  // A client that goes away mid-download ends the pipeline, which cancels the body stream.
  await pipeline(Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>), outgoing);
}

/**
 * `handler` as a listener of Node's `http` server, `(incoming, outgoing) => …`: for
 * `http.createServer(listener)`, or a server made elsewhere. `hostname` stands in for a missing `Host`.
 */
export function nodeListener(
  handler: (request: Request) => Promise<Response>,
  hostname = "localhost",
): (incoming: IncomingMessage, outgoing: ServerResponse) => Promise<void> {
  return async (incoming, outgoing) => {
    let request: Request;
    try {
      request = toRequest(incoming, hostname);
    } catch {
      outgoing.writeHead(400, { connection: "close" }).end();
      return;
    }
    try {
      await send(await handler(request), incoming, outgoing);
    } catch (error) {
      // The handler answers its own errors; this is the adapter's, or a client gone mid-response.
      if (outgoing.headersSent) {
        outgoing.destroy();
      } else {
        console.error(error);
        outgoing.writeHead(500).end();
      }
    }
  };
}

/**
 * Serves `handler` with Node's `http` module on `hostname` and `port` (0 picks a free one), and calls
 * `onListen` with the port once it listens.
 */
export function serveWithNode(
  handler: (request: Request) => Promise<Response>,
  { hostname, port, onListen }: { hostname: string; port: number; onListen?: (port: number) => void },
): Server {
  const server = createServer(nodeListener(handler, hostname));
  server.listen(port, hostname, () => {
    const address = server.address();
    onListen?.(typeof address === "object" && address ? address.port : port);
  });
  return server;
}

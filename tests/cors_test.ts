import assert from "node:assert/strict";
import { createResumableHandler, type ResumableHandlerOptions } from "../mod.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { chunkRequest, clientChunks, seededBytes, testRequest } from "./_helpers.ts";

const BASE = "http://api.example/upload";
const APP = "https://app.example";

function handlerWith(cors: ResumableHandlerOptions["cors"]) {
  return createResumableHandler({ storage: new MemoryStorage(), cors });
}

function preflight(method: string, origin = APP, headers = "content-type") {
  return new Request(BASE, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": method,
      ...(headers ? { "access-control-request-headers": headers } : {}),
    },
  });
}

const [chunk] = clientChunks(seededBytes(100, 1), { identifier: "100-cors", chunkSize: 1000 });

function fromOrigin(request: Request, origin = APP): Request {
  request.headers.set("origin", origin);
  return request;
}

Deno.test("CORS is off by default: no Access-Control headers on preflights or responses", async () => {
  const handler = createResumableHandler({ storage: new MemoryStorage() });
  const pre = await handler(preflight("POST"));
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), null);
  const response = await handler(fromOrigin(testRequest(BASE, chunk!)));
  assert.equal(response.headers.get("access-control-allow-origin"), null);
  await response.body?.cancel();
});

Deno.test("CORS with an origin list: preflights for test, upload and cancel allow the methods and headers the clients send", async () => {
  const handler = handlerWith({
    origin: [APP, "https://other.example/"],
    allowHeaders: ["X-CSRF-Token"],
    maxAge: 300,
  });
  for (const method of ["GET", "POST", "DELETE"]) {
    const response = await handler(preflight(method, APP, "content-type, x-csrf-token"));
    assert.equal(response.status, 204, method);
    assert.equal(response.headers.get("access-control-allow-origin"), APP);
    assert.equal(response.headers.get("access-control-allow-methods"), "GET, POST, DELETE, OPTIONS");
    assert.equal(response.headers.get("access-control-allow-headers"), "content-type, x-csrf-token");
    assert.equal(response.headers.get("access-control-max-age"), "300");
    assert.match(response.headers.get("vary") ?? "", /Origin/);
    assert.equal(response.headers.get("access-control-allow-credentials"), null);
  }
  const trailing = await handler(preflight("POST", "https://other.example"));
  assert.equal(trailing.status, 204, "a trailing slash in the option is forgiven");

  const upload = await handler(fromOrigin(chunkRequest(BASE, chunk!, "octet")));
  assert.equal(upload.status, 200);
  assert.equal(upload.headers.get("access-control-allow-origin"), APP);
  assert.match(upload.headers.get("vary") ?? "", /Origin/);
  await upload.body?.cancel();
  // Errors carry the headers too, or the client would see status 0 instead of the real refusal.
  const refused = await handler(fromOrigin(new Request(`${BASE}?resumableIdentifier=x`, { method: "POST" })));
  assert.equal(refused.status, 400);
  assert.equal(refused.headers.get("access-control-allow-origin"), APP);
  await refused.body?.cancel();
});

Deno.test("CORS refuses other origins, unlisted methods and unlisted headers with 403 origin_not_allowed saying which, and never echoes them", async () => {
  const handler = handlerWith({ origin: [APP] });
  for (
    const [request, why] of [
      [preflight("POST", "https://evil.example"), /https:\/\/evil\.example are not allowed/],
      [preflight("PUT"), /Method PUT is not allowed .*; use GET, POST, DELETE/],
      [preflight("POST", APP, "content-type, authorization"), /header authorization is not allowed/],
      [preflight("POST", "null"), /null are not allowed/],
    ] as const
  ) {
    const response = await handler(request);
    assert.equal(response.status, 403);
    assert.equal(response.headers.get("access-control-allow-origin"), null);
    assert.equal(response.headers.get("cache-control"), "no-store");
    const { error } = await response.json();
    assert.equal(error.code, "origin_not_allowed");
    assert.match(error.message, why);
  }
  // statusFor sees the refusal like any other error.
  const teapot = createResumableHandler({
    storage: new MemoryStorage(),
    cors: { origin: [APP] },
    statusFor: (error) => error.code === "origin_not_allowed" ? 418 : undefined,
  });
  const refused = await teapot(preflight("POST", "https://evil.example"));
  assert.equal(refused.status, 418);
  await refused.body?.cancel();
  const test = await handler(fromOrigin(testRequest(BASE, chunk!), "https://evil.example"));
  assert.equal(test.status, 204);
  assert.equal(test.headers.get("access-control-allow-origin"), null);
});

Deno.test("CORS credentials echo the exact origin with Allow-Credentials; '*' without them", async () => {
  const credentialed = handlerWith({
    origin: (origin) => Promise.resolve(origin.endsWith(".example")),
    credentials: true,
  });
  const pre = await credentialed(preflight("POST"));
  assert.equal(pre.headers.get("access-control-allow-origin"), APP);
  assert.equal(pre.headers.get("access-control-allow-credentials"), "true");
  const response = await credentialed(fromOrigin(testRequest(BASE, chunk!)));
  assert.equal(response.headers.get("access-control-allow-origin"), APP);
  assert.equal(response.headers.get("access-control-allow-credentials"), "true");
  assert.match(response.headers.get("vary") ?? "", /Origin/);

  const any = handlerWith({ origin: "*", exposeHeaders: ["X-Upload-Id"] });
  const open = await any(fromOrigin(testRequest(BASE, chunk!), "https://anyone.example"));
  assert.equal(open.headers.get("access-control-allow-origin"), "*");
  assert.equal(open.headers.get("access-control-allow-credentials"), null);
  assert.equal(open.headers.get("access-control-expose-headers"), "x-upload-id");

  const throwing = handlerWith({
    origin: () => {
      throw new Error("lookup failed");
    },
  });
  assert.equal((await throwing(preflight("POST"))).status, 403);
});

Deno.test("CORS options are checked when the handler is created", () => {
  assert.throws(() => handlerWith({ origin: "*", credentials: true }), TypeError);
  assert.throws(() => handlerWith({ origin: 42 as never }), TypeError);
  assert.throws(() => handlerWith({ origin: ["*"] }), TypeError);
  assert.throws(() => handlerWith({ origin: APP, allowHeaders: ["bad header"] }), TypeError);
  assert.throws(() => handlerWith({ origin: APP, maxAge: -1 }), RangeError);
  assert.throws(() => handlerWith({ origin: APP, credentials: "yes" as never }), TypeError);
});

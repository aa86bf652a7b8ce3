// Generated hostile requests for tests/fuzz_test.ts. Every case is a pure function of (seed, index),
// so a failure is replayed with FUZZ_SEED=<seed> FUZZ_CASE=<index>.

/** A seeded PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One generated request, independent of where it is sent. */
export interface FuzzCase {
  method: string;
  /** Path and query, as sent on the wire (may hold raw `%2e%2e` and the like). */
  target: string;
  headers: [string, string][];
  body: Uint8Array | null;
  /** Whether the declared Content-Length deliberately disagrees with the body. */
  lengthLies: boolean;
  /** Scope the request claims (header x-user). */
  user: string;
  summary: string;
}

const encoder = new TextEncoder();

const NUMBERS = [
  "0",
  "-1",
  "1.5",
  "1e9",
  "1000000000",
  "9007199254740993",
  "abc",
  "",
  " 1",
  "01",
  "0x10",
  "Infinity",
  "NaN",
  "1".repeat(400),
  "1",
  "2",
  "3",
  "100",
  "300",
  "299",
  "200",
];

const TEXTS = [
  "../../etc/passwd",
  "/etc/passwd",
  "..\\..\\windows\\win.ini",
  "%2e%2e%2f%2e%2e%2fescape",
  "..%2f..%2f",
  "a\u0000b",
  "line\nbreak\r\n",
  "\u202egnp.exe",
  "x".repeat(10_000),
  "CON",
  "nul.txt",
  ".",
  "..",
  "",
  "victim-done",
  "victim-partial",
  "fuzz-1",
  "ファイル.txt",
  "a/b/../../../c",
  "C:\\evil",
  "file.bin",
];

const PARAMS = [
  "ChunkNumber",
  "ChunkSize",
  "CurrentChunkSize",
  "TotalSize",
  "Identifier",
  "Filename",
  "RelativePath",
  "TotalChunks",
  "Type",
];

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

function bytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

function paramValue(random: () => number, name: string): string {
  if (name === "Identifier" || name === "Filename" || name === "RelativePath" || name === "Type") {
    return pick(random, TEXTS);
  }
  // Mostly plausible numbers for a 300-byte upload in 100-byte chunks, so deep paths are reached.
  return random() < 0.6 ? pick(random, ["1", "2", "3", "100", "300", "3"]) : pick(random, NUMBERS);
}

/** Builds case `index` of run `seed`. */
export function fuzzCase(seed: number, index: number): FuzzCase {
  const random = rng(seed ^ Math.imul(index + 1, 0x9e3779b1));
  const dialect = random() < 0.5 ? "resumable" : "flow";
  const fields: [string, string][] = [];
  for (const name of PARAMS) {
    const roll = random();
    if (roll < 0.1) continue; // missing
    fields.push([dialect + name, paramValue(random, name)]);
    if (roll > 0.92) fields.push([dialect + name, paramValue(random, name)]); // duplicated
  }
  if (random() < 0.05) fields.push(["checksum", pick(random, ["0".repeat(64), "zz", ""])]);
  const method = pick(random, [
    "GET",
    "GET",
    "POST",
    "POST",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "HEAD",
  ]);
  const inQuery = random() < 0.6;
  const query = inQuery ? new URLSearchParams(fields).toString() : "";
  // Raw path tricks that `new URL` would normalise travel only over TCP; in-process they are escaped.
  const path = pick(random, [
    "/upload",
    "/upload",
    "/upload",
    "/upload/../upload",
    "/upload/%2e%2e/",
    "//upload",
  ]);
  const target = query ? `${path}?${query}` : path;
  const size = Math.floor(random() * 4) === 0
    ? Math.floor(random() * 400)
    : pick(random, [0, 99, 100, 101, 200]);
  const headers: [string, string][] = [];
  let body: Uint8Array | null = null;
  let shape = "none";
  const bodyKind = method === "GET" || method === "HEAD" ? "none" : pick(random, [
    "octet",
    "octet",
    "multipart",
    "multipart",
    "bad-boundary",
    "no-boundary",
    "truncated",
    "no-close",
    "dup-file",
    "file-string",
    "text",
    "json",
    "none",
  ]);
  if (bodyKind === "octet") {
    body = bytes(random, size);
    headers.push(["content-type", pick(random, ["application/octet-stream", "image/png", ""])]);
    shape = `octet ${size}B`;
  } else if (bodyKind === "text" || bodyKind === "json") {
    body = encoder.encode(bodyKind === "json" ? JSON.stringify(Object.fromEntries(fields)) : "hello");
    headers.push(["content-type", bodyKind === "json" ? "application/json" : "text/plain"]);
    shape = bodyKind;
  } else if (bodyKind !== "none") {
    const boundary = "fuzzB" + Math.floor(random() * 1e9);
    const parts: Uint8Array[] = [];
    for (const [name, value] of inQuery && random() < 0.5 ? [] : fields) {
      parts.push(
        encoder.encode(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`),
      );
    }
    const fileCount = bodyKind === "dup-file" ? 2 : 1;
    for (let f = 0; f < fileCount; f++) {
      if (bodyKind === "file-string") {
        const text = pick(random, ["data:;base64,@@@", "data:x;base64,AAAA", "plain text", ""]);
        parts.push(
          encoder.encode(`--${boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\n${text}\r\n`),
        );
      } else {
        parts.push(
          encoder.encode(
            `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${
              pick(random, TEXTS).slice(0, 200).replace(/["\r\n]/g, "")
            }"\r\nContent-Type: application/octet-stream\r\n\r\n`,
          ),
          bytes(random, size),
          encoder.encode("\r\n"),
        );
      }
    }
    if (bodyKind !== "no-close") parts.push(encoder.encode(`--${boundary}--\r\n`));
    body = concat(parts);
    if (bodyKind === "truncated") body = body.slice(0, Math.floor(random() * body.byteLength));
    const declared = bodyKind === "bad-boundary"
      ? "multipart/form-data; boundary=other"
      : bodyKind === "no-boundary"
      ? "multipart/form-data"
      : `multipart/form-data; boundary=${boundary}`;
    headers.push(["content-type", declared]);
    shape = `${bodyKind} ${body.byteLength}B`;
  }
  const lengthLies = body !== null && random() < 0.08;
  if (body !== null) {
    const declared = lengthLies
      ? (random() < 0.5 ? body.byteLength + 1 + Math.floor(random() * 50) : Math.max(0, body.byteLength - 5))
      : body.byteLength;
    headers.push(["content-length", String(declared)]);
  }
  const user = random() < 0.5 ? "victim" : "attacker";
  headers.push(["x-user", user]);
  const summary = `${method} ${target.slice(0, 120)} ${shape}${
    lengthLies ? " (length lies)" : ""
  } as ${user}`;
  return { method, target, headers, body, lengthLies, user, summary };
}

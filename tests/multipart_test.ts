import assert from "node:assert/strict";
import { readBuffers, smallBuffers } from "../src/_buffer_pool.ts";
import { type ByteReader, byteReaderOf, hookedReader } from "../src/_byte_tap.ts";
import { boundaryOf, type MultipartOptions, readMultipartStream } from "../src/_multipart.ts";
import { ResumableError } from "../src/errors.ts";

const encoder = new TextEncoder();
const B = "----formdata-b0undary";

/** Reads `body` as the handler does: directly, through a hooked reader (here with no checks). */
function readMultipart(body: ReadableStream<Uint8Array>, boundary: string, options: MultipartOptions) {
  return readMultipartStream(hookedReader(body, []), boundary, options);
}

/** A body in pieces cut at `cuts` (byte offsets), as a network would deliver it. */
function streamOf(bytes: Uint8Array, cuts: number[] = []): ReadableStream<Uint8Array> {
  const points = [0, ...cuts.filter((c) => c > 0 && c < bytes.length), bytes.length];
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i + 1 >= points.length) return controller.close();
      controller.enqueue(bytes.slice(points[i], points[i + 1]));
      i++;
    },
  });
}

/** The same pieces from a byte stream, as a request body is: readers may bring their own buffers. */
function byteStreamOf(bytes: Uint8Array, cuts: number[] = []): ReadableStream<Uint8Array> {
  const points = [0, ...cuts.filter((c) => c > 0 && c < bytes.length), bytes.length];
  let i = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      if (i + 1 >= points.length) {
        controller.close();
        controller.byobRequest?.respond(0);
        return;
      }
      controller.enqueue(bytes.slice(points[i], points[i + 1]));
      i++;
    },
  });
}

/** Reads a stream with a BYOB reader whose buffers hold `size` bytes, from `offset` in their ArrayBuffer. */
async function readByob(stream: ReadableStream<Uint8Array>, size: number, offset = 0): Promise<Uint8Array> {
  return await readWith(stream.getReader({ mode: "byob" }), size, offset);
}

/**
 * {@linkcode readByob} with the direct reader a file part offers to `byteReaderOf` (as the
 * storages take it), which reads the body without going through the file part's stream.
 */
async function readDirect(stream: ReadableStream<Uint8Array>, size: number, offset = 0): Promise<Uint8Array> {
  const reader = byteReaderOf(stream)!;
  assert.ok(!(reader instanceof ReadableStreamBYOBReader), "the file part offered no direct reader");
  assert.ok(!stream.locked);
  return await readWith(reader, size, offset);
}

async function readWith(reader: ByteReader, size: number, offset: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read(
      new Uint8Array(new ArrayBuffer(offset + size + 8), offset, size),
    );
    if (done) break;
    parts.push(value!);
  }
  return concat(...parts);
}

function concat(...parts: (string | Uint8Array)[]): Uint8Array {
  const arrays = parts.map((p) => typeof p === "string" ? encoder.encode(p) : p);
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let offset = 0;
  for (const a of arrays) {
    out.set(a, offset);
    offset += a.length;
  }
  return out;
}

function field(name: string, value: string): string {
  return `--${B}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
}

function filePart(name: string, data: Uint8Array | string, filename = "a.bin"): Uint8Array {
  return concat(
    `--${B}\r\nContent-Disposition: form-data; name="${name}"; filename="${filename}"\r\n`,
    `Content-Type: application/octet-stream\r\n\r\n`,
    data,
    "\r\n",
  );
}

const CLOSE = `--${B}--\r\n`;

async function parse(bytes: Uint8Array, cuts: number[] = []) {
  const head = await readMultipart(streamOf(bytes, cuts), B, {
    fileField: "file",
    maxFieldBytes: 1 << 20,
  });
  const file = head.file ? new Uint8Array(await new Response(head.file.stream).arrayBuffer()) : undefined;
  return { fields: head.fields, file, filename: head.file?.filename, type: head.file?.type };
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ResumableError, `expected a ResumableError, got ${error}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** File bytes that look like parts of a delimiter, to trip any naive search. */
const TRICKY = concat(
  "\r\n--",
  B.slice(0, 10),
  "\r\r\n-",
  "\r\n--",
  B.slice(0, -1),
  "X\r\n",
  new Uint8Array([0, 255, 13]),
  "\r",
);

const FLOW_BODY = concat(
  field("flowChunkNumber", "1"),
  field("flowIdentifier", "id-1"),
  filePart("file", TRICKY),
  CLOSE,
);

Deno.test("readMultipartStream() reads fields and file bytes whatever the network splits, at every byte position", async () => {
  for (let cut = 0; cut <= FLOW_BODY.length; cut++) {
    const result = await parse(FLOW_BODY, [cut]);
    assert.equal(result.fields.get("flowChunkNumber"), "1", `cut at ${cut}`);
    assert.equal(result.fields.get("flowIdentifier"), "id-1", `cut at ${cut}`);
    assert.deepEqual(result.file, TRICKY, `cut at ${cut}`);
  }
  const everyByte = Array.from({ length: FLOW_BODY.length }, (_, i) => i);
  assert.deepEqual((await parse(FLOW_BODY, everyByte)).file, TRICKY);
  const twoCuts = await parse(FLOW_BODY, [37, 38]);
  assert.equal(twoCuts.filename, "a.bin");
  assert.equal(twoCuts.type, "application/octet-stream");
});

Deno.test("readMultipartStream() reads a byte-stream body at every split, into its reused buffer, for BYOB readers too", async () => {
  const options = { fileField: "file", maxFieldBytes: 1 << 20 };
  for (let cut = 0; cut <= FLOW_BODY.length; cut++) {
    const head = await readMultipart(byteStreamOf(FLOW_BODY, [cut]), B, options);
    assert.equal(head.fields.get("flowIdentifier"), "id-1", `cut at ${cut}`);
    // Buffers of 5 bytes: the file part is handed out in pieces smaller than what is buffered.
    assert.deepEqual(await readByob(head.file!.stream, 5), TRICKY, `cut at ${cut}`);
  }
  // A file larger than the scanner's buffer, with delimiter look-alikes at every 4 KiB, arriving
  // in 64 KiB reads: the buffer is refilled and compacted many times.
  const data = new Uint8Array(1024 * 1024 + 17).map((_, i) => (i * 7919) >>> 3);
  for (let at = 0; at + TRICKY.length < data.length; at += 4096) data.set(TRICKY, at);
  const body = concat(field("id", "big"), filePart("file", data), CLOSE);
  const cuts = Array.from({ length: Math.ceil(body.length / 65536) }, (_, i) => i * 65536);
  for (const read of [(s: ReadableStream<Uint8Array>) => readByob(s, 100_000), collect]) {
    const head = await readMultipart(byteStreamOf(body, cuts), B, options);
    assert.equal(head.fields.get("id"), "big");
    assert.deepEqual(await read(head.file!.stream), data);
  }
});

for (
  const [how, read] of [["a BYOB reader of its stream", readByob], ["its direct reader", readDirect]] as const
) {
  Deno.test(`readMultipartStream() reads the file part straight into the buffer of ${how}, at every split`, async () => {
    const options = { fileField: "file", maxFieldBytes: 1 << 20 };
    // Buffers of 64 bytes hold two delimiters: the body is read into them, not into the scanner's.
    for (let cut = 0; cut <= FLOW_BODY.length; cut++) {
      const head = await readMultipart(byteStreamOf(FLOW_BODY, [cut, cut + 3]), B, options);
      assert.deepEqual(await read(head.file!.stream, 64), TRICKY, `cut at ${cut}`);
      // Views that start inside their buffer: the moved buffer is answered at the same offset.
      const again = await readMultipart(byteStreamOf(FLOW_BODY, [cut, cut + 3]), B, options);
      assert.deepEqual(await read(again.file!.stream, 64, 24), TRICKY, `cut at ${cut}, offset view`);
      // Buffers of 5 bytes, smaller than a delimiter: bytes are copied out of the scanner's buffer.
      const small = await readMultipart(byteStreamOf(FLOW_BODY, [cut]), B, options);
      assert.deepEqual(await read(small.file!.stream, 5), TRICKY, `cut at ${cut}, 5-byte reads`);
    }
  });
}

/** A byte-stream body that answers each read with at most `perRead` bytes and records the room each read offered. */
function recordingBody(
  body: Uint8Array,
  perRead = 65_536,
): { source: ReadableStream<Uint8Array>; offered: number[] } {
  const offered: number[] = [];
  let at = 0;
  const source = new ReadableStream({
    type: "bytes",
    pull(controller) {
      const request = controller.byobRequest!;
      offered.push(request.view!.byteLength);
      const count = Math.min(request.view!.byteLength, body.length - at, perRead);
      if (count === 0) {
        controller.close();
        request.respond(0);
        return;
      }
      new Uint8Array(request.view!.buffer, request.view!.byteOffset, count).set(
        body.subarray(at, at + count),
      );
      at += count;
      request.respond(count);
    },
  });
  return { source, offered };
}

Deno.test("readMultipartStream() offers the body's own reads to the file part's BYOB reader", async () => {
  const options = { fileField: "file", maxFieldBytes: 1 << 20 };
  const data = new Uint8Array(300_000).map((_, i) => (i * 7919) >>> 5);
  const body = concat(field("id", "direct"), filePart("file", data), CLOSE);
  const { source, offered } = recordingBody(body, 50_000);
  const head = await readMultipart(source, B, options);
  assert.deepEqual(await readByob(head.file!.stream, 1000), data);
  // After the first read (into the scanner's buffer), reads offer the reader's 1000-byte buffer.
  assert.ok(offered.filter((room) => room <= 1000).length > 250, `offered ${offered.slice(0, 8)}`);
});

/**
 * Runs `body`, counting the large read buffers taken from the pool, and noting how many reads of the
 * body had been made when each came back.
 */
async function watchingLargeBuffers(
  offered: number[],
  body: () => Promise<void>,
): Promise<{ taken: number; givenAfterReads: number[] }> {
  const { take, give } = readBuffers;
  let taken = 0;
  const givenAfterReads: number[] = [];
  readBuffers.take = () => {
    taken++;
    return take.call(readBuffers);
  };
  readBuffers.give = (buffer) => {
    if (buffer.buffer.byteLength === readBuffers.size) givenAfterReads.push(offered.length);
    give.call(readBuffers, buffer);
  };
  try {
    await body();
  } finally {
    Object.assign(readBuffers, { take, give });
  }
  return { taken, givenAfterReads };
}

Deno.test("readMultipartStream() gives its large buffer back while the storage reads the file part into its own", async () => {
  const data = new Uint8Array(1_000_000).map((_, i) => (i * 7919) >>> 5);
  const { source, offered } = recordingBody(concat(field("id", "lend"), filePart("file", data), CLOSE));
  const watched = await watchingLargeBuffers(offered, async () => {
    const head = await readMultipart(source, B, { fileField: "file", maxFieldBytes: 1 << 20 });
    // As the file-system storage reads it: its own 256 KiB buffers, through the direct reader.
    assert.deepEqual(await readDirect(head.file!.stream, 256 * 1024), data);
  });
  // The first read (the fields and the start of the file) goes into the reader's buffer, which is
  // back in the pool before the second: a request held two large buffers to its end before.
  assert.equal(watched.taken, 1);
  assert.deepEqual(watched.givenAfterReads, [1]);
  assert.equal(offered[0], readBuffers.size);
  // The body's end is read into a small buffer, not a large one taken again.
  assert.ok(offered.at(-1)! <= smallBuffers.size, `offered ${offered}`);
});

Deno.test("readMultipartStream() reads the body in large reads again when a consumer's buffers become too small to read into", async () => {
  const data = new Uint8Array(600_000).map((_, i) => (i * 31) >>> 3);
  const { source, offered } = recordingBody(concat(field("id", "tiny"), filePart("file", data), CLOSE));
  const pieces: Uint8Array[] = [];
  const watched = await watchingLargeBuffers(offered, async () => {
    const head = await readMultipart(source, B, { fileField: "file", maxFieldBytes: 1 << 20 });
    const reader = byteReaderOf(head.file!.stream)!;
    // Two reads into large buffers of the consumer's (the first empties the scanner's buffer, the
    // second reads the body into the consumer's, and the scanner gives its own back), then reads
    // shorter than two delimiters: the file bytes go through the scanner's buffer and are copied out.
    for (;;) {
      const { done, value } = await reader.read(new Uint8Array(pieces.length < 2 ? 256 * 1024 : 40));
      if (done) break;
      pieces.push(value!);
    }
  });
  assert.deepEqual(concat(...pieces), data);
  assert.equal(watched.taken, 2);
  // Those later reads offer room for a whole 64 KiB answer, not a small buffer's 16 KiB.
  assert.ok(offered.slice(3, -1).every((room) => room >= 65_536), `offered ${offered}`);
});

Deno.test("readMultipartStream() fails only with ResumableError on mutated byte-stream bodies read with BYOB (fuzz)", async () => {
  let seed = 777;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const options = { fileField: "file", maxFieldBytes: 1 << 20 };
  for (let round = 0; round < 500; round++) {
    const bytes = FLOW_BODY.slice();
    const edits = Math.floor(random() * 4);
    for (let e = 0; e < edits; e++) {
      bytes[Math.floor(random() * bytes.length)] = [13, 10, 45, 34, 59, 0, 97][Math.floor(random() * 7)]!;
    }
    const cuts = [Math.floor(random() * bytes.length), Math.floor(random() * bytes.length)].sort((a, b) =>
      a - b
    );
    const end = random() < 0.3 ? Math.floor(random() * bytes.length) : bytes.length;
    try {
      const head = await readMultipart(byteStreamOf(bytes.slice(0, end), cuts), B, options);
      const read = round % 2 ? readDirect : readByob;
      const file = head.file ? await read(head.file.stream, 50 + Math.floor(random() * 40)) : undefined;
      if (edits === 0 && end === bytes.length) assert.deepEqual(file, TRICKY, `round ${round}`);
    } catch (error) {
      assert.ok(error instanceof ResumableError, `round ${round}: ${error}`);
      assert.ok(["malformed_body", "body_incomplete", "body_too_large"].includes(error.code));
    }
  }
});

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

Deno.test("readMultipartStream() keeps CRLF edge cases in file data exact", async () => {
  for (
    const data of [
      "",
      "\r",
      "\n",
      "\r\n",
      "\r\n\r\n",
      "--",
      `\r\n--${B}`.slice(0, -1),
      `--${B}--`,
      "x\r",
    ]
  ) {
    const bytes = encoder.encode(data);
    const result = await parse(concat(filePart("file", bytes), CLOSE), [5, 60, 90]);
    assert.deepEqual(result.file, bytes, JSON.stringify(data));
  }
});

Deno.test("readMultipartStream() ignores preamble, epilogue and transport padding", async () => {
  const body = concat(
    "preamble\r\nmore preamble\r\n",
    `--${B}  \t\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n`,
    filePart("file", "data"),
    `--${B}--\r\nepilogue bytes`,
  );
  const result = await parse(body);
  assert.equal(result.fields.get("a"), "1");
  assert.deepEqual(result.file, encoder.encode("data"));
});

Deno.test("readMultipartStream() takes a delimiter for the opening one only at the start of a line", async () => {
  const body = concat(
    `x--${B}\r\nContent-Disposition: form-data; name="fake"\r\n\r\nno\r\n`,
    field("a", "1"),
    filePart("file", "data"),
    CLOSE,
  );
  for (const cuts of [[], [1], [2], [B.length + 3]]) {
    const result = await parse(body, cuts);
    assert.equal(result.fields.get("fake"), undefined, `cuts ${cuts}`);
    assert.equal(result.fields.get("a"), "1", `cuts ${cuts}`);
    assert.deepEqual(result.file, encoder.encode("data"), `cuts ${cuts}`);
  }
  await rejectsWith(parse(encoder.encode(`--${B.slice(0, -1)}\r\n`)), "malformed_body");
});

Deno.test("readMultipartStream() reads header and parameter names in any case, the first of a repeated one, and prefers filename*", async () => {
  const body = concat(
    `--${B}\r\nCONTENT-DISPOSITION:  FORM-DATA ; NAME="a"; name="ignored"\r\n\r\n1\r\n`,
    `--${B}\r\ncontent-disposition: form-data;\tName=b \r\n\r\n2\r\n`,
    `--${B}\r\nContent-Disposition: form-data; name="file"; FILENAME="plain.bin"; Filename*=utf-8''n%C3%A4me.bin\r\n`,
    `content-TYPE:  text/plain \r\n\r\ndata\r\n`,
    CLOSE,
  );
  for (const cuts of [[], [20, 90, 150]]) {
    const result = await parse(body, cuts);
    assert.deepEqual([...result.fields], [["a", "1"], ["b", "2"]]);
    assert.equal(result.filename, "utf-8''n%C3%A4me.bin");
    assert.equal(result.type, "text/plain");
    assert.deepEqual(result.file, encoder.encode("data"));
  }
});

Deno.test("readMultipartStream() takes only ASCII white space around header and parameter names", async () => {
  // Names are ASCII tokens (RFC 7578, RFC 9110): a no-break space or a byte order mark is not padding.
  for (const padded of ["name\u00a0", "\ufeffname"]) {
    const body = concat(`--${B}\r\nContent-Disposition: form-data; ${padded}="a"\r\n\r\n1\r\n`, CLOSE);
    await rejectsWith(parse(body), "malformed_body");
  }
  for (const header of ["Content-Disposition\u00a0", "\u00a0Content-Disposition"]) {
    const body = concat(`--${B}\r\n${header}: form-data; name="a"\r\n\r\n1\r\n`, CLOSE);
    await rejectsWith(parse(body), "malformed_body");
  }
});

Deno.test("readMultipartStream() reads quoted names with ';' and escapes, and a file with an empty filename", async () => {
  const body = concat(
    `--${B}\r\nContent-Disposition: form-data; name="a;b\\"c"\r\n\r\nv\r\n`,
    filePart("file", "x", ""),
    CLOSE,
  );
  const result = await parse(body);
  assert.equal(result.fields.get('a;b"c'), "v");
  assert.equal(result.filename, "");
  assert.deepEqual(result.file, encoder.encode("x"));
});

Deno.test("boundaryOf() refuses a missing or illegal boundary", () => {
  assert.equal(boundaryOf(`multipart/form-data; boundary=${B}`), B);
  assert.equal(boundaryOf(`multipart/form-data; charset=utf-8; boundary="a b"`), "a b");
  for (
    const type of [
      "multipart/form-data",
      "multipart/form-data; boundary=",
      'multipart/form-data; boundary=""',
      `multipart/form-data; boundary=${"x".repeat(71)}`,
      'multipart/form-data; boundary="a\u0001b"',
      'multipart/form-data; boundary="ends with space "',
    ]
  ) {
    assert.throws(
      () => boundaryOf(type),
      (e: unknown) => e instanceof ResumableError && e.code === "malformed_body",
      type,
    );
  }
});

Deno.test("readMultipartStream() refuses a body without its boundary", async () => {
  await rejectsWith(parse(encoder.encode("no boundary here at all")), "malformed_body");
  await rejectsWith(parse(new Uint8Array()), "malformed_body");
  const other = encoder.encode(
    FLOW_BODY.length ? new TextDecoder().decode(FLOW_BODY).replaceAll(B, "other") : "",
  );
  await rejectsWith(parse(other), "malformed_body");
});

Deno.test("readMultipartStream() fails the file stream of a truncated body, so nothing is stored", async () => {
  // Truncated at every position from inside the file part to just before the closing "--": either
  // the head or the file stream fails. ("--B--" without its final CRLF is complete.)
  const start = FLOW_BODY.length - CLOSE.length - TRICKY.length - 40;
  for (let end = start; end < FLOW_BODY.length - 2; end++) {
    const cut = FLOW_BODY.slice(0, end);
    await rejectsWith(parse(cut), "malformed_body");
  }
});

Deno.test("readMultipartStream() refuses a body without the closing delimiter", async () => {
  await rejectsWith(parse(concat(filePart("file", "data"))), "malformed_body");
  await rejectsWith(parse(concat(filePart("file", "data"), `--${B}`)), "malformed_body");
  await rejectsWith(parse(concat(filePart("file", "data"), `--${B}\r\n`)), "malformed_body");
  await rejectsWith(parse(concat(filePart("file", "data"), `--${B}-`)), "malformed_body");
  await rejectsWith(parse(concat(field("a", "1"))), "malformed_body");
});

Deno.test("readMultipartStream() refuses a boundary followed by junk, and parts without a name", async () => {
  await rejectsWith(
    parse(concat(`--${B}junk\r\n`, "Content-Disposition: form-data; name=a\r\n\r\n1\r\n", CLOSE)),
    "malformed_body",
  );
  await rejectsWith(
    parse(concat(`--${B}\r\nContent-Type: text/plain\r\n\r\n1\r\n`, CLOSE)),
    "malformed_body",
  );
  await rejectsWith(parse(concat(`--${B}\r\n\r\n1\r\n`, CLOSE)), "malformed_body");
  await rejectsWith(
    parse(concat(`--${B}\r\nContent-Disposition: attachment; name="a"\r\n\r\n1\r\n`, CLOSE)),
    "malformed_body",
  );
  await rejectsWith(
    parse(concat(`--${B}\r\nContent-Disposition: form-data; name="a\r\n\r\n1\r\n`, CLOSE)),
    "malformed_body",
  );
  await rejectsWith(parse(concat(`--${B}\r\nno colon here\r\n\r\n1\r\n`, CLOSE)), "malformed_body");
  await rejectsWith(
    parse(concat(`--${B}\r\nX: ${"y".repeat(20_000)}\r\n\r\n1\r\n`, CLOSE)),
    "malformed_body",
  );
});

Deno.test("readMultipartStream() refuses a duplicate file field, before or after the file part", async () => {
  await rejectsWith(parse(concat(filePart("file", "a"), filePart("file", "b"), CLOSE)), "malformed_body");
  await rejectsWith(parse(concat(field("file", "data:,x"), filePart("file", "b"), CLOSE)), "malformed_body");
  await rejectsWith(parse(concat(filePart("file", "a"), field("file", "x"), CLOSE)), "malformed_body");
  await rejectsWith(parse(concat(field("file", "x"), field("file", "y"), CLOSE)), "malformed_body");
});

Deno.test("readMultipartStream() returns a file sent as a string (base64 data: URL) as a field", async () => {
  const result = await parse(
    concat(field("a", "1"), field("file", "data:application/octet-stream;base64,aGk="), CLOSE),
  );
  assert.equal(result.file, undefined);
  assert.equal(result.fields.get("file"), "data:application/octet-stream;base64,aGk=");
});

Deno.test("readMultipartStream() parses fields after the file part but does not report them", async () => {
  const result = await parse(concat(field("a", "1"), filePart("file", "data"), field("late", "2"), CLOSE));
  assert.deepEqual(result.file, encoder.encode("data"));
  assert.equal(result.fields.get("a"), "1");
  assert.equal(result.fields.has("late"), false);
  // ...and a malformed part after the file still fails the file stream.
  await rejectsWith(
    parse(concat(filePart("file", "data"), `--${B}\r\nbad\r\n\r\nx\r\n`, CLOSE)),
    "malformed_body",
  );
});

Deno.test("readMultipartStream() skips other file parts without keeping them", async () => {
  const big = new Uint8Array(3 << 20);
  const head = await readMultipart(
    streamOf(concat(filePart("other", big), field("a", "1"), filePart("file", "x"), CLOSE), [1000, 70_000]),
    B,
    { fileField: "file", maxFieldBytes: 1024 },
  );
  assert.equal(head.fields.get("a"), "1");
  assert.equal(head.fields.has("other"), false);
  assert.equal(await new Response(head.file!.stream).text(), "x");
});

Deno.test("readMultipartStream() bounds the text fields it keeps", async () => {
  const body = concat(field("a", "x".repeat(2000)), filePart("file", "x"), CLOSE);
  await rejectsWith(
    readMultipart(streamOf(body), B, { fileField: "file", maxFieldBytes: 1000 }),
    "body_too_large",
  );
});

Deno.test("readMultipartStream() gives a data: URL chunk its own budget, apart from the other text fields", async () => {
  const options = { fileField: "file", maxFieldBytes: 1000, maxFileFieldBytes: 10_000 };
  const dataUrl = `data:application/octet-stream;base64,${"A".repeat(8000)}`;
  const head = await readMultipart(
    streamOf(concat(field("a", "1"), field("file", dataUrl), CLOSE)),
    B,
    options,
  );
  assert.equal(head.fields.get("file"), dataUrl);
  // Neither budget lends to the other.
  await rejectsWith(
    readMultipart(
      streamOf(concat(field("a", "x".repeat(2000)), field("file", "data:,x"), CLOSE)),
      B,
      options,
    ),
    "body_too_large",
  );
  await rejectsWith(
    readMultipart(streamOf(concat(field("file", "A".repeat(20_000)), CLOSE)), B, options),
    "body_too_large",
  );
});

Deno.test("readMultipartStream() reports a body that breaks off as body_incomplete", async () => {
  let sent = false;
  const broken = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent) return controller.error(new Error("connection reset"));
      sent = true;
      controller.enqueue(concat(filePart("file", "abc").slice(0, -2)));
    },
  });
  const failure: { error?: ResumableError } = {};
  const head = await readMultipart(broken, B, { fileField: "file", maxFieldBytes: 1024, failure });
  await rejectsWith(new Response(head.file!.stream).arrayBuffer(), "body_incomplete");
  assert.equal(failure.error?.code, "body_incomplete");
});

Deno.test("readMultipartStream() streams the file part before the body has ended", async () => {
  let push!: (bytes: Uint8Array | null) => void;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      push = (bytes) => bytes ? controller.enqueue(bytes) : controller.close();
    },
  });
  const headPromise = readMultipart(body, B, { fileField: "file", maxFieldBytes: 1024 });
  push(concat(field("a", "1"), filePart("file", "first bytes|").slice(0, -2)));
  const head = await headPromise;
  const reader = head.file!.stream.getReader();
  const first = await reader.read();
  // The body is still open: the reader handed out file bytes without waiting for the end.
  assert.equal(new TextDecoder().decode(first.value!).startsWith("first"), true);
  let text = new TextDecoder().decode(first.value!);
  push(encoder.encode("second\r\n"));
  push(encoder.encode(CLOSE));
  push(null);
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  assert.equal(text, "first bytes|second");
});

Deno.test("readMultipartStream() fails only with ResumableError on mutated bodies (fuzz)", async () => {
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 500; round++) {
    const bytes = FLOW_BODY.slice();
    const edits = 1 + Math.floor(random() * 4);
    for (let e = 0; e < edits; e++) {
      bytes[Math.floor(random() * bytes.length)] = [13, 10, 45, 34, 59, 0, 97][Math.floor(random() * 7)]!;
    }
    const cuts = [Math.floor(random() * bytes.length)];
    const end = random() < 0.3 ? Math.floor(random() * bytes.length) : bytes.length;
    try {
      await parse(bytes.slice(0, end), cuts);
    } catch (error) {
      assert.ok(error instanceof ResumableError, `round ${round}: ${error}`);
      assert.ok(["malformed_body", "body_incomplete", "body_too_large"].includes(error.code));
    }
  }
});

// A streaming multipart/form-data reader (RFC 7578 over RFC 2046). It collects the text fields that
// precede the file part, then hands the file part over as a stream that is read straight from the
// request body: nothing is buffered beyond one network read, into a buffer that is reused, and a
// reader that brings its own buffer gets the body read into it. The platform's `formData()` buffers
// the whole body, which caps throughput at a fraction of the wire (issue 5) and costs a body of
// memory per request in flight.
//
// The file stream closes only after the rest of the body has been checked up to the closing
// delimiter, so a storage that publishes on close never publishes a chunk from a malformed body.
import { giveBack, readBuffers, smallBuffers } from "./_buffer_pool.ts";
import { indexOf, needleOf } from "./_byte_search.ts";
import {
  type ByteReader,
  type ChunkReader,
  type HookedReader,
  tapChunkReader,
  tapReader,
} from "./_byte_tap.ts";
import { concatBytes } from "./_bytes.ts";
import { ResumableError } from "./errors.ts";
import { freeBuffer, isOwned, markLastView, releaseOwned } from "./_owned_bytes.ts";

const EMPTY = new Uint8Array(0);

/** The file part, ready to be streamed. */
export interface MultipartFile {
  /** The part's `filename` parameter (may be empty). */
  filename: string;
  /** The part's `Content-Type`, or empty. */
  type: string;
  /** The part's bytes; errors with a `ResumableError` if the rest of the body is malformed. */
  stream: ReadableStream<Uint8Array>;
}

/** What precedes the file part. */
export interface MultipartHead {
  /** Text fields before the file part; the first value of a name wins (like `FormData.get`). */
  fields: Map<string, string>;
  /** The file part named `fileField`, or `undefined` when the body has none. */
  file?: MultipartFile;
}

/** Limits and names for {@linkcode readMultipartStream}. */
export interface MultipartOptions {
  /** Name of the field holding the chunk; only this file part is kept. */
  fileField: string;
  /** Most bytes of text fields (names and values) kept in memory, but for a text `fileField`. */
  maxFieldBytes: number;
  /**
   * Most bytes of a text value of `fileField` (a base64 `data:` URL chunk), counted apart: it is the
   * chunk itself, far larger than the other fields may be. Defaults to `maxFieldBytes`. A function
   * is asked when that value begins, with the fields before it, which say how large the chunk may
   * be; what it throws fails the body before the value is read.
   */
  maxFileFieldBytes?: number | ((fields: ReadonlyMap<string, string>) => number);
  /**
   * A text field that must come before the file part: after it, it fails the body (a checksum that
   * came after the bytes it vouches for could not be checked before they were stored, and must not
   * pass unchecked).
   */
  leadingField?: string;
  /** Receives the first error of the file stream, since layers that read it may rewrap it. */
  failure?: { error?: ResumableError };
}

const CR = 13;
const LF = 10;
const DASH = 45;
const MAX_HEADER_BYTES = 16 * 1024;
// Most bytes copied out of a body piece so that the piece can be freed once its file bytes are stored.
const MAX_COPIED_TAIL = 64 * 1024;
const decoder = new TextDecoder();

function malformed(message: string): ResumableError {
  return new ResumableError("malformed_body", `Multipart body is malformed: ${message}`);
}

/**
 * The boundary of a `multipart/form-data` content type.
 *
 * @throws {ResumableError} `malformed_body` when it is missing or not a legal boundary (RFC 2046 §5.1.1).
 */
export function boundaryOf(contentType: string): string {
  const match = /;\s*boundary\s*=\s*(?:"([^"]*)"|([^\s;]*))/i.exec(contentType);
  const boundary = match?.[1] ?? match?.[2] ?? "";
  if (!/^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$/.test(boundary) || boundary.endsWith(" ")) {
    throw malformed(boundary === "" ? "no boundary in Content-Type" : "illegal boundary in Content-Type");
  }
  return boundary;
}

const HEADERS_END = needleOf("\r\n\r\n");

/**
 * Where a possible start of `needle` begins in the tail of `haystack` (a match cut by the end of a
 * network read), or `haystack.length` when none can. Holding back only a real prefix match lets most
 * reads pass through without copying.
 */
function holdFrom(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0]!;
  for (let i = Math.max(from, haystack.length - needle.length + 1); i < haystack.length; i++) {
    if (haystack[i] !== first) continue;
    let j = 1;
    while (i + j < haystack.length && haystack[i + j] === needle[j]) j++;
    if (i + j === haystack.length) return i;
  }
  return haystack.length;
}

/**
 * Reads the body through a window `buf[pos..]`. A byte stream (a request body) is read with BYOB
 * reads into one buffer the scanner reuses, so bytes handed out of `buf` must be copied first.
 * Other streams' chunks are appended as they come.
 */
class Scanner {
  #byob?: ByteReader;
  #reader?: ChunkReader;
  /**
   * The reusable buffer in BYOB mode; `buf` is its filled part. Given back to its pool while the file
   * part is read into its consumer's buffer (`readInto`); then a small one holds what `keep` keeps.
   */
  #storage?: Uint8Array;
  buf: Uint8Array;
  pos = 0;
  ended = false;
  /** Plain mode: `buf` is an owned body piece or a buffer of the scanner's own, referenced nowhere else. */
  ours = false;

  constructor(body: HookedReader) {
    this.#byob = body.byob;
    this.#reader = body.plain;
    if (this.#byob) {
      this.#storage = readBuffers.take();
      this.buf = this.#storage.subarray(0, 0);
    } else this.buf = EMPTY;
  }

  /**
   * Appends the next network read; `false` at the end of the body. `large` when the read brings file
   * bytes for `buf` (not for `readInto`): then it goes into a full-size buffer, for fewer, larger reads.
   */
  async fill(large = false): Promise<boolean> {
    if (this.ended) return false;
    try {
      return this.#byob ? await this.#fillOwned(this.#byob, large) : await this.#fillChunk(this.#reader!);
    } catch (cause) {
      if (cause instanceof ResumableError) throw cause;
      throw new ResumableError("body_incomplete", "Request body ended early", { cause });
    }
  }

  async #fillOwned(byob: ByteReader, large: boolean): Promise<boolean> {
    let storage = this.#storage;
    const rest = this.buf.length - this.pos;
    // A full-size buffer for file bytes, and for a long field that fills the small one.
    const wanted = large || rest >= smallBuffers.size ? readBuffers : smallBuffers;
    if (!storage || storage.length < wanted.size) {
      // None (given back during `readInto`), or a small one this read outgrows.
      const next = wanted.take();
      next.set(this.buf.subarray(this.pos));
      this.buf = next.subarray(0, rest);
      this.pos = 0;
      if (storage) giveBack(storage);
      storage = next;
    } else if (rest === storage.length) {
      // Only a header or field longer than the buffer gets here; both are bounded by limits.
      const larger = new Uint8Array(storage.length * 2);
      larger.set(this.buf.subarray(this.pos));
      storage = larger;
    } else if (this.pos > 0 && rest > 0) storage.copyWithin(0, this.pos, this.buf.length);
    const { done, value } = await byob.read(new Uint8Array(storage.buffer, rest, storage.length - rest));
    // The read moved the buffer into `value`.
    if (value) storage = new Uint8Array(value.buffer);
    this.#storage = storage;
    this.pos = 0;
    this.buf = storage.subarray(0, rest + (done ? 0 : value!.byteLength));
    if (done) {
      this.ended = true;
      // The body is read to its end; the few bytes left in `buf` are copied out before anyone reads
      // them again, so the buffer can go back to the pool.
      this.buf = this.buf.slice();
      this.pos = 0;
      this.#release();
    }
    return !done;
  }

  async #fillChunk(reader: ChunkReader): Promise<boolean> {
    const result = await reader.read();
    const rest = this.buf.length - this.pos;
    if (result.done) {
      this.ended = true;
      if (rest === 0) this.#drop();
      return false;
    }
    const piece = result.value!;
    if (rest === 0) {
      this.#drop();
      this.buf = piece;
      this.ours = isOwned(piece);
    } else {
      const next = new Uint8Array(rest + piece.length);
      next.set(this.buf.subarray(this.pos));
      next.set(piece, rest);
      this.#drop();
      // Copied, and handed to nothing else.
      releaseOwned(piece);
      this.buf = next;
      this.ours = true;
    }
    this.pos = 0;
    return true;
  }

  /**
   * Lets go of `buf`, freeing it at once if nothing else holds it: under Bun, body pieces (up to 512
   * KiB each) left for the garbage collector held 20 MiB and more of a multipart server's peak RSS.
   */
  #drop(): void {
    if (this.ours) freeBuffer(this.buf);
    this.ours = false;
    this.buf = EMPTY;
    this.pos = 0;
  }

  /**
   * Reads the body into a consumer's `view` instead of `buf`, so file bytes are not copied twice:
   * the unread bytes `buf[pos..]` (a possible start of a delimiter, shorter than one) go first, then
   * one read of the body. Returns what `view` now holds, in the buffer the read moved it to; the
   * scanner is empty until `keep` puts bytes back. `undefined` at the end of the body.
   */
  async readInto(view: Uint8Array): Promise<Uint8Array | undefined> {
    const held = this.buf.length - this.pos;
    // Taken now: the read detaches `view`, whose offset then reads 0.
    const offset = view.byteOffset;
    view.set(this.buf.subarray(this.pos));
    this.buf = EMPTY;
    this.pos = 0;
    // The file part is read into `view` from here on: the scanner's buffer goes back to its pool
    // until a read of the body needs it again, so a request holds one large buffer, not two.
    this.#release();
    let result;
    try {
      result = await this.#byob!.read(view.subarray(held));
    } catch (cause) {
      if (cause instanceof ResumableError) throw cause;
      throw new ResumableError("body_incomplete", "Request body ended early", { cause });
    }
    const { done, value } = result;
    if (done) {
      this.ended = true;
      if (value) this.buf = new Uint8Array(value.buffer, offset, held).slice();
      return undefined;
    }
    return new Uint8Array(value!.buffer, offset, held + value!.byteLength);
  }

  /**
   * Makes `bytes` (read by `readInto`) the scanner's unread bytes: a copy into a buffer of its own.
   * Between reads of the file part they are a possible start of a delimiter, a few dozen bytes, so
   * a small buffer serves; what follows the closing delimiter may be more.
   */
  keep(bytes: Uint8Array): void {
    this.#release();
    const storage = bytes.length <= smallBuffers.size
      ? smallBuffers.take()
      : bytes.length <= readBuffers.size
      ? readBuffers.take()
      : new Uint8Array(bytes.length);
    this.#storage = storage;
    storage.set(bytes);
    this.buf = storage.subarray(0, bytes.length);
    this.pos = 0;
  }

  /** Gives the buffer back to its pool; `buf` must not view it any more. */
  #release(): void {
    if (this.#storage) giveBack(this.#storage);
    this.#storage = undefined;
  }

  /** Whether `buf` is reused by later reads, so bytes handed out must be copies. */
  get owned(): boolean {
    return this.#byob !== undefined;
  }

  /** Makes at least `n` bytes available from `pos`; `false` if the body ends first. */
  async need(n: number): Promise<boolean> {
    while (this.buf.length - this.pos < n) {
      if (!await this.fill()) return false;
    }
    return true;
  }

  async cancel(reason: unknown): Promise<void> {
    await (this.#byob ?? this.#reader)!.cancel(reason).catch(() => {});
  }
}

interface PartHeaders {
  name: string;
  filename?: string;
  type: string;
}

// Part headers are parsed by index, not by splitting and lower-casing: a resumable.js request has
// ten parts, and the strings and maps of a parse by pieces were about 8 KB of garbage per request, a
// quarter of what a multipart request allocated beyond an octet one (docs/performance.md).

/** Whether `text[from..to)`, without surrounding ASCII white space, is `lower` in any ASCII case. */
function isToken(text: string, from: number, to: number, lower: string): boolean {
  while (from < to && isBlank(text.charCodeAt(from))) from++;
  while (to > from && isBlank(text.charCodeAt(to - 1))) to--;
  if (to - from !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const code = text.charCodeAt(from + i);
    // ASCII letters only: folding other characters would let, say, "\r" pass for "-".
    const folded = code >= 65 && code <= 90 ? code + 32 : code;
    if (folded !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/** ASCII white space, as `String.prototype.trim` removes it. */
function isBlank(code: number): boolean {
  return code === 32 || (code >= 9 && code <= 13);
}

/** The `Content-Disposition` parameters the reader uses; the first of each name counts. */
interface Disposition {
  name?: string;
  filename?: string;
  /** RFC 5987 `filename*`, preferred over `filename`. */
  filenameStar?: string;
}

/**
 * Parses `form-data; name="a"; filename="b"` from `text[from..to)`; quoted strings may hold `;` and
 * `\"`. `undefined` when it is not `form-data` or a quoted string is not closed.
 */
function dispositionOf(text: string, from: number, to: number): Disposition | undefined {
  const semi = text.indexOf(";", from);
  const typeEnd = semi < 0 || semi > to ? to : semi;
  if (!isToken(text, from, typeEnd, "form-data")) return undefined;
  const found: Disposition = {};
  let i = typeEnd + 1;
  while (i < to) {
    while (i < to && (text[i] === " " || text[i] === "\t" || text[i] === ";")) i++;
    const eq = text.indexOf("=", i);
    if (eq < 0 || eq >= to) break;
    const keyFrom = i;
    i = eq + 1;
    let value: string;
    if (text[i] === '"') {
      const close = text.indexOf('"', i + 1);
      const escape = text.indexOf("\\", i + 1);
      if (escape < 0 || escape >= to || (close >= 0 && close < escape)) {
        // No escapes: one slice, not a string built character by character.
        if (close < 0 || close >= to) return undefined;
        value = text.slice(i + 1, close);
        i = close + 1;
      } else {
        value = "";
        i++;
        while (i < to && text[i] !== '"') {
          if (text[i] === "\\" && i + 1 < to) i++;
          value += text[i];
          i++;
        }
        if (i >= to) return undefined;
        i++;
      }
    } else {
      const end = text.indexOf(";", i);
      const valueEnd = end < 0 || end > to ? to : end;
      value = text.slice(i, valueEnd).trim();
      i = valueEnd;
    }
    if (isToken(text, keyFrom, eq, "name")) found.name ??= value;
    else if (isToken(text, keyFrom, eq, "filename")) found.filename ??= value;
    else if (isToken(text, keyFrom, eq, "filename*")) found.filenameStar ??= value;
  }
  return found;
}

function parseHeaders(bytes: Uint8Array): PartHeaders {
  const text = decoder.decode(bytes);
  let disposition: Disposition | undefined;
  let type = "";
  for (let start = 0; start < text.length;) {
    const crlf = text.indexOf("\r\n", start);
    const end = crlf < 0 ? text.length : crlf;
    if (end > start) {
      const colon = text.indexOf(":", start);
      if (colon <= start || colon >= end) {
        throw malformed(`bad part header "${text.slice(start, Math.min(end, start + 40))}"`);
      }
      if (isToken(text, start, colon, "content-disposition")) {
        disposition = dispositionOf(text, colon + 1, end);
        if (!disposition) throw malformed("bad Content-Disposition");
      } else if (isToken(text, start, colon, "content-type")) type = text.slice(colon + 1, end).trim();
    }
    start = end + 2;
  }
  const name = disposition?.name;
  if (name === undefined) throw malformed("a part has no Content-Disposition name");
  return { name, filename: disposition!.filenameStar ?? disposition!.filename, type };
}

/**
 * Reads a multipart body up to the file part named `options.fileField`. Resolves with the fields
 * before it and the file part as a stream, or, when there is no such file part, with every field
 * once the whole body is checked. Parts after the file part are parsed (and ignored) while the file
 * stream is read; a second part named `fileField` fails it.
 *
 * `body` is the request body, read directly through its checks (`hookedReader`).
 *
 * @throws {ResumableError} `malformed_body`, `body_incomplete` (the body broke off), or
 * `body_too_large` (from the stream feeding it).
 */
export async function readMultipartStream(
  body: HookedReader,
  boundary: string,
  options: MultipartOptions,
): Promise<MultipartHead> {
  const scanner = new Scanner(body);
  const delimiter = needleOf(`\r\n--${boundary}`);
  const fields = new Map<string, string>();
  let fieldBytes = 0;
  let maxChunkText = 0;
  let fileSeen = false;

  /**
   * Skips to just past the first delimiter, which may open the body without the CRLF that precedes
   * every other one. Checked in place rather than by putting a CRLF before the body: that meant
   * copying each body's first network read, up to 512 KiB under Bun, to prepend two bytes.
   */
  async function skipFirstDelimiter(): Promise<boolean> {
    const opening = delimiter.bytes.subarray(2);
    if (await scanner.need(opening.length)) {
      let i = 0;
      while (i < opening.length && scanner.buf[scanner.pos + i] === opening[i]) i++;
      if (i === opening.length) {
        scanner.pos += opening.length;
        return true;
      }
    }
    return await skipPastDelimiter();
  }

  /** Skips to just past the next delimiter; returns false if the body ends first. */
  async function skipPastDelimiter(): Promise<boolean> {
    while (true) {
      const at = indexOf(scanner.buf, delimiter, scanner.pos);
      if (at >= 0) {
        scanner.pos = at + delimiter.bytes.length;
        return true;
      }
      scanner.pos = holdFrom(scanner.buf, delimiter.bytes, scanner.pos);
      if (!await scanner.fill()) return false;
    }
  }

  // Where the parser is between network reads. Parts are parsed from what is buffered without
  // awaiting anything: a body's fields usually arrive in its first read, and an async step per
  // delimiter, header block and field cost about a fifth of a multipart request's garbage, which
  // is what grows V8's young generation (docs/performance.md).
  const AFTER_DELIMITER = 0;
  const PADDING = 1;
  const HEADERS = 2;
  const PART_BODY = 3;
  const ENDS_EARLY = [
    "ends after a boundary",
    "ends after a boundary",
    "ends inside part headers",
    "ends inside a part (no closing boundary)",
  ];
  let state = AFTER_DELIMITER;
  /** The part whose body is being read, and what is kept of it so far. */
  let part: PartHeaders = { name: "", type: "" };
  let keep = false;
  let isChunk = false;
  let kept: Uint8Array[] = [];
  let size = 0;

  /**
   * Parses the parts buffered from `scanner.pos` on, as far as they go: the file part's headers
   * once they are read, `null` at the closing delimiter, `undefined` when more bytes are needed.
   * Other parts' bodies are kept when they are text fields (and a data: URL chunk), within
   * maxFieldBytes, or maxFileFieldBytes for that chunk; files other than the chunk are skipped.
   */
  function parseBuffered(): PartHeaders | null | undefined {
    for (;;) {
      const buf = scanner.buf;
      if (state === AFTER_DELIMITER) {
        if (buf.length - scanner.pos < 2) return undefined;
        if (buf[scanner.pos] === DASH && buf[scanner.pos + 1] === DASH) {
          scanner.pos += 2;
          return null;
        }
        state = PADDING;
      }
      if (state === PADDING) {
        // Transport padding (RFC 2046 §5.1.1) then CRLF.
        let pos = scanner.pos;
        while (buf[pos] === 32 || buf[pos] === 9) pos++;
        scanner.pos = pos;
        if (buf.length - pos < 2) return undefined;
        if (buf[pos] !== CR || buf[pos + 1] !== LF) throw malformed("boundary not followed by CRLF");
        state = HEADERS;
      }
      if (state === HEADERS) {
        // `scanner.pos` is on the CRLF ending the delimiter line.
        const at = indexOf(buf, HEADERS_END, scanner.pos);
        if (at < 0) {
          if (buf.length - scanner.pos > MAX_HEADER_BYTES) throw malformed("part headers are too long");
          return undefined;
        }
        const headers = parseHeaders(buf.subarray(scanner.pos + 2, at));
        scanner.pos = at + 4;
        isChunk = headers.name === options.fileField;
        if (isChunk && (fileSeen || fields.has(headers.name))) {
          throw malformed(`field "${headers.name}" appears more than once`);
        }
        if (fileSeen && headers.name === options.leadingField) {
          throw malformed(`field "${headers.name}" must precede the file part`);
        }
        if (isChunk && headers.filename !== undefined) {
          fileSeen = true;
          // What follows the file part's bytes is parsed from its delimiter on.
          state = AFTER_DELIMITER;
          return headers;
        }
        part = headers;
        keep = headers.filename === undefined;
        if (isChunk && keep) {
          const limit = options.maxFileFieldBytes ?? options.maxFieldBytes;
          maxChunkText = typeof limit === "function" ? limit(fields) : limit;
        }
        kept = [];
        size = 0;
        state = PART_BODY;
      }
      const at = indexOf(buf, delimiter, scanner.pos);
      const end = at >= 0 ? at : holdFrom(buf, delimiter.bytes, scanner.pos);
      let value: string | undefined;
      if (keep && end > scanner.pos) {
        size += end - scanner.pos;
        if (!isChunk) fieldBytes += end - scanner.pos;
        if (isChunk && size > maxChunkText) {
          throw new ResumableError(
            "body_too_large",
            `Multipart field "${options.fileField}" is larger than ${maxChunkText} bytes`,
          );
        }
        if (fieldBytes > options.maxFieldBytes) {
          throw new ResumableError(
            "body_too_large",
            `Multipart text fields are larger than ${options.maxFieldBytes} bytes`,
          );
        }
        // A field within one read is decoded where it is; others are gathered as copies, since
        // the scanner reuses its buffer.
        if (at >= 0 && kept.length === 0) value = decoder.decode(buf.subarray(scanner.pos, end));
        else kept.push(buf.slice(scanner.pos, end));
      }
      if (at < 0) {
        scanner.pos = end;
        return undefined;
      }
      scanner.pos = at + delimiter.bytes.length;
      fieldBytes += part.name.length;
      // Fields after the file part are checked but not reported: the caller has read them already.
      if (keep && !fileSeen && !fields.has(part.name)) {
        fields.set(part.name, value ?? decoder.decode(concatBytes(kept)));
      }
      state = AFTER_DELIMITER;
    }
  }

  /** Reads parts until the file part (returns its headers) or the closing delimiter (undefined). */
  async function nextFilePart(): Promise<PartHeaders | undefined> {
    for (;;) {
      const found = parseBuffered();
      if (found !== undefined) return found ?? undefined;
      if (!await scanner.fill()) throw malformed(ENDS_EARLY[state]!);
    }
  }

  /** Reads the epilogue to the end, so the body limit still applies and nothing is left unread. */
  async function finish(): Promise<void> {
    scanner.pos = scanner.buf.length;
    while (await scanner.fill()) scanner.pos = scanner.buf.length;
  }

  try {
    if (!await skipFirstDelimiter()) throw malformed("no boundary found");
    const file = await nextFilePart();
    if (!file) {
      await finish();
      return { fields };
    }
    return { fields, file: { filename: file.filename ?? "", type: file.type, stream: fileStream() } };
  } catch (error) {
    await scanner.cancel(error);
    throw error;
  }

  /** `buf[pos..end)` of the file part, or as much of it as `view` has room for. */
  function deliver(end: number, view: Uint8Array | undefined): { done: boolean; value: Uint8Array } {
    if (view) {
      const count = Math.min(end - scanner.pos, view.length);
      view.set(scanner.buf.subarray(scanner.pos, scanner.pos + count));
      scanner.pos += count;
      return { done: false, value: view.subarray(0, count) };
    }
    const whole = scanner.buf;
    const bytes = scanner.owned ? whole.slice(scanner.pos, end) : whole.subarray(scanner.pos, end);
    if (!scanner.owned && scanner.ours && whole.length - end <= MAX_COPIED_TAIL) {
      // The last file bytes of a buffer nothing else holds: whoever stores them may free the
      // buffer. What the scanner still needs of it (a delimiter or the start of one, and what
      // follows) is copied out first. Without this, the piece holding the end of each file part
      // waited for a collection: several MiB of peak RSS under Bun.
      markLastView(bytes, whole);
      scanner.buf = end === whole.length ? EMPTY : whole.slice(end);
      scanner.ours = end < whole.length;
      scanner.pos = 0;
    } else {
      scanner.pos = end;
      // A view of it is held elsewhere now.
      scanner.ours = false;
    }
    return { done: false, value: bytes };
  }

  /**
   * The next bytes of the file part. With `view` (a BYOB read) they are copied or read into it, and
   * returned in the buffer it ends up in (a read of the body moves it); `done` comes with an empty
   * view of that buffer. Without, they are a copy when the scanner reuses its buffer, and otherwise
   * a view of its chunk, which is never written again. The rest of the body is checked before
   * `done`: only then may the chunk be published.
   */
  async function readFilePart(view?: Uint8Array): Promise<{ done: boolean; value?: Uint8Array }> {
    try {
      while (true) {
        const at = indexOf(scanner.buf, delimiter, scanner.pos);
        if (at > scanner.pos) return deliver(at, view);
        if (at === scanner.pos) {
          scanner.pos = at + delimiter.bytes.length;
          if (await nextFilePart()) throw malformed(`field "${options.fileField}" appears more than once`);
          await finish();
          return { done: true, value: view?.subarray(0, 0) };
        }
        const safe = holdFrom(scanner.buf, delimiter.bytes, scanner.pos);
        if (safe > scanner.pos) return deliver(safe, view);
        if (view && scanner.owned && !scanner.ended && view.length >= 2 * delimiter.bytes.length) {
          // Nothing buffered but a possible delimiter start: read the body into the reader's
          // buffer, hand out what precedes a delimiter (or a possible start of one), keep the rest.
          const room = view.length;
          const filled = await scanner.readInto(view);
          if (!filled) throw malformed("ends inside the file part (no closing boundary)");
          const found = indexOf(filled, delimiter, 0);
          const end = found >= 0 ? found : holdFrom(filled, delimiter.bytes, 0);
          scanner.keep(filled.subarray(end));
          if (end > 0) return { done: false, value: filled.subarray(0, end) };
          // The read moved the reader's buffer: go on in the new one.
          view = new Uint8Array(filled.buffer, filled.byteOffset, room);
          continue;
        }
        if (!await scanner.fill(true)) throw malformed("ends inside the file part (no closing boundary)");
      }
    } catch (error) {
      if (options.failure && error instanceof ResumableError) options.failure.error ??= error;
      await scanner.cancel(error);
      throw error;
    }
  }

  /**
   * The file part as a stream: a tap of {@linkcode readFilePart} (see _byte_tap.ts), so taps added to
   * it, such as the handler's size check, add their hooks to it instead of making a stream each
   * (docs/performance.md). When the scanner reuses its buffer (a byte-stream body) it is a byte
   * stream: a BYOB read gets the bytes copied or read into its own buffer, and a consumer that takes
   * it with `byteReaderOf` calls readFilePart directly, one stream layer less per network read.
   */
  function fileStream(): ReadableStream<Uint8Array> {
    if (scanner.owned) {
      return tapReader({
        read: (view) => readFilePart(view),
        cancel: (reason) => scanner.cancel(reason),
        releaseLock() {},
      });
    }
    return tapChunkReader({
      read: () => readFilePart(),
      cancel: (reason) => scanner.cancel(reason),
    });
  }
}

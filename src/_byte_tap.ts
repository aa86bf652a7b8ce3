// A pass-through byte stream that watches the bytes going by (counting, timing) without copying
// or allocating: a consumer's BYOB read is handed straight to the source as a BYOB read into the
// consumer's own buffer. Deno's request body is a byte stream, so a storage that reads with one
// reusable buffer makes no garbage per network read; with default reads every 64 KiB read was a new
// buffer, which cost throughput and tens of MiB of peak RSS in bench/run.ts.
//
// A source that is not a byte stream (one made in JavaScript) gets a plain pass-through stream: a
// byte stream would take (detach) the buffer of every chunk it carries, and such a source may still
// be using it, as the multipart reader does.

import { markOwned } from "./_owned_bytes.ts";

/** What a tap does around each read of the source. Every hook may throw to fail the stream. */
export interface ByteTapHooks {
  /** Called once with a function that cancels the source, settling a pending read as done. */
  start?(cancelSource: (reason: unknown) => void): void;
  /** Before each read of the source. */
  beforeRead?(): void;
  /** After each read; `bytes` is `undefined` at the end of the source. */
  afterRead?(bytes: Uint8Array | undefined): void;
  /** The error the stream fails with when reading the source fails. */
  readError?(cause: unknown): unknown;
  /** Called once when the stream settles: closed, errored or cancelled. */
  finish?(): void;
}

// Size of a read when the consumer brings no buffer (a default reader).
const DEFAULT_READ = 64 * 1024;

/** A source being read: with BYOB reads when it is a byte stream. */
interface SourceReader {
  byob?: ByteReader;
  plain?: ChunkReader;
}

/** The part of a default reader that a tap uses: what {@linkcode tapChunkReader} takes. */
export interface ChunkReader {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(reason?: unknown): Promise<void>;
}

/** What a tap runs: replaced by a stack when a tap is added to one nobody has read yet. */
interface TapState {
  hooks: ByteTapHooks;
  /** Cancels the tap's source; given to the `start` hook of every tap added. */
  cancelSource: (reason: unknown) => void;
}

/** Taps nobody has read yet, with what they run: a tap of one of them adds its hooks to it. */
const unread = new WeakMap<ReadableStream<Uint8Array>, TapState>();

/**
 * Returns a stream of `source`'s bytes that calls `hooks` around each read: a byte stream when
 * `source` is one, so BYOB reads pass through. When `source` is itself a tap nobody has read, it
 * runs both sets of hooks (`source`'s first) and is returned: a stream layer per tap cost a promise
 * and a pull per network read, about 5 % of octet throughput in bench/run.ts, and making a stream
 * about 3 KB of garbage per request. Either way, read only the returned stream.
 *
 * With `ownsChunks`, the source is a request body only this tap reads: the pieces its default reads
 * hand out are marked freeable once stored (see _owned_bytes.ts). It applies when the tap is made,
 * not when a tap is added to one.
 */
export function tapBytes(
  source: ReadableStream<Uint8Array>,
  hooks: ByteTapHooks,
  ownsChunks = false,
): ReadableStream<Uint8Array> {
  const state = unread.get(source);
  if (state) {
    state.hooks = stack(state.hooks, hooks);
    hooks.start?.(state.cancelSource);
    return source;
  }
  const byob = byteReaderOf(source);
  return tap(byob ? { byob } : { plain: source.getReader() }, hooks, ownsChunks);
}

/** Runs `inner`'s hooks, then `outer`'s, as two stacked taps would. */
function stack(inner: ByteTapHooks, outer: ByteTapHooks): ByteTapHooks {
  const asReadError = (error: unknown) => outer.readError ? outer.readError(error) : error;
  return {
    beforeRead() {
      inner.beforeRead?.();
      outer.beforeRead?.();
    },
    afterRead(bytes) {
      try {
        inner.afterRead?.(bytes);
      } catch (error) {
        // What failed the inner stream reaches the outer one as a failed read.
        throw asReadError(error);
      }
      outer.afterRead?.(bytes);
    },
    readError: (cause) => asReadError(inner.readError ? inner.readError(cause) : cause),
    finish() {
      inner.finish?.();
      outer.finish?.();
    },
  };
}

/** One read of a tap's source with its hooks run: shared by the tap stream and a direct reader. */
interface TapCore {
  /**
   * The next bytes, read into `view` when given (BYOB sources); never an empty chunk. `direct` for a
   * direct reader ({@linkcode byteReaderOf}): it then also ends the tap (`fail`) when the read fails,
   * and settles the tap stream (`retire`) when the source is done or failed.
   */
  next(view: Uint8Array | undefined, direct?: boolean): Promise<{ done: boolean; value?: Uint8Array }>;
  /** Ends the tap after a failure: runs `finish`, then cancels the source. */
  fail(error: unknown, controller?: { error(reason: unknown): void }): Promise<void>;
  cancel(reason: unknown): Promise<void>;
  /**
   * Settles the tap stream itself, unread, once a direct reader is done with its source: closed, or
   * errored with `error`. The runtime then drops the stream's algorithms and what they hold.
   */
  retire(error?: unknown): void;
}

/** The read cores of byte-stream taps, for {@linkcode byteReaderOf}. */
const cores = new WeakMap<ReadableStream<Uint8Array>, TapCore>();
/** Taps of sources that are not byte streams: no BYOB reader can be had, so none is tried. */
const plainTaps = new WeakSet<ReadableStream<Uint8Array>>();

/** What {@linkcode byteReaderOf} returns: the part of a BYOB reader that consumers here use. */
export interface ByteReader {
  /** Reads into `view`'s buffer, which moves to the returned `value` (as with a BYOB reader). */
  read(view: Uint8Array): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(reason?: unknown): Promise<void>;
  releaseLock(): void;
}

/**
 * A byte stream of what `reader` reads, as a tap with no hooks of its own: taps of it add their hooks
 * to it, and {@linkcode byteReaderOf} gives its first caller a reader that calls `reader` directly.
 * A default read of it reads into a new buffer of 64 KiB.
 */
export function tapReader(reader: ByteReader): ReadableStream<Uint8Array> {
  return tap({ byob: reader }, {}, false);
}

/**
 * A stream of the chunks `reader` reads, as a tap with no hooks of its own, so that taps of it add
 * their hooks to it instead of making a stream each. Not a byte stream: what `reader` hands out is
 * passed on as it is.
 */
export function tapChunkReader(reader: ChunkReader): ReadableStream<Uint8Array> {
  return tap({ plain: reader }, {}, false);
}

/**
 * A BYOB reader of `stream`, or `undefined` when it is not a byte stream. For a tap nobody has read,
 * the reader reads the tap's source directly and runs its hooks: one stream layer less per network
 * read (64 KiB reads of a byte stream: 62 µs per MiB through a tap, 44 µs this way, 38 µs without a
 * tap). The tap must then only be cancelled, not read, while the reader is in use.
 */
export function byteReaderOf(stream: ReadableStream<Uint8Array>): ByteReader | undefined {
  const core = cores.get(stream);
  if (core && unread.has(stream)) {
    unread.delete(stream);
    return {
      read: (view) => core.next(view, true),
      async cancel(reason) {
        await core.cancel(reason);
        core.retire();
      },
      releaseLock() {},
    };
  }
  if (plainTaps.has(stream)) return undefined;
  try {
    return stream.getReader({ mode: "byob" });
  } catch {
    return undefined;
  }
}

/** A source read through {@linkcode hookedReader}. */
export interface HookedReader {
  /** When the source is a byte stream: reads into the caller's buffers. */
  byob?: ByteReader;
  /** Otherwise: the source's own chunks. */
  plain?: ChunkReader;
}

/**
 * Reads `source` as a tap's direct reader would, with `hooks` run around every read (each set in
 * turn, as stacked taps run them), but makes no stream: for a consumer that never needs one, the
 * multipart reader of a request body. Under Deno every stream survives young-generation collections
 * until a full one: one stream less per request made each of a multipart server's young-generation
 * collections keep about a fifth less (docs/performance.md). `ownsChunks` as for {@linkcode tapBytes}.
 */
export function hookedReader(
  source: ReadableStream<Uint8Array>,
  hooks: ByteTapHooks[],
  ownsChunks = false,
): HookedReader {
  const byob = byteReaderOf(source);
  const reader: SourceReader = byob ? { byob } : { plain: source.getReader() };
  // Stacked as taps added to one another are; every set's `start` is called below.
  const stacked = hooks.length === 0 ? {} : hooks.reduce((inner, outer) => stack(inner, outer));
  const { core, state } = tapCore(reader, { ...stacked, start: undefined }, ownsChunks, {});
  for (const set of hooks) set.start?.(state.cancelSource);
  const cancel = (reason?: unknown) => core.cancel(reason);
  return byob
    ? { byob: { read: (view) => core.next(view, true), cancel, releaseLock() {} } }
    : { plain: { read: () => core.next(undefined, true), cancel } };
}

/** What a source is read through: a tap's stream and its controller, or nothing (a hooked reader). */
interface TapOwner {
  stream?: ReadableStream<Uint8Array>;
  controller?: ReadableByteStreamController;
}

/** A source read with hooks, as a tap's stream and a direct reader of it share it. */
function tapCore(
  source: SourceReader,
  hooks: ByteTapHooks,
  ownsChunks: boolean,
  owner: TapOwner,
): { core: TapCore; state: TapState } {
  const { byob, plain } = source;
  const reader = byob ?? plain!;
  // Looked up on every read: taps added before the first one (see tapBytes) stack their hooks here.
  const state: TapState = {
    hooks,
    cancelSource: (reason) => {
      reader.cancel(reason).catch(() => {});
    },
  };
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    if (owner.stream) forget(owner.stream);
    state.hooks.finish?.();
  };
  hooks.start?.(state.cancelSource);

  // One async function per read, the hooks and the direct reader's settling included: each layer of
  // async calls cost a promise and a frame per network read, garbage that made V8's young generation
  // grow sooner (docs/performance.md).
  const core: TapCore = {
    async next(view, direct = false) {
      let target = view;
      try {
        for (;;) {
          state.hooks.beforeRead?.();
          let result: { done: boolean; value?: Uint8Array };
          try {
            // A BYOB read of the source moves the consumer's buffer into `value`.
            result = byob ? await byob.read(target ?? new Uint8Array(DEFAULT_READ)) : await plain!.read();
          } catch (cause) {
            const { readError } = state.hooks;
            throw readError ? readError(cause) : cause;
          }
          const { done, value } = result;
          if (plain && ownsChunks && value) markOwned(value);
          state.hooks.afterRead?.(done ? undefined : value);
          if (done) {
            finish();
            if (direct) core.retire();
            return result;
          }
          // A byte stream may not carry empty chunks; read again (into the moved buffer) instead.
          if (value!.byteLength > 0) return result;
          if (target) target = new Uint8Array(value!.buffer, value!.byteOffset, target.byteLength);
        }
      } catch (error) {
        if (direct) {
          await core.fail(error);
          core.retire(error);
        }
        throw error;
      }
    },
    async fail(error, controller) {
      finish();
      controller?.error(error);
      await reader.cancel(error).catch(() => {});
    },
    async cancel(reason) {
      finish();
      await reader.cancel(reason).catch(() => {});
    },
    retire(error) {
      if (owner.controller) settle(owner.controller, error);
    },
  };
  return { core, state };
}

/** The pass-through itself; `hooks.start` is called at once. */
function tap(source: SourceReader, hooks: ByteTapHooks, ownsChunks: boolean): ReadableStream<Uint8Array> {
  const owner: TapOwner = {};
  const { core, state } = tapCore(source, hooks, ownsChunks, owner);
  let stream: ReadableStream<Uint8Array>;
  if (source.plain) {
    stream = owner.stream = tapChunks(core);
    plainTaps.add(stream);
    unread.set(stream, state);
    return stream;
  }
  stream = owner.stream = new ReadableStream({
    type: "bytes",
    start(controller) {
      owner.controller = controller;
    },
    async pull(controller) {
      unread.delete(stream);
      try {
        const request = controller.byobRequest;
        const view: Uint8Array | undefined = request?.view
          ? new Uint8Array(request.view.buffer, request.view.byteOffset, request.view.byteLength)
          : undefined;
        const { done, value } = await core.next(view);
        if (done) {
          controller.close();
          // The source took the buffer: answer with the view it gave back.
          if (request && value) request.respondWithNewView(value);
        } else if (request) request.respondWithNewView(value!);
        else controller.enqueue(value!);
      } catch (error) {
        await core.fail(error, controller);
      }
    },
    cancel: (reason) => core.cancel(reason),
  }, { highWaterMark: 0 });
  cores.set(stream, core);
  unread.set(stream, state);
  return stream;
}

/**
 * Drops what the tap maps hold for `stream`, once its source is done. V8's young-generation
 * collections keep a WeakMap's values alive whether or not their keys are, and these values reach
 * their keys (through the closures' shared scope): left in, an entry kept its request's streams,
 * readers and buffers alive until a full collection, and grew Deno's young generation
 * (docs/performance.md).
 */
function forget(stream: ReadableStream<Uint8Array>): void {
  cores.delete(stream);
  unread.delete(stream);
}

/**
 * Closes (or errors, with `error`) a stream nobody reads any more, ignoring one already settled.
 * Settling it makes the runtime drop its algorithms, and so what they hold: under Deno every stream
 * survives young-generation collections until a full one (docs/performance.md).
 */
function settle(controller: ReadableByteStreamController, error?: unknown): void {
  try {
    if (error === undefined) controller.close();
    else controller.error(error);
  } catch {
    // Already closed or errored.
  }
}

/** The pass-through for sources that are not byte streams. */
function tapChunks(core: TapCore): ReadableStream<Uint8Array> {
  const stream: ReadableStream<Uint8Array> = new ReadableStream<Uint8Array>({
    async pull(controller) {
      unread.delete(stream);
      try {
        const { done, value } = await core.next(undefined);
        if (done) controller.close();
        else controller.enqueue(value!);
      } catch (error) {
        await core.fail(error, controller);
      }
    },
    cancel: (reason) => core.cancel(reason),
  }, { highWaterMark: 0 });
  return stream;
}

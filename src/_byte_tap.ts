// A pass-through byte stream that watches the bytes going by (counting, timing) without copying
// or allocating: a consumer's BYOB read is handed straight to the source as a BYOB read into the
// consumer's own buffer. Deno's request body is a byte stream, so a storage that reads with one
// reusable buffer makes no garbage per network read; with default reads every 64 KiB read was a new
// buffer, which cost throughput and tens of MiB of peak RSS in bench/run.ts.
//
// A source that is not a byte stream (one made in JavaScript) gets a plain pass-through stream: a
// byte stream would take (detach) the buffer of every chunk it carries, and such a source may still
// be using it, as the multipart reader does.

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
  byob?: ReadableStreamBYOBReader;
  plain?: ReadableStreamDefaultReader<Uint8Array>;
}

/** Taps nobody has read yet, with what they read and do: a tap of one of them reads its source directly. */
const unread = new WeakMap<ReadableStream<Uint8Array>, { source: SourceReader; hooks: ByteTapHooks }>();

/**
 * Returns a stream of `source`'s bytes that calls `hooks` around each read: a byte stream when
 * `source` is one, so BYOB reads pass through. When `source` is itself a tap nobody has read, the two
 * become one stream that runs both sets of hooks (`source`'s first): each layer costs a promise and
 * a pull per network read, about 5 % of octet throughput in bench/run.ts. `source` must then not be
 * read any more; cancelling it still cancels what it reads.
 */
export function tapBytes(
  source: ReadableStream<Uint8Array>,
  hooks: ByteTapHooks,
): ReadableStream<Uint8Array> {
  const inner = unread.get(source);
  if (inner) {
    unread.delete(source);
    const stacked = stack(inner.hooks, hooks);
    const stream = tap(inner.source, stacked, hooks);
    unread.set(stream, { source: inner.source, hooks: stacked });
    return stream;
  }
  let reader: SourceReader;
  try {
    reader = { byob: source.getReader({ mode: "byob" }) };
  } catch {
    reader = { plain: source.getReader() };
  }
  const stream = tap(reader, hooks, hooks);
  unread.set(stream, { source: reader, hooks });
  return stream;
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

/** The pass-through itself; `starting` gets its `start` call (the inner hooks of a stack had theirs). */
function tap(source: SourceReader, hooks: ByteTapHooks, starting: ByteTapHooks): ReadableStream<Uint8Array> {
  const { byob, plain } = source;
  const reader = byob ?? plain!;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    hooks.finish?.();
  };
  starting.start?.((reason) => {
    reader.cancel(reason).catch(() => {});
  });
  const settle: Settle = {
    async fail(controller, error) {
      finish();
      controller.error(error);
      await reader.cancel(error).catch(() => {});
    },
    async cancel(reason) {
      finish();
      await reader.cancel(reason).catch(() => {});
    },
  };

  async function read(
    view: Uint8Array | undefined,
  ): Promise<{ done: boolean; value: Uint8Array | undefined }> {
    hooks.beforeRead?.();
    try {
      if (byob) {
        const result = await byob.read(view ?? new Uint8Array(DEFAULT_READ));
        return { done: result.done, value: result.value };
      }
      const result = await plain!.read();
      return { done: result.done, value: result.value };
    } catch (cause) {
      throw hooks.readError ? hooks.readError(cause) : cause;
    }
  }

  if (plain) return tapChunks(hooks, read, finish, settle);
  const stream: ReadableStream<Uint8Array> = new ReadableStream({
    type: "bytes",
    async pull(controller) {
      unread.delete(stream);
      try {
        const request = controller.byobRequest;
        const view: Uint8Array | undefined = request?.view
          ? new Uint8Array(request.view.buffer, request.view.byteOffset, request.view.byteLength)
          : undefined;
        let target = view;
        for (;;) {
          // A BYOB read of the source moves the consumer's buffer into `value`.
          const { done, value } = await read(target);
          hooks.afterRead?.(done ? undefined : value);
          if (done) {
            finish();
            controller.close();
            // The source took the buffer: answer with the view it gave back.
            if (request && value) request.respondWithNewView(value);
            return;
          }
          const bytes = value!;
          // A byte stream may not carry empty chunks; read again (into the moved buffer) instead.
          if (bytes.byteLength === 0) {
            if (target) target = new Uint8Array(bytes.buffer, bytes.byteOffset, target.byteLength);
            continue;
          }
          if (request) request.respondWithNewView(bytes);
          else controller.enqueue(bytes);
          return;
        }
      } catch (error) {
        await settle.fail(controller, error);
      }
    },
    cancel: settle.cancel,
  }, { highWaterMark: 0 });
  return stream;
}

/** How both pass-throughs end: on a failure of the source or a hook, and when cancelled. */
interface Settle {
  fail(controller: { error(reason: unknown): void }, error: unknown): Promise<void>;
  cancel(reason: unknown): Promise<void>;
}

/** The pass-through for sources that are not byte streams. */
function tapChunks(
  hooks: ByteTapHooks,
  read: (view: undefined) => Promise<{ done: boolean; value: Uint8Array | undefined }>,
  finish: () => void,
  settle: Settle,
): ReadableStream<Uint8Array> {
  const stream: ReadableStream<Uint8Array> = new ReadableStream<Uint8Array>({
    async pull(controller) {
      unread.delete(stream);
      try {
        const { done, value } = await read(undefined);
        hooks.afterRead?.(done ? undefined : value);
        if (done) {
          finish();
          controller.close();
        } else controller.enqueue(value!);
      } catch (error) {
        await settle.fail(controller, error);
      }
    },
    cancel: settle.cancel,
  }, { highWaterMark: 0 });
  return stream;
}

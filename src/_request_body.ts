// A request's upload body, wrapped once for the way it is read. Storages and the platform's parser
// read a stream; the multipart reader reads the body directly and needs no stream of its own, which
// under Deno would survive every young-generation collection until a full one (docs/performance.md).

import { type ByteTapHooks, type HookedReader, hookedReader } from "./_byte_tap.ts";
import { idleTimeout, withIdleTimeout } from "./idle_body.ts";

/** The body of an upload or a multipart test, with the idle timeout applied however it is read. */
export class RequestBody {
  readonly #source: ReadableStream<Uint8Array> | null;
  readonly #idleMs: number;
  readonly #detachPieces: boolean;
  /** What cancels the body once reading it is set up. */
  #reading?: { cancel(reason?: unknown): Promise<void> };

  /**
   * @param source The request's body, or `null` when it has none.
   * @param idleMs How long a read may wait for bytes before the body fails as `body_incomplete`.
   * @param detachPieces Mark the pieces the body hands out whole as freeable (see _owned_bytes.ts).
   */
  constructor(source: ReadableStream<Uint8Array> | null, idleMs: number, detachPieces: boolean) {
    this.#source = source;
    this.#idleMs = idleMs;
    this.#detachPieces = detachPieces;
  }

  /** Whether the request has a body at all. */
  get present(): boolean {
    return this.#source !== null;
  }

  /** The body as a stream; `null` without a body. Call this or `reader` once. */
  stream(): ReadableStream<Uint8Array> | null {
    const stream = withIdleTimeout(this.#source, this.#idleMs, this.#detachPieces);
    this.#reading = stream ?? undefined;
    return stream;
  }

  /**
   * The body read directly, with `checks` run after the idle timer's around every read; `null`
   * without a body. Call this or `stream` once.
   */
  reader(checks: ByteTapHooks): HookedReader | null {
    if (this.#source === null) return null;
    const reader = hookedReader(this.#source, [idleTimeout(this.#idleMs), checks], this.#detachPieces);
    // The reader's own object, not a closure made here: under V8 15, a closure kept on a class
    // instance makes what its context holds survive young-generation collections (`deno task
    // bench:young`). With `(reason) => reader...cancel(reason)` kept instead, every request's
    // reader, its hooks and the multipart reader survived, 4.9-5.6 MiB over 512 chunks of 1 MiB
    // against 3.3-3.4 (docs/performance.md).
    this.#reading = reader.byob ?? reader.plain;
    return reader;
  }

  /** Cancels the body, however it is being read; errors are ignored. */
  async cancel(): Promise<void> {
    await (this.#reading ?? this.#source)?.cancel().catch(() => {});
  }
}

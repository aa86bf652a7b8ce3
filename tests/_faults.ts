// Faults injected into a storage's store: the storage tests pick which requests fail, the
// multi-process fixture (tests/fixtures/cluster_server.ts) fails them at random. The fixture also runs
// bundled under Bun and Node, so nothing here calls a Deno API.

/**
 * How a request fails: `"before"` it is sent (a refused connection), or `"after"` the store
 * answered (a reset connection: applied, its reply lost); `undefined` lets it through.
 */
export type Failure = "before" | "after" | undefined;

/** A `fetch` that fails the requests `fails` picks, as a network does. */
export function failingFetch(
  fails: (method: string, path: string, headers: Headers) => Failure,
  suffix = "",
): typeof fetch {
  return async (input, init) => {
    const failure = fails(init?.method ?? "GET", new URL(String(input)).pathname, new Headers(init?.headers));
    if (failure === "before") throw new TypeError(`error sending request: connection refused${suffix}`);
    const response = await fetch(input, init);
    if (failure === "after") {
      await response.body?.cancel();
      throw new TypeError(`error reading a body from connection: connection reset${suffix}`);
    }
    return response;
  };
}

/** Half of `probability` before the store gets it, half after; `undefined` otherwise. */
export function randomFailure(probability: number): Failure {
  const roll = Math.random();
  return roll < probability / 2 ? "before" : roll < probability ? "after" : undefined;
}

/**
 * `entries`, but a call of `next()` rejects with the error `fails` returns, as a listing of a
 * database that another process holds locked does. The cursor is the listing's own, so a listing
 * resumed from it goes on after the last entry read.
 */
export function failingListing<T>(
  entries: Deno.KvListIterator<T>,
  fails: () => Error | undefined,
): Deno.KvListIterator<T> {
  return {
    get cursor() {
      return entries.cursor;
    },
    next() {
      const error = fails();
      return error ? Promise.reject(error) : entries.next();
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  } as Deno.KvListIterator<T>;
}

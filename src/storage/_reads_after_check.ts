/**
 * Upload record reads begun alongside a completion check, for the record lookups that follow it
 * in the same request: the handler checks for completion, then looks the record up, for every chunk
 * and chunk test, and a store far away then costs one round trip for both instead of two.
 *
 * A lookup takes the newest read begun for its upload: its own request's, or a newer one's, so it is
 * as fresh as a read of its own a round trip ago. Only a read that found something is taken (the
 * first chunk may have created the record since one that found none), only within a second (a
 * stalled request must not act on an old read), and none that began before a removal in this
 * process ended (`forget`).
 *
 * @module
 */

const FRESH_MS = 1_000;
const MAX_KEYS = 1_000;

/** Reads of `T` begun by completion checks, by upload key. */
export class ReadsAfterCheck<T> {
  #reads = new Map<string, { read: Promise<T | undefined>; begun: number }>();

  /** Notes `read`, begun now for `key`, in place of any older one. */
  begin(key: string, read: Promise<T | undefined>): void {
    // A lookup that finds this read failed reads again; one never looked at must not fail the process.
    read.catch(() => {});
    if (this.#reads.size >= MAX_KEYS) this.#reads.clear();
    this.#reads.set(key, { read, begun: Date.now() });
  }

  /** What the newest fresh read of `key` found, else what `readNow` finds. */
  async take(key: string, readNow: () => Promise<T | undefined>): Promise<T | undefined> {
    const begun = this.#reads.get(key);
    if (begun && Date.now() - begun.begun <= FRESH_MS) {
      const found = await begun.read.catch(() => undefined);
      if (found !== undefined) return found;
    }
    return await readNow();
  }

  /** Drops the read of `key`: its upload completed, or a removal of it ended. */
  forget(key: string): void {
    this.#reads.delete(key);
  }
}

import { preciseNow } from "../_clock.ts";

export { preciseNow };

// How long the storages remember that an upload was removed (`UploadStorage.removedAt`): far longer
// than a chunk request takes from arriving to creating its upload record, short enough that the
// notes of cancelled uploads do not pile up.
export const REMOVAL_MEMORY_MS = 10 * 60 * 1000;

/** Removal times by upload key, forgetting those older than {@linkcode REMOVAL_MEMORY_MS}. */
export class RemovalLog {
  #times = new Map<string, number>();

  /** Notes that `key` is being removed now. */
  note(key: string, now = preciseNow()): void {
    // Kept in time order (re-inserted), so the old ones are all at the front.
    this.#times.delete(key);
    this.#times.set(key, now);
    for (const [oldest, at] of this.#times) {
      if (now - at <= REMOVAL_MEMORY_MS) break;
      this.#times.delete(oldest);
    }
  }

  /** When `key` was last removed, if within {@linkcode REMOVAL_MEMORY_MS}. */
  at(key: string, now = Date.now()): number | undefined {
    const at = this.#times.get(key);
    return at !== undefined && now - at <= REMOVAL_MEMORY_MS ? at : undefined;
  }
}

import { preciseNow } from "../_clock.ts";

export { preciseNow };

// How long the storages remember that an upload was removed (`UploadStorage.removedAt`): far longer
// than a chunk request takes from arriving to creating its upload record, short enough that the
// notes of cancelled uploads do not pile up.
export const REMOVAL_MEMORY_MS = 10 * 60 * 1000;

/** How often an instance deletes the notes of removals past their use, at most. */
export const PRUNE_EVERY_MS = 60_000;

/** Whether a removal noted `at` is past what `removedAt` tells. */
export function forgotten(at: number, now = Date.now()): boolean {
  return now - at > REMOVAL_MEMORY_MS;
}

/** `at` as `removedAt` tells it: when it is a time within {@linkcode REMOVAL_MEMORY_MS}, else nothing. */
export function recentRemoval(at: number | null | undefined, now = Date.now()): number | undefined {
  return typeof at === "number" && Number.isFinite(at) && !forgotten(at, now) ? at : undefined;
}

/** Removal times by upload key, forgetting those older than {@linkcode REMOVAL_MEMORY_MS}. */
export class RemovalLog {
  #times = new Map<string, number>();

  /** Notes that `key` is being removed now. */
  note(key: string, now = preciseNow()): void {
    // Kept in time order (re-inserted), so the old ones are all at the front.
    this.#times.delete(key);
    this.#times.set(key, now);
    for (const [oldest, at] of this.#times) {
      if (!forgotten(at, now)) break;
      this.#times.delete(oldest);
    }
  }

  /** When `key` was last removed, if within {@linkcode REMOVAL_MEMORY_MS}. */
  at(key: string, now = Date.now()): number | undefined {
    return recentRemoval(this.#times.get(key), now);
  }
}

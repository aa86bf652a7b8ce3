/**
 * Expiry of abandoned uploads. The clients send nothing when a user cancels or closes the tab
 * (docs/protocol.md §9), so chunks of uploads nobody finishes must be swept.
 *
 * @module
 */

import type { UploadStorage } from "./storage/types.ts";

/** Options of {@linkcode cleanupExpired}. */
export interface CleanupOptions {
  /** Remove uploads in progress whose last activity is older than this, in ms. */
  expireAfter: number;
  /** Remove completion records older than this, in ms (completed files stay). */
  completedExpireAfter: number;
  /** Uploads a request is working on right now; never removed. */
  isActive?: (key: string) => boolean;
  /** Called with the key of each upload removed. */
  onRemoved?: (key: string, completed: boolean) => void;
  /** The current time, in ms since the epoch. @default {Date.now()} */
  now?: number;
}

/** What one sweep did. */
export interface CleanupReport {
  /** Uploads in progress removed with their chunks. */
  expired: number;
  /** Completion records removed (their files stay). */
  completedExpired: number;
  /** Uploads looked at and kept. */
  kept: number;
}

/**
 * Removes uploads not touched for `expireAfter` and completion records older than
 * `completedExpireAfter`, and chunks a crash left beside a completed upload. Safe while uploads
 * run: activity includes every chunk byte written and every assembly lease renewal, and uploads
 * `isActive` reports are skipped. An upload that cannot be removed does not stop the sweep: the
 * others are removed, then the sweep fails with every error.
 *
 * @throws {TypeError} when the storage cannot list its uploads.
 * @throws {AggregateError} when some uploads could not be removed or cleaned (the others were).
 */
export async function cleanupExpired(
  storage: UploadStorage,
  options: CleanupOptions,
): Promise<CleanupReport> {
  if (typeof storage.listUploads !== "function") {
    throw new TypeError("Storage cannot list uploads (no listUploads()), so it cannot expire them");
  }
  const now = options.now ?? Date.now();
  const report: CleanupReport = { expired: 0, completedExpired: 0, kept: 0 };
  // One upload that keeps failing (a folder this process may not delete, a store that refuses one
  // key) must not keep every upload listed after it forever.
  const failures: unknown[] = [];
  const attempt = async (work: () => Promise<void>): Promise<boolean> => {
    try {
      await work();
      return true;
    } catch (error) {
      failures.push(error);
      return false;
    }
  };
  // Collect first: removing while a storage iterates its own listing is not part of the contract.
  const stale: { key: string; completed: boolean; lastActivity: number }[] = [];
  for await (const activity of storage.listUploads()) {
    const age = now - activity.lastActivity;
    const limit = activity.completed ? options.completedExpireAfter : options.expireAfter;
    if (age > limit && !options.isActive?.(activity.key)) {
      stale.push({ key: activity.key, completed: activity.completed, lastActivity: activity.lastActivity });
    } else {
      report.kept++;
      // A crash between publishing a file and deleting its chunks leaves chunks nobody needs.
      if (activity.completed && !options.isActive?.(activity.key)) {
        await attempt(() => storage.removeChunks(activity.key));
      }
    }
  }
  for (const { key, completed, lastActivity } of stale) {
    // Checked again right before removing: a request may have started since the listing, here or,
    // as the storage tells, in another process that stored chunks meanwhile. Removing it then
    // would delete chunks its client was told are stored.
    if (options.isActive?.(key)) {
      report.kept++;
      continue;
    }
    let since: number | undefined;
    if (!await attempt(async () => void (since = await storage.lastActivity?.(key)))) continue;
    if (since !== undefined && since > lastActivity) {
      report.kept++;
      continue;
    }
    if (!await attempt(async () => void await storage.removeUpload(key))) continue;
    options.onRemoved?.(key, completed);
    if (completed) report.completedExpired++;
    else report.expired++;
  }
  if (failures.length > 0) {
    const first = failures[0] instanceof Error ? failures[0].message : String(failures[0]);
    throw new AggregateError(
      failures,
      `The sweep removed ${report.expired + report.completedExpired} uploads, but ${failures.length} ` +
        `could not be removed or cleaned: ${first}`,
    );
  }
  return report;
}

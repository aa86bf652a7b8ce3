// Assembly claims of the file-system storage: `claim-<g>` files in an upload's folder, one per
// generation g, created with O_EXCL (one winner per generation); a claim's mtime is its last renewal.
import { errorCode, isMissing, readJson } from "./_fs_json.ts";
import { readdir, stat, utimes, writeText } from "./_fs_ops.ts";
import { joinPath } from "./_path.ts";
import type { Claim, Lease } from "./types.ts";

const CLAIM_NAME = /^claim-([1-9][0-9]*)$/;

/** The newest claim generation in `dir`, 0 when there is none. */
export async function newestClaim(dir: string): Promise<number> {
  let newest = 0;
  for (const name of await readdir(dir)) {
    const match = CLAIM_NAME.exec(name);
    if (match) newest = Math.max(newest, Number(match[1]));
  }
  return newest;
}

/** Takes the next generation in `dir` if the newest one has expired; one creator wins per generation. */
export async function takeClaim(dir: string, key: string, lease: Lease): Promise<Claim | undefined> {
  const newest = await newestClaim(dir);
  if (newest > 0) {
    // A claim lives for its own holder's ttl past its last renewal (the file's mtime). A claim
    // file still being written reads as unparsable and counts as live.
    const path = joinPath(dir, `claim-${newest}`);
    try {
      const { mtimeMs } = await stat(path);
      const held = await readJson<Lease>(path).catch(() => undefined);
      if (Date.now() - mtimeMs < (held?.ttlMs ?? lease.ttlMs)) return undefined;
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }
  const generation = newest + 1;
  try {
    await writeText(joinPath(dir, `claim-${generation}`), JSON.stringify(lease), true);
    return { key, owner: lease.owner, generation };
  } catch (error) {
    if (errorCode(error) === "EEXIST") return undefined;
    throw error;
  }
}

/** Dates the claim's renewal to now, or to the epoch when `release`; `false` once a newer one exists. */
export async function touchClaim(dir: string, claim: Claim, release = false): Promise<boolean> {
  if (await newestClaim(dir) !== claim.generation) return false;
  const when = release ? new Date(0) : new Date();
  await utimes(joinPath(dir, `claim-${claim.generation}`), when, when);
  return true;
}

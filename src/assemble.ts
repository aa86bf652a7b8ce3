/**
 * Exactly-once assembly: claim the upload, stream its chunks in order into the storage's commit,
 * then remove the chunks. Losers of the claim return at once; nobody waits on a lock.
 *
 * @module
 */

import { after } from "./_clock.ts";
import { concatLazily, expectTotalSize } from "./_concat.ts";
import type { Lease, StoredFile, UploadRecord, UploadStorage } from "./storage/types.ts";

/** Outcome of an assembly attempt. */
export type AssemblyResult =
  | { kind: "completed"; file: StoredFile }
  | { kind: "busy" };

/**
 * Assembles `record` from chunks `1..chunkCount` unless another live claim holds it. While
 * assembling, the claim is renewed every third of the lease so a slow but alive assembler is never
 * taken over. Resolves `busy` when someone else holds or won the claim.
 */
export async function assembleOnce(
  storage: UploadStorage,
  record: UploadRecord,
  chunkCount: number,
  leaseMs: number,
): Promise<AssemblyResult> {
  const lease: Lease = { owner: crypto.randomUUID(), ttlMs: leaseMs };
  const claim = await storage.claim(record.key, lease);
  if (!claim) return { kind: "busy" };
  const period = Math.max(1, Math.floor(leaseMs / 3));
  /** The renewal on its way, if any: one that lands after a release would revive the claim. */
  let renewing: Promise<unknown> = Promise.resolve();
  let stopRenewal = after(period, function renew() {
    renewing = storage.renewClaim(claim, lease).catch(() => {});
    stopRenewal = after(period, renew);
  });
  const release = async () => {
    stopRenewal();
    await renewing;
    await storage.releaseClaim?.(claim).catch(() => {});
  };
  try {
    const file: StoredFile = {
      id: record.fileId,
      name: record.fileName,
      size: record.totalSize,
      type: record.type,
      identifier: record.identifier,
      relativePath: record.relativePath,
      uploadKey: record.key,
      completedAt: Date.now(),
    };
    const stored = storage.commitChunks
      ? await storage.commitChunks(claim, chunkCount, file)
      : await storage.commit(
        claim,
        expectTotalSize(
          concatLazily(chunkCount, (index) => storage.openChunk(record.key, index)),
          record.totalSize,
        ),
        file,
      );
    if (!stored) {
      // Not published: another claimant won, the upload was completed, or its record is no longer
      // the one asked for (a request of a cancelled upload counted the chunks of the one begun
      // again). Whoever assembles next must not wait out this claim's lease.
      await release();
      return { kind: "busy" };
    }
    return { kind: "completed", file: stored };
  } catch (error) {
    // Let the client's retry (or any later request) assemble at once rather than after the lease.
    await release();
    throw error;
  } finally {
    stopRenewal();
  }
}

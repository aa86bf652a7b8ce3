// Exactly-once assembly (src/assemble.ts) when the upload it was asked for is no longer the one stored.
import assert from "node:assert/strict";
import { assembleOnce } from "../src/assemble.ts";
import { uploadKey } from "../src/identifier.ts";
import { MEMORY_AND_DISK } from "./_helpers.ts";
import { recordOf } from "./_storage_suite.ts";

for (const [name, make] of MEMORY_AND_DISK) {
  Deno.test(`assembly (${name}): a request of a cancelled upload that tries to assemble the one begun again leaves it to assemble at once`, async () => {
    const { storage, cleanup } = await make();
    try {
      const key = uploadKey("", crypto.randomUUID());
      const old = await storage.createUpload(recordOf(key));
      await storage.removeUpload(key);
      const again = await storage.createUpload(recordOf(key));
      await storage.putChunk(key, 1, new Blob(["xyz"]).stream(), { fileId: again.fileId });
      await storage.putChunk(key, 2, new Blob(["uvw"]).stream(), { fileId: again.fileId });
      // The old upload's request counted the new upload's chunks: its assembly must not publish them,
      // nor hold the upload for a lease.
      assert.deepEqual(await assembleOnce(storage, old, 2, 60_000), { kind: "busy" });
      const done = await assembleOnce(storage, again, 2, 60_000);
      assert.equal(done.kind, "completed");
      assert.equal(done.kind === "completed" && done.file.id, again.fileId);
      assert.equal(await new Response((await storage.openFile(again.fileId))!.body).text(), "xyzuvw");
    } finally {
      await cleanup();
    }
  });
}

for (const [name, make] of MEMORY_AND_DISK) {
  Deno.test(`assembly (${name}): a failed assembly's claim stays released though a renewal was on its way as it released it`, async () => {
    const { storage, cleanup } = await make();
    try {
      const key = uploadKey("", crypto.randomUUID());
      const record = await storage.createUpload(recordOf(key));
      await storage.putChunk(key, 1, new Blob(["xyz"]).stream(), { fileId: record.fileId });
      await storage.putChunk(key, 2, new Blob(["uvw"]).stream(), { fileId: record.fileId });
      // A store that answers slowly: the assembly fails while a renewal of its claim is on its way,
      // and that renewal lands a moment later.
      let renewalSent!: () => void;
      const sent = new Promise<void>((resolve) => renewalSent = resolve);
      let renewalLanded!: () => void;
      const landed = new Promise<void>((resolve) => renewalLanded = resolve);
      let answer!: () => void;
      const answered = new Promise<void>((resolve) => answer = resolve);
      const renew = storage.renewClaim.bind(storage);
      storage.renewClaim = async (claim, lease) => {
        renewalSent();
        await answered;
        try {
          return await renew(claim, lease);
        } finally {
          renewalLanded();
        }
      };
      const fail = async () => {
        await sent;
        setTimeout(answer, 20);
        throw new Error("the store failed");
      };
      if (storage.commitChunks) storage.commitChunks = fail;
      else storage.commit = fail;
      await assert.rejects(assembleOnce(storage, record, 2, 30), /the store failed/);
      await landed;
      // Another request may assemble at once, rather than hear "busy" until a revived lease runs out.
      assert.ok(
        await storage.claim(key, { owner: "the client's retry", ttlMs: 60_000 }),
        "the claim is free",
      );
    } finally {
      await cleanup();
    }
  });
}

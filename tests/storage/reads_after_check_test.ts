import assert from "node:assert/strict";
import { ReadsAfterCheck } from "../../src/storage/_reads_after_check.ts";

const never = () => Promise.reject(new Error("read again"));

Deno.test("a lookup takes the newest read a completion check began for its upload, and reads again otherwise", async () => {
  const reads = new ReadsAfterCheck<string>();
  reads.begin("a", Promise.resolve("older"));
  reads.begin("a", Promise.resolve("newer"));
  assert.equal(await reads.take("a", never), "newer");
  assert.equal(await reads.take("a", never), "newer", "taken by every lookup while fresh");
  assert.equal(await reads.take("b", () => Promise.resolve("own")), "own", "another upload's is not taken");
  reads.begin("c", Promise.resolve(undefined));
  assert.equal(
    await reads.take("c", () => Promise.resolve("own")),
    "own",
    "one that found nothing is not taken",
  );
  reads.begin("d", Promise.reject(new Error("lost")));
  assert.equal(await reads.take("d", () => Promise.resolve("own")), "own", "nor one that failed");
  reads.forget("a");
  assert.equal(await reads.take("a", () => Promise.resolve("own")), "own", "nor one forgotten");
});

Deno.test("a read a completion check began more than a second ago is not taken", async () => {
  const reads = new ReadsAfterCheck<string>();
  reads.begin("a", Promise.resolve("old"));
  await new Promise((resolve) => setTimeout(resolve, 1_050));
  assert.equal(await reads.take("a", () => Promise.resolve("own")), "own");
});

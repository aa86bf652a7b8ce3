import assert from "node:assert/strict";
import { after, preciseNow } from "../src/_clock.ts";
import { RemovalLog } from "../src/storage/_removals.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("after() fires each deadline once, earliest first, not before its time", async () => {
  const fired: [string, number][] = [];
  const start = performance.now();
  after(60, () => fired.push(["late", performance.now() - start]));
  after(20, () => fired.push(["early", performance.now() - start]));
  after(40, () => fired.push(["middle", performance.now() - start]));
  await sleep(200);
  assert.deepEqual(fired.map(([name]) => name), ["early", "middle", "late"]);
  for (const [name, at] of fired) {
    const due = { early: 20, middle: 40, late: 60 }[name]!;
    // Timers may fire a millisecond early by their own rounding; never a whole step early.
    assert.ok(at >= due - 2, `${name} fired at ${at.toFixed(1)} ms, due at ${due} ms`);
  }
});

Deno.test("after() never fires a cancelled deadline, and the others still fire", async () => {
  const fired: string[] = [];
  const cancelFirst = after(20, () => fired.push("cancelled"));
  after(30, () => fired.push("kept"));
  cancelFirst();
  await sleep(120);
  assert.deepEqual(fired, ["kept"]);
});

Deno.test("after() fires deadlines longer than its step, and ones added by a callback", async () => {
  const fired: string[] = [];
  // Longer than the 250 ms step the shared timer is armed for at most.
  after(400, () => {
    fired.push("long");
    after(10, () => fired.push("added"));
  });
  await sleep(600);
  assert.deepEqual(fired, ["long", "added"]);
});

Deno.test("after(): a callback that throws does not stop the deadlines due with it", async () => {
  const fired: string[] = [];
  const errors: unknown[] = [];
  const onError = (event: ErrorEvent) => {
    event.preventDefault();
    errors.push(event.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    after(20, () => {
      throw new Error("boom");
    });
    after(20, () => fired.push("second"));
    await sleep(120);
  } finally {
    globalThis.removeEventListener("error", onError);
  }
  assert.deepEqual(fired, ["second"]);
  assert.equal((errors[0] as Error)?.message, "boom");
});

Deno.test("preciseNow() follows the wall clock when it jumps: a machine that slept, a clock stepped back", () => {
  const realNow = Date.now;
  try {
    const before = preciseNow();
    assert.ok(Math.abs(before - realNow()) <= 100, "reads as the wall clock");
    // Eleven minutes pass while performance.now() stands still, as in a suspended machine.
    const slept = 11 * 60_000;
    Date.now = () => realNow() + slept;
    const woken = preciseNow();
    assert.ok(Math.abs(woken - Date.now()) <= 100, `${woken - Date.now()} ms from the wall clock`);
    const log = new RemovalLog();
    log.note("k", woken);
    assert.equal(log.at("k"), woken, "a removal noted after the sleep is remembered");
    Date.now = () => realNow() + slept - 60_000;
    const stepped = preciseNow();
    assert.ok(Math.abs(stepped - Date.now()) <= 100, `${stepped - Date.now()} ms from the wall clock`);
    // Between jumps it keeps the monotonic clock's precision and order.
    const [a, b] = [preciseNow(), preciseNow()];
    assert.ok(b >= a && b - a < 100);
  } finally {
    Date.now = realNow;
    preciseNow();
  }
});

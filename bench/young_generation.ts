/**
 * What survives V8's young-generation collections under Deno, and so grows its young generation
 * (docs/performance.md, "Memory with 1 MiB chunks"): `deno task bench:young`. Each kind of object is
 * made 20 000 times, one at a time and dropped at once, between the short-lived garbage a request
 * makes and with the microtasks it queued run, in a fresh `deno` with `--trace-gc-nvp`; the script
 * sums what the collections report. The reference is the same loop with plain objects, measured in
 * the same run.
 *
 * @module
 */

const KINDS = {
  "plain object (reference)": "sink = { i };",
  "Promise with a reaction": "const p = Promise.resolve(i); p.then(() => {}); sink = p;",
  "AbortController": "sink = new AbortController();",
  "WeakMap entry": "map.set({ i }, { v: [i] }); sink = i;",
  "ReadableStream": "sink = new ReadableStream();",
  "ReadableStream (bytes, with pull)":
    'sink = new ReadableStream({ type: "bytes", pull() {} }, { highWaterMark: 0 });',
  "ReadableStream whose pull holds 1 KB, left open":
    "const held = new Array(120).fill(i); sink = new ReadableStream({ pull() { held.length; } });",
  "ReadableStream whose pull holds 1 KB, closed":
    "const held = new Array(120).fill(i); sink = new ReadableStream({ start(c) { c.close(); }, pull() { held.length; } });",
  "WeakMap entry whose value reaches its key": "const key = { i }; map.set(key, { key }); sink = i;",
  "WritableStream": "sink = new WritableStream();",
  "class instance holding 1 KB": "const held = new Array(120).fill(i); sink = new Holder(held, false);",
  "class instance holding 1 KB and a closure over it":
    "const held = new Array(120).fill(i); sink = new Holder(held, true);",
  "object literal holding 1 KB and a closure over it":
    "const held = new Array(120).fill(i); sink = literal(held);",
} as const;

function program(make: string): string {
  return `const map = new WeakMap(); let sink;
class Holder {
  #held; #use;
  constructor(held, closure) { this.#held = held; if (closure) this.#use = () => held.length; }
}
function literal(held) { return { held, use: () => held.length }; }
for (let i = 0; i < 20000; i++) {
  ${make}
  for (let j = 0; j < 200; j++) sink = { j, k: [j, j] };
  // Runs the microtasks the object queued (a stream's start), as a server does between requests.
  await null;
  if (i % 100 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
}
globalThis.sink = sink;`;
}

interface Totals {
  collections: number;
  survived: number;
  promoted: number;
  largestYoung: number;
}

async function measure(make: string): Promise<Totals> {
  const file = await Deno.makeTempFile({ suffix: ".js" });
  try {
    await Deno.writeTextFile(file, program(make));
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--v8-flags=--trace-gc-nvp", file],
      stdout: "piped",
      stderr: "null",
    }).output();
    const totals: Totals = { collections: 0, survived: 0, promoted: 0, largestYoung: 0 };
    for (const match of new TextDecoder().decode(stdout).matchAll(/\{"pause"[^}]*\}/g)) {
      const gc = JSON.parse(match[0].replaceAll("\n", " "));
      if (gc.gc !== "s") continue;
      totals.collections++;
      totals.survived += gc.new_space_survived;
      totals.promoted += gc.promoted;
      totals.largestYoung = Math.max(totals.largestYoung, gc.new_space_capacity);
    }
    return totals;
  } finally {
    await Deno.remove(file);
  }
}

const KiB = 1024;
const rows: string[] = [];
let reference: Totals | undefined;
for (const [name, make] of Object.entries(KINDS)) {
  const t = await measure(make);
  reference ??= t;
  rows.push(
    `| ${name} | ${t.collections} | ${Math.round(t.survived / KiB)} | ${Math.round(t.promoted / KiB)} | ` +
      `${(t.survived / Math.max(reference.survived, 1)).toFixed(1)}× | ${t.largestYoung / KiB} |`,
  );
}
console.log(
  [
    `Deno ${Deno.version.deno}, V8 ${Deno.version.v8}: 20 000 objects of each kind, each dropped at once`,
    "",
    "| made and dropped | young collections | survived KiB | promoted KiB | survived × reference | largest young generation KiB |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows,
  ].join("\n"),
);

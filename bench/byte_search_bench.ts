// `deno task bench:search`: the multipart reader's delimiter search over 256 KiB of random file data (one
// network read into its buffer), four interleaved lanes against one.
import { indexOf, indexOfOneLane, needleOf } from "../src/_byte_search.ts";

const haystack = new Uint8Array(256 * 1024);
for (let at = 0; at < haystack.length; at += 65_536) {
  crypto.getRandomValues(haystack.subarray(at, at + 65_536));
}
// The boundary Chrome sends, after the CRLF and dashes that start a delimiter.
const delimiter = needleOf("\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW");

Deno.bench("one lane", { group: "search 256 KiB", baseline: true }, () => {
  if (indexOfOneLane(haystack, delimiter, 0) !== -1) throw new Error("found a delimiter in random data");
});

Deno.bench("four lanes", { group: "search 256 KiB" }, () => {
  if (indexOf(haystack, delimiter, 0) !== -1) throw new Error("found a delimiter in random data");
});

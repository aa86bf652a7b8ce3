import assert from "node:assert/strict";
import { paramSource, readParams } from "../src/params.ts";

Deno.test("readParams() recognises resumable.js and flow.js parameters by name", () => {
  const resumable = readParams(
    paramSource(new URL("http://x/?resumableIdentifier=a&resumableChunkNumber=2")),
    {
      namespace: "",
    },
  );
  assert.equal(resumable.dialect, "resumable");
  assert.equal(resumable.chunkNumber, "2");
  const flow = readParams(paramSource(new URL("http://x/?flowIdentifier=b&flowChunkNumber=3")), {
    namespace: "",
  });
  assert.equal(flow.dialect, "flow");
  assert.equal(flow.identifier, "b");
  assert.equal(flow.chunkNumber, "3");
});

Deno.test("readParams() reads the query string first, then form fields", () => {
  const form = new FormData();
  form.set("flowIdentifier", "from-form");
  form.set("flowChunkNumber", "7");
  const params = readParams(paramSource(new URL("http://x/?flowIdentifier=from-query"), form), {
    namespace: "",
  });
  assert.equal(params.identifier, "from-query");
  assert.equal(params.chunkNumber, "7");
});

Deno.test("readParams() ignores file parts where a parameter is expected", () => {
  const form = new FormData();
  form.set("resumableIdentifier", new Blob(["x"]), "x");
  assert.equal(readParams(paramSource(new URL("http://x/"), form), { namespace: "" }).identifier, undefined);
});

Deno.test("readParams() applies resumable.js parameterNamespace and custom names", () => {
  const url = new URL("http://x/?up_resumableIdentifier=a&up_resumableChunkNumber=1");
  assert.equal(readParams(paramSource(url), { namespace: "up_" }).identifier, "a");
  const custom = readParams(paramSource(new URL("http://x/?id=z&n=4")), {
    namespace: "",
    custom: {
      chunkNumber: "n",
      chunkSize: "cs",
      currentChunkSize: "ccs",
      totalSize: "ts",
      type: "t",
      identifier: "id",
      fileName: "fn",
      relativePath: "rp",
      totalChunks: "tc",
    },
  });
  assert.equal(custom.identifier, "z");
  assert.equal(custom.chunkNumber, "4");
});

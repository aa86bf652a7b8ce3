// The same example server under Bun (examples/bun_server.ts): one multipart and one octet upload per
// client, and the kill-and-restart case, in headless Chromium.
import { otherRuntimeCases } from "./_cases.ts";

otherRuntimeCases("bun", 71);

import assert from "node:assert/strict";
import { signRequest, uriEncode } from "../../src/storage/_sigv4.ts";

Deno.test("signRequest reproduces the AWS documentation's GET Object example signature", async () => {
  // https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html ("GET Object")
  const headers = new Headers({ range: "bytes=0-9" });
  await signRequest({
    method: "GET",
    url: new URL("https://examplebucket.s3.amazonaws.com/test.txt"),
    headers,
    region: "us-east-1",
    credentials: {
      accessKeyId: "AKIAIOSFODNN7EXAMPLE",
      secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    },
    payloadHash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    date: new Date("2013-05-24T00:00:00Z"),
  });
  assert.equal(
    headers.get("authorization"),
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
      "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, " +
      "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
  );
});

Deno.test("signRequest sends the session token of temporary credentials and signs it", async () => {
  const headers = new Headers();
  await signRequest({
    method: "PUT",
    url: new URL("https://b.s3.amazonaws.com/k"),
    headers,
    region: "us-east-1",
    credentials: { accessKeyId: "a", secretAccessKey: "s", sessionToken: "tok" },
  });
  assert.equal(headers.get("x-amz-security-token"), "tok");
  assert.match(headers.get("authorization")!, /SignedHeaders=[^,]*x-amz-security-token/);
  assert.equal(headers.get("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
});

Deno.test("uriEncode encodes all but unreserved characters, and keeps slashes only when asked", () => {
  assert.equal(uriEncode("a b/ü~*"), "a%20b%2F%C3%BC~%2A");
  assert.equal(uriEncode("a b/ü~*", true), "a%20b/%C3%BC~%2A");
});

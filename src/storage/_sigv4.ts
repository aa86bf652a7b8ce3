// AWS Signature Version 4 over `crypto.subtle`, enough for S3 (header auth, no presigning).
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html

/** Access keys of an S3 account or API token. */
export interface S3Credentials {
  /** Access key id. */
  accessKeyId: string;
  /** Secret access key. */
  secretAccessKey: string;
  /** Session token of temporary credentials (STS), sent as `x-amz-security-token`. */
  sessionToken?: string;
}

/** Credentials with the moment they stop working, as providers of temporary credentials return them. */
export interface ExpiringS3Credentials extends S3Credentials {
  /** When the credentials expire; absent for credentials that do not. */
  expiration?: Date;
}

/**
 * A function that returns credentials, such as the providers of `@aws-sdk/credential-providers`
 * (`fromNodeProviderChain()`, `fromTemporaryCredentials()`): for roles whose keys rotate.
 */
export type S3CredentialProvider = () => ExpiringS3Credentials | Promise<ExpiringS3Credentials>;

/** What to sign. `headers` gains `x-amz-date`, `x-amz-content-sha256` and `authorization`. */
export interface SignInput {
  method: string;
  url: URL;
  headers: Headers;
  region: string;
  credentials: S3Credentials;
  /** Hex SHA-256 of the body; S3 accepts `UNSIGNED-PAYLOAD`, which spares hashing every byte. */
  payloadHash?: string;
  date?: Date;
}

const encoder = new TextEncoder();

function hex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function hmac(key: ArrayBuffer | Uint8Array, text: string): Promise<ArrayBuffer> {
  const cryptoKey = await crypto.subtle.importKey(
    "raw",
    key as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(text));
}

/** Hex SHA-256 of a string or bytes. */
export async function sha256Hex(data: string | Uint8Array): Promise<string> {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return hex(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

/** RFC 3986 encoding as SigV4 wants it: everything but unreserved characters, `/` optional. */
export function uriEncode(text: string, keepSlash = false): string {
  let out = "";
  for (const byte of encoder.encode(text)) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function canonicalQuery(url: URL): string {
  return [...url.searchParams]
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort(([a, x], [b, y]) => a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0)
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
}

function amzDate(date: Date): string {
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/** Adds SigV4 authentication headers to `input.headers` for S3. */
export async function signRequest(input: SignInput): Promise<void> {
  const { method, url, headers, region, credentials } = input;
  const stamp = amzDate(input.date ?? new Date());
  const day = stamp.slice(0, 8);
  const payloadHash = input.payloadHash ?? "UNSIGNED-PAYLOAD";
  headers.set("x-amz-date", stamp);
  headers.set("x-amz-content-sha256", payloadHash);
  if (credentials.sessionToken) headers.set("x-amz-security-token", credentials.sessionToken);
  const signed = new Map<string, string>([["host", url.host]]);
  for (const [name, value] of headers) signed.set(name.toLowerCase(), value.trim().replace(/\s+/g, " "));
  const names = [...signed.keys()].sort();
  const canonical = [
    method,
    url.pathname, // already encoded once by the caller, as S3 expects (no double encoding)
    canonicalQuery(url),
    names.map((name) => `${name}:${signed.get(name)}\n`).join(""),
    names.join(";"),
    payloadHash,
  ].join("\n");
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", stamp, scope, await sha256Hex(canonical)].join("\n");
  let key = await hmac(encoder.encode(`AWS4${credentials.secretAccessKey}`), day);
  for (const part of [region, "s3", "aws4_request"]) key = await hmac(key, part);
  const signature = hex(await hmac(key, toSign));
  headers.set(
    "authorization",
    `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${
      names.join(";")
    }, Signature=${signature}`,
  );
}

// Credentials for each request: fixed ones, or a provider's, reused while they stay fresh.
import type { ExpiringS3Credentials, S3CredentialProvider, S3Credentials } from "./_sigv4.ts";

/**
 * How long before their expiration credentials are asked for again: a request signed with them
 * may be sent again for a while (retries), and a clock may be off.
 */
const REFRESH_BEFORE_MS = 5 * 60_000;

function checked(credentials: ExpiringS3Credentials): ExpiringS3Credentials {
  if (typeof credentials?.accessKeyId !== "string" || typeof credentials.secretAccessKey !== "string") {
    throw new TypeError("The S3 credential provider returned no accessKeyId and secretAccessKey");
  }
  return credentials;
}

/**
 * A function that resolves the credentials to sign a request with. A provider's are reused until
 * five minutes before their `expiration`; without one, it is asked for every request (it may cache
 * them itself). Requests that ask while it is being asked wait for that answer.
 */
export function credentialSource(
  credentials: S3Credentials | S3CredentialProvider,
): () => Promise<S3Credentials> {
  if (typeof credentials !== "function") {
    const fixed = Promise.resolve(credentials);
    return () => fixed;
  }
  let current: ExpiringS3Credentials | undefined;
  let asking: Promise<ExpiringS3Credentials> | undefined;
  const fresh = (held: ExpiringS3Credentials) =>
    held.expiration !== undefined && held.expiration.getTime() - Date.now() > REFRESH_BEFORE_MS;
  return async () => {
    if (current && fresh(current)) return current;
    asking ??= (async () => {
      try {
        return current = checked(await credentials());
      } finally {
        asking = undefined;
      }
    })();
    return await asking;
  };
}

// Deleting many objects: DeleteObjects requests of up to 1000 keys each, and one DELETE per key
// where a store does not take those, or for the keys a batch reports it could not delete.
import { contentMd5 } from "./_md5.ts";
import { eachLimited, escapeXml, type S3Client, xmlValues } from "./_s3_client.ts";

/** The most keys S3 takes in one DeleteObjects request. */
const DELETE_BATCH = 1000;
/** DeleteObjects requests in flight at once. */
const BATCH_CONCURRENCY = 2;
/** Single DELETEs in flight at once. */
const DELETE_CONCURRENCY = 8;
/**
 * What a store that does not implement DeleteObjects answers it: 501 NotImplemented, 405
 * MethodNotAllowed, or 400 for a request it cannot make sense of. AWS also answers 400
 * RequestTimeout to a body that came too slowly: that batch goes key by key, the next batches not.
 */
const NOT_TAKEN = new Set([400, 405, 501]);
const PASSING = new Set(["RequestTimeout"]);

/** Deletes objects of one bucket, a missing one counting as deleted. */
export class S3Deleter {
  #client: S3Client;
  /** Cleared once the store answers a DeleteObjects request as one it does not take. */
  #batches = true;

  constructor(client: S3Client) {
    this.#client = client;
  }

  /** Deletes `keys`; throws if one could not be deleted. */
  async delete(keys: string[]): Promise<void> {
    let single = keys;
    if (this.#batches && keys.length > 1) {
      single = [];
      const batches: string[][] = [];
      for (let i = 0; i < keys.length; i += DELETE_BATCH) batches.push(keys.slice(i, i + DELETE_BATCH));
      await eachLimited(batches, BATCH_CONCURRENCY, async (batch) => {
        single.push(...(this.#batches ? await this.#deleteBatch(batch) : batch));
      });
    }
    await eachLimited(single, DELETE_CONCURRENCY, (key) => this.#deleteOne(key));
  }

  /** One quiet DeleteObjects request; resolves the keys it did not delete. */
  async #deleteBatch(keys: string[]): Promise<string[]> {
    const objects = keys.map((key) => `<Object><Key>${escapeXml(key)}</Key></Object>`).join("");
    const body = new TextEncoder().encode(
      `<?xml version="1.0" encoding="UTF-8"?>\n` +
        `<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>${objects}</Delete>`,
    );
    const response = await this.#client.send("POST", "", {
      query: { delete: "" },
      // S3 refuses a DeleteObjects request without a digest of its body.
      headers: { "content-type": "application/xml", "content-md5": contentMd5(body) },
      body,
      // Deleting a deleted key succeeds, so the request can be sent again.
      idempotent: true,
    });
    if (!response.ok) {
      const code = xmlValues(await response.text().catch(() => ""), "Code")[0] ?? "";
      if (NOT_TAKEN.has(response.status) && !PASSING.has(code)) this.#batches = false;
      return keys;
    }
    const xml = await response.text();
    // Anything but a DeleteResult says nothing of which keys went: each is deleted on its own.
    if (!xml.includes("<DeleteResult")) return keys;
    // Quiet mode lists only the keys the store failed to delete, each in an <Error>.
    return xmlValues(xml, "Error").flatMap((error) => xmlValues(error, "Key"));
  }

  async #deleteOne(key: string): Promise<void> {
    const response = await this.#client.send("DELETE", key);
    await response.body?.cancel();
    if (!response.ok && response.status !== 404) await this.#client.fail("DELETE", key, response);
  }
}

import { FileSystemStorage } from "../../src/storage/fs.ts";
import { storageSuite } from "../_storage_suite.ts";

storageSuite("FileSystemStorage", async () => {
  const directory = await Deno.makeTempDir({ prefix: "resumable-fs-" });
  return {
    storage: new FileSystemStorage({ directory }),
    cleanup: () => Deno.remove(directory, { recursive: true }),
  };
});

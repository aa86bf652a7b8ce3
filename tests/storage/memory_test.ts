import { MemoryStorage } from "../../src/storage/memory.ts";
import { storageSuite } from "../_storage_suite.ts";

storageSuite(
  "MemoryStorage",
  () => Promise.resolve({ storage: new MemoryStorage(), cleanup: () => Promise.resolve() }),
);

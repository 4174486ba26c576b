/**
 * openStore(url): the one way drivers and the command line get a `Store` (store.ts).
 *   "sqlite:PATH"                         → SqliteStore on that file (directory created if missing)
 *   "postgres://..." / "postgresql://..." → PostgresStore on that database (schema created if missing)
 *   "memory:"                             → a MemoryStore on a new, empty MemoryDatabase
 * Anything else is refused with StoreError EINVAL naming the problem, before any I/O.
 *
 * Guarantees: the returned store is open and its schema exists; a failure to reach or create it is
 * StoreError EIO. Engines are loaded on first use, so a SQLite user never loads `pg` and vice versa.
 * Relies on: parseStoreUrl for validation, each engine's own open for the rest.
 */
import { MemoryStore } from "./memory.js";
import { parseStoreUrl, type Store } from "./store.js";

export async function openStore(url: string): Promise<Store> {
  const parsed = parseStoreUrl(url);
  switch (parsed.kind) {
    case "sqlite": {
      const { SqliteStore } = await import("./sqlite.js");
      return SqliteStore.open(parsed.path);
    }
    case "postgres": {
      const { PostgresStore } = await import("./postgres.js");
      return PostgresStore.open(parsed.connectionString);
    }
    case "memory":
      return new MemoryStore();
  }
}

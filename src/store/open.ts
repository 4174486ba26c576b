/**
 * openStore(url): the one way drivers and the command line get a `Store` (store.ts).
 *   "sqlite:PATH"                         → SqliteStore on that file (directory created if missing)
 *   "postgres://..." / "postgresql://..." → PostgresStore on that database (schema created if missing)
 *   "memory:"                             → a MemoryStore on a new, empty MemoryDatabase
 * Anything else is refused with StoreError EINVAL naming the problem, before any I/O.
 *
 * Guarantees: the returned store is open and its schema exists; a failure to reach or create it is
 * StoreError EIO. Engines are loaded on first use, so a SQLite user never loads `pg` and vice versa. The
 * drivers are optional peer dependencies of the package (a client-only install has neither): a missing one
 * is StoreError EINVAL naming the package to install.
 * Relies on: parseStoreUrl for validation, each engine's own open for the rest.
 */
import { MemoryStore } from "./memory.js";
import { parseStoreUrl, StoreError, type Store } from "./store.js";

export async function openStore(url: string): Promise<Store> {
  const parsed = parseStoreUrl(url);
  switch (parsed.kind) {
    case "sqlite": {
      const { SqliteStore } = await importEngine(() => import("./sqlite.js"), "better-sqlite3", "an SQLite store");
      return SqliteStore.open(parsed.path);
    }
    case "postgres": {
      const { PostgresStore } = await importEngine(() => import("./postgres.js"), "pg", "a PostgreSQL store");
      return PostgresStore.open(parsed.connectionString);
    }
    case "memory":
      return new MemoryStore();
  }
}

/** Imports a store engine; its driver package missing is EINVAL naming the package (an optional peer dependency). */
async function importEngine<T>(load: () => Promise<T>, driver: string, what: string): Promise<T> {
  try {
    return await load();
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if ((e.code === "ERR_MODULE_NOT_FOUND" || e.code === "MODULE_NOT_FOUND") && e.message.includes(`'${driver}'`)) {
      throw new StoreError(
        "EINVAL",
        `${what} needs the "${driver}" package, an optional peer dependency of keylock: ` +
          `install it next to keylock (npm install ${driver})`,
        { cause: error },
      );
    }
    throw error;
  }
}

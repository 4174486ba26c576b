/**
 * Scratch PostgreSQL databases for tests, on the server this machine kind provides (127.0.0.1:5432, trust
 * auth, user postgres). `scratchDatabase()` creates `keylock_test_<prefix>_<hex>` and returns its URL and a
 * `drop()` (leftover connections terminated first), or the reason the server could not be reached.
 * Callers skip with that reason, except under CI=true, where an unreachable server must fail a test
 * (`requirePostgresUnderCi`).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import pg from "pg";

export const PG_SERVER = "127.0.0.1:5432";
const ADMIN_URL = `postgres://postgres@${PG_SERVER}/postgres`;
const CONNECT_TIMEOUT_MS = 2000;

export async function withPgAdmin<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  client.on("error", () => {}); // a connection dropped under us surfaces on the next query instead
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export type Scratch = { url: string; name: string; drop(): Promise<void> } | { unreachable: string };

export async function scratchDatabase(prefix: string): Promise<Scratch> {
  const name = `keylock_test_${prefix}_${randomBytes(6).toString("hex")}`;
  try {
    await withPgAdmin(ADMIN_URL, (c) => c.query(`CREATE DATABASE ${name}`));
  } catch (error) {
    const why = error instanceof Error ? error.message || error.constructor.name : String(error);
    return { unreachable: `PostgreSQL not reachable at ${PG_SERVER}: ${why}` };
  }
  return {
    name,
    url: `postgres://postgres@${PG_SERVER}/${name}`,
    drop: () =>
      withPgAdmin(ADMIN_URL, async (c) => {
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [name]);
        await c.query(`DROP DATABASE IF EXISTS ${name}`);
      }),
  };
}

/** Prints the reason; under CI=true registers a failing test named `title`, since there the server must be there. */
export function reportUnreachable(reason: string, title: string): void {
  console.log(`# ${reason}`);
  if (process.env.CI === "true") test(`${title} (required when CI=true)`, () => assert.fail(reason));
}

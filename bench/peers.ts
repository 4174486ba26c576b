/**
 * The peers of DESIGN §7, through their real client libraries (dev dependencies of the benchmark only):
 *  - redlock 5 (one Redis instance, through ioredis): retryDelay 1 ms, retryJitter 1 ms, retryCount -1
 *    (never gives up): the "redlock (1 ms retry)". It polls: a waiter learns of a release only
 *    when its next retry lands.
 *  - redis-semaphore's Mutex (ioredis): retryInterval 1 ms, no refresh timer; also polls.
 *  - PostgreSQL session advisory locks through pg: `pg_advisory_lock($1)` / `pg_advisory_unlock($1)`,
 *    one connection per lock client (PostgreSQL queues waiters itself: no polling).
 * Every peer lock client is one connection. Only 127.0.0.1 is used (Redis 6379, PostgreSQL 5432, database
 * `test`, user postgres by default; KEYLOCK_BENCH_PG_URL overrides). `peerReachable` says in 2 s why a
 * peer cannot be measured, and the bench prints "not measured: <why>".
 */
import { Redis } from "ioredis";
import Redlock from "redlock";
import { Mutex } from "redis-semaphore";
import pg from "pg";

export type PeerSystem = "redlock" | "semaphore" | "pg";
export const PEER_SYSTEMS: readonly PeerSystem[] = ["redlock", "semaphore", "pg"];
export const PEER_LABELS: Record<PeerSystem, string> = {
  redlock: "redlock (1 ms retry)",
  semaphore: "redis-semaphore",
  pg: "pg advisory",
};

const HOST = "127.0.0.1";
const REDIS_PORT = 6379;
const PG_URL = process.env.KEYLOCK_BENCH_PG_URL ?? `postgres://postgres@${HOST}:5432/test`;
const CONNECT_TIMEOUT_MS = 2000;
const LOCK_TTL_MS = 30_000;
const RETRY_MS = 1;

/** One lock client of a peer: acquire a key (exclusive), get back its release. */
export interface PeerClient {
  lock(key: string): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

async function openRedis(): Promise<Redis> {
  const redis = new Redis({
    host: HOST,
    port: REDIS_PORT,
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  redis.on("error", () => undefined); // surfaced by the next command instead
  await redis.connect();
  return redis;
}

async function openRedlock(): Promise<PeerClient> {
  const redis = await openRedis();
  const redlock = new Redlock([redis], { retryCount: -1, retryDelay: RETRY_MS, retryJitter: RETRY_MS });
  redlock.on("error", () => undefined); // a failed attempt on a held key is normal while polling
  return {
    async lock(key) {
      const lock = await redlock.acquire([key], LOCK_TTL_MS);
      return async () => {
        await lock.release();
      };
    },
    close: () => Promise.resolve(redis.disconnect()),
  };
}

async function openSemaphore(): Promise<PeerClient> {
  const redis = await openRedis();
  return {
    async lock(key) {
      const mutex = new Mutex(redis, key, {
        lockTimeout: LOCK_TTL_MS,
        acquireTimeout: 10 * LOCK_TTL_MS,
        retryInterval: RETRY_MS,
        refreshInterval: 0,
      });
      await mutex.acquire();
      return () => mutex.release();
    },
    close: () => Promise.resolve(redis.disconnect()),
  };
}

/** A 63-bit advisory lock id for a key string (FNV-1a 64, top bit cleared). */
function advisoryId(key: string): string {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < key.length; i++) {
    h ^= BigInt(key.charCodeAt(i));
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return (h & 0x7fffffffffffffffn).toString();
}

function pgClient(): pg.Client {
  return new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
}

async function openPg(): Promise<PeerClient> {
  const client = pgClient();
  client.on("error", () => undefined);
  await client.connect();
  return {
    async lock(key) {
      const id = advisoryId(key);
      await client.query("SELECT pg_advisory_lock($1)", [id]);
      return async () => {
        const result = await client.query<{ ok: boolean }>("SELECT pg_advisory_unlock($1) AS ok", [id]);
        if (result.rows[0]?.ok !== true) throw new Error(`pg advisory unlock of ${key} returned false`);
      };
    },
    close: () => client.end().catch(() => undefined),
  };
}

export function openPeer(system: PeerSystem): Promise<PeerClient> {
  return system === "pg" ? openPg() : system === "redlock" ? openRedlock() : openSemaphore();
}

/**
 * Whether the peer answers within 2 s, and how many lock clients (connections) it accepts now, at most
 * `wanted`: null when reachable with room for all, else a number or the reason it cannot be measured.
 */
export async function peerReachable(system: PeerSystem, wanted: number): Promise<{ ok: true; clients: number } | { ok: false; reason: string }> {
  const timeout = <T>(p: Promise<T>): Promise<T> =>
    Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS).unref())]);
  try {
    if (system !== "pg") {
      const redis = await timeout(openRedis());
      try {
        const pong = await timeout(redis.ping());
        if (pong !== "PONG") throw new Error(`PING answered ${JSON.stringify(pong)}`);
      } finally {
        redis.disconnect();
      }
      return { ok: true, clients: wanted };
    }
    const client = pgClient();
    client.on("error", () => undefined);
    try {
      await timeout(client.connect());
      const result = await timeout(
        client.query<{ max: string; used: string }>(
          "SELECT current_setting('max_connections') AS max, (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used",
        ),
      );
      // Our probe closes before the load starts; keep a few connections spare for others.
      const room = Number(result.rows[0]!.max) - Number(result.rows[0]!.used) - 5;
      if (room < 1) return { ok: false, reason: `postgres ${PG_URL}: no connections left (max_connections)` };
      return { ok: true, clients: Math.min(wanted, room) };
    } finally {
      await client.end().catch(() => undefined);
    }
  } catch (error) {
    const where = system === "pg" ? `postgres ${PG_URL}` : `redis ${HOST}:${REDIS_PORT}`;
    return { ok: false, reason: `${where}: ${error instanceof Error ? error.message : String(error)}` };
  }
}

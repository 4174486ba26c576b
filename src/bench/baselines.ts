/**
 * Peer baselines for DESIGN §7, measured in the same run as keylock's rows (src/bench/run.ts):
 *
 *  - "Redis SET NX lock (redlock algorithm, 1 instance)": what redlock does against one Redis server.
 *    acquire = `SET key token NX PX 10000`; on failure retry after 200 ms + random jitter up to 200 ms
 *    (redlock's defaults, retryCount large enough never to give up inside the test); release = `EVAL` of
 *    the compare-and-delete script. Spoken to with a minimal RESP client over node:net (no pipelining).
 *  - PostgreSQL session advisory locks: `SELECT pg_advisory_lock($1)` / `SELECT pg_advisory_unlock($1)`
 *    with one pg.Client per lock client.
 *
 * For each: (a) serial acquire+release with 1 client, in this process; (b) 8 clients on one key as
 * 4 worker processes × 2 clients, like keylock's hot-key row; (c) 64 clients on fresh keys as 4 worker
 * processes × 16 clients (fewer PostgreSQL connections if the server does not allow 64, and the row says so).
 *
 * This file is also the worker: run with one JSON job in argv[2], it prints one JSON result line.
 * Only 127.0.0.1 is used. A service that does not answer within 2 s is reported "not measured: <reason>".
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Socket } from "node:net";
import { resolve as resolvePath } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { nowUs, percentile } from "./stats.js";

const HOST = "127.0.0.1";
const REDIS_PORT = 6379;
const PG_PORT = 5432;
const CONNECT_TIMEOUT_MS = 2000;
/** Per-command timeout once connected, so a stuck service cannot hang the bench. */
const COMMAND_TIMEOUT_MS = 10_000;
const REDIS_TTL_MS = 10_000;
/** redlock defaults: retryDelay 200 ms, plus random jitter up to 200 ms. */
const RETRY_DELAY_MS = 200;
const RETRY_JITTER_MS = 200;
/** Large enough that no acquire gives up within a benchmark (≥ 200 s of retrying). */
const RETRY_COUNT = 1000;
const RELEASE_SCRIPT = 'if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) else return 0 end';
const PG_HOT_KEY = 0x6b6c_0001n;
const PG_FRESH_BASE = 0x6b6c_0000_0000n;
const WORKERS = 4;
const HOT_CLIENTS_PER_WORKER = 2;
const FRESH_CLIENTS = 64;
/** Time between spawning workers and their common start, for connecting. */
const START_LEAD_MS = 2000;
/** Slack after the nominal end before a worker is killed. */
const WORKER_SLACK_MS = 20_000;
const SAMPLE_EVERY = 4;
const SAMPLES_MAX = 20_000;

export const REDIS_LOCK_NAME = "Redis SET NX lock (redlock algorithm, 1 instance)";
export const PG_LOCK_NAME = "PostgreSQL advisory lock (pg_advisory_lock/unlock)";

// ---------------------------------------------------------------------------------------------------------
// Minimal RESP client.

type RespValue = string | number | null | RespValue[] | RespError;

class RespError extends Error {}

/** Parses one RESP value at `offset`; undefined if the buffer does not hold all of it yet. */
function parseResp(buf: Buffer, offset: number): { value: RespValue; next: number } | undefined {
  const eol = buf.indexOf("\r\n", offset);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[offset]!);
  const line = buf.toString("utf8", offset + 1, eol);
  const after = eol + 2;
  switch (type) {
    case "+":
      return { value: line, next: after };
    case "-":
      return { value: new RespError(line), next: after };
    case ":":
      return { value: Number(line), next: after };
    case "$": {
      const length = Number(line);
      if (length < 0) return { value: null, next: after };
      if (buf.length < after + length + 2) return undefined;
      return { value: buf.toString("utf8", after, after + length), next: after + length + 2 };
    }
    case "*": {
      const length = Number(line);
      if (length < 0) return { value: null, next: after };
      const items: RespValue[] = [];
      let next = after;
      for (let i = 0; i < length; i++) {
        const item = parseResp(buf, next);
        if (item === undefined) return undefined;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      throw new Error(`RESP: unexpected type byte ${JSON.stringify(type)}`);
  }
}

function encodeResp(args: string[]): string {
  let out = `*${args.length}\r\n`;
  for (const arg of args) out += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
  return out;
}

class RespClient {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly pending: { resolve: (v: RespValue) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  private failure: Error | null = null;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (error) => this.fail(error));
    socket.on("close", () => this.fail(new Error("redis connection closed")));
  }

  static open(port: number, timeoutMs: number): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no answer from ${HOST}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.connect(port, HOST, () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new RespClient(socket));
      });
    });
  }

  command(...args: string[]): Promise<RespValue> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`redis: no reply to ${args[0]} in ${COMMAND_TIMEOUT_MS} ms`)), COMMAND_TIMEOUT_MS);
      this.pending.push({ resolve, reject, timer });
      this.socket.write(encodeResp(args));
    });
  }

  close(): void {
    this.failure ??= new Error("redis connection closed by us");
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    let offset = 0;
    for (;;) {
      const parsed = offset < this.buffer.length ? parseResp(this.buffer, offset) : undefined;
      if (parsed === undefined) break;
      offset = parsed.next;
      const waiter = this.pending.shift();
      if (!waiter) continue;
      clearTimeout(waiter.timer);
      if (parsed.value instanceof RespError) waiter.reject(parsed.value);
      else waiter.resolve(parsed.value);
    }
    this.buffer = this.buffer.subarray(offset);
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.pending.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------------
// The two locks behind one small interface.

interface LockClient {
  acquire(key: string): Promise<void>;
  release(key: string): Promise<void>;
  close(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class RedisLock implements LockClient {
  private readonly tokens = new Map<string, string>();
  private constructor(private readonly resp: RespClient) {}

  static async open(): Promise<RedisLock> {
    return new RedisLock(await RespClient.open(REDIS_PORT, CONNECT_TIMEOUT_MS));
  }

  async acquire(key: string): Promise<void> {
    const token = randomBytes(16).toString("hex");
    for (let attempt = 0; attempt <= RETRY_COUNT; attempt++) {
      if ((await this.resp.command("SET", key, token, "NX", "PX", String(REDIS_TTL_MS))) === "OK") {
        this.tokens.set(key, token);
        return;
      }
      await sleep(RETRY_DELAY_MS + Math.random() * RETRY_JITTER_MS);
    }
    throw new Error(`redis lock: ${key} not acquired after ${RETRY_COUNT} retries`);
  }

  async release(key: string): Promise<void> {
    const token = this.tokens.get(key);
    this.tokens.delete(key);
    if ((await this.resp.command("EVAL", RELEASE_SCRIPT, "1", key, token ?? "")) !== 1) {
      throw new Error(`redis lock: ${key} was no longer ours at release (TTL expired?)`);
    }
  }

  close(): Promise<void> {
    this.resp.close();
    return Promise.resolve();
  }
}

function pgClient(): pg.Client {
  return new pg.Client({
    host: HOST,
    port: PG_PORT,
    user: "postgres",
    database: "postgres",
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: COMMAND_TIMEOUT_MS + WORKER_SLACK_MS,
  });
}

class PgLock implements LockClient {
  private constructor(private readonly client: pg.Client) {}

  static async open(): Promise<PgLock> {
    const client = pgClient();
    client.on("error", () => undefined); // surfaced by the next query instead
    try {
      await client.connect();
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    return new PgLock(client);
  }

  async acquire(key: string): Promise<void> {
    await this.client.query("SELECT pg_advisory_lock($1)", [key]);
  }

  async release(key: string): Promise<void> {
    const result = await this.client.query<{ ok: boolean }>("SELECT pg_advisory_unlock($1) AS ok", [key]);
    if (result.rows[0]?.ok !== true) throw new Error(`pg advisory unlock of ${key} returned false`);
  }

  close(): Promise<void> {
    return this.client.end().catch(() => undefined);
  }
}

type System = "redis" | "pg";

function openLock(system: System): Promise<LockClient> {
  return system === "redis" ? RedisLock.open() : PgLock.open();
}

// ---------------------------------------------------------------------------------------------------------
// Worker side.

interface Job {
  system: System;
  kind: "hot" | "fresh";
  worker: number;
  clients: number;
  runId: string;
  durationMs: number;
  startAtMs: number;
}

interface LoadResult {
  count: number;
  samples: number[];
  error?: string;
}

function keyFor(job: Job, client: number, i: number): string {
  if (job.system === "pg") {
    if (job.kind === "hot") return String(PG_HOT_KEY);
    return String(PG_FRESH_BASE + BigInt(job.worker) * 1_000_000_000n + BigInt(client) * 10_000_000n + BigInt(i));
  }
  return job.kind === "hot" ? `keylock-bench:${job.runId}:hot` : `keylock-bench:${job.runId}:fresh:${job.worker}:${client}:${i}`;
}

async function runJob(job: Job): Promise<LoadResult> {
  const locks: LockClient[] = [];
  try {
    for (let i = 0; i < job.clients; i++) locks.push(await openLock(job.system));
    const wait = job.startAtMs - Date.now();
    if (wait > 0) await sleep(wait);
    const deadline = Date.now() + job.durationMs;
    let count = 0;
    const samples: number[] = [];
    const hot = job.kind === "hot";
    await Promise.all(
      locks.map(async (lock, c) => {
        let i = 0;
        while (Date.now() < deadline) {
          const key = keyFor(job, c, i++);
          const start = nowUs();
          await lock.acquire(key);
          const took = nowUs() - start;
          await lock.release(key);
          count++;
          if (hot || count % SAMPLE_EVERY === 0) samples.push(took);
          // Same as keylock's hot worker: let the other clients of this process run between iterations.
          if (hot) await new Promise((r) => setImmediate(r));
        }
      }),
    );
    return { count, samples };
  } finally {
    await Promise.all(locks.map((lock) => lock.close()));
  }
}

const isMain = process.argv[1] !== undefined && resolvePath(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  let result: LoadResult;
  try {
    result = await runJob(JSON.parse(process.argv[2]!) as Job);
  } catch (error) {
    result = { count: 0, samples: [], error: error instanceof Error ? error.message : String(error) };
  }
  const stride = Math.max(1, Math.ceil(result.samples.length / SAMPLES_MAX));
  const samples = result.samples.filter((_, i) => i % stride === 0).map((us) => Math.round(us * 10) / 10);
  process.stdout.write(`${JSON.stringify({ ...result, samples })}\n`, () => process.exit(0));
}

// ---------------------------------------------------------------------------------------------------------
// Parent side.

const selfPath = fileURLToPath(import.meta.url);

function runWorker(job: Job): Promise<LoadResult> {
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, selfPath, JSON.stringify(job)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise<LoadResult>((resolve) => {
    let done = false;
    const finish = (result: LoadResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(
      () => {
        child.kill("SIGKILL");
        finish({ count: 0, samples: [], error: "worker did not finish in time" });
      },
      job.startAtMs - Date.now() + job.durationMs + WORKER_SLACK_MS,
    );
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("{")) finish(JSON.parse(line) as LoadResult);
    });
    child.once("exit", (code) => finish({ count: 0, samples: [], error: `worker exited with ${code}` }));
  });
}

export interface Load {
  rate: number;
  p99Us: number;
  clients: number;
}

async function runLoad(system: System, kind: "hot" | "fresh", perWorker: number[], durationMs: number, runId: string): Promise<Load> {
  const startAtMs = Date.now() + START_LEAD_MS;
  const results = await Promise.all(
    perWorker.map((clients, worker) => runWorker({ system, kind, worker, clients, runId, durationMs, startAtMs })),
  );
  const failed = results.find((r) => r.error !== undefined);
  if (failed) throw new Error(failed.error);
  const count = results.reduce((sum, r) => sum + r.count, 0);
  return {
    rate: count / (durationMs / 1000),
    p99Us: percentile(results.flatMap((r) => r.samples), 99),
    clients: perWorker.reduce((a, b) => a + b, 0),
  };
}

async function serial(system: System, runId: string, durationMs: number): Promise<{ p50Us: number; rate: number }> {
  const lock = await openLock(system);
  try {
    const key = system === "pg" ? String(PG_HOT_KEY + 1n) : `keylock-bench:${runId}:serial`;
    for (let i = 0; i < 200; i++) {
      await lock.acquire(key);
      await lock.release(key);
    }
    const samples: number[] = [];
    const deadline = Date.now() + durationMs;
    const started = nowUs();
    while (Date.now() < deadline) {
      const start = nowUs();
      await lock.acquire(key);
      await lock.release(key);
      samples.push(nowUs() - start);
    }
    return { p50Us: percentile(samples, 50), rate: samples.length / ((nowUs() - started) / 1e6) };
  } finally {
    await lock.close();
  }
}

/** How many PostgreSQL connections we may open (keeping a few spare), or a reason why none. */
async function pgProbe(): Promise<number> {
  const client = pgClient();
  client.on("error", () => undefined);
  try {
    await client.connect();
    const result = await client.query<{ max: string; used: string }>(
      "SELECT current_setting('max_connections') AS max, (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used",
    );
    const row = result.rows[0]!;
    // Our probe connection closes before the load starts; keep 3 spare for others.
    return Number(row.max) - Number(row.used) - 3;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export type Measured<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface SystemBaseline {
  name: string;
  serial: Measured<{ p50Us: number; rate: number }>;
  hot: Measured<Load>;
  fresh: Measured<Load>;
}

async function measure<T>(fn: () => Promise<T>): Promise<Measured<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

function spread(total: number): number[] {
  return Array.from({ length: WORKERS }, (_, w) => Math.floor(total / WORKERS) + (w < total % WORKERS ? 1 : 0));
}

async function measureSystem(system: System, quick: boolean, durationMs: number): Promise<SystemBaseline> {
  const name = system === "redis" ? REDIS_LOCK_NAME : PG_LOCK_NAME;
  const runId = randomBytes(6).toString("hex");
  let freshClients = FRESH_CLIENTS;
  // Reachability (2 s): one connection and one round trip; otherwise every row says why.
  const reachable = await measure(async () => {
    if (system === "redis") {
      const resp = await RespClient.open(REDIS_PORT, CONNECT_TIMEOUT_MS);
      try {
        const pong = await Promise.race([resp.command("PING"), sleep(CONNECT_TIMEOUT_MS).then(() => "timeout")]);
        if (pong !== "PONG") throw new Error(`PING answered ${JSON.stringify(pong)}`);
      } finally {
        resp.close();
      }
    } else {
      freshClients = Math.min(FRESH_CLIENTS, await pgProbe());
      if (freshClients < WORKERS) throw new Error(`server allows only ${freshClients} more connections`);
    }
  });
  if (!reachable.ok) {
    const down = { ok: false as const, reason: `${system === "redis" ? `redis ${HOST}:${REDIS_PORT}` : `postgres ${HOST}:${PG_PORT}`}: ${reachable.reason}` };
    return { name, serial: down, hot: down, fresh: down };
  }
  const serialResult = await measure(() => serial(system, runId, quick ? 1000 : 2000));
  const hot = await measure(() => runLoad(system, "hot", spread(WORKERS * HOT_CLIENTS_PER_WORKER), durationMs, runId));
  const fresh = await measure(() => runLoad(system, "fresh", spread(freshClients), durationMs, runId));
  return { name, serial: serialResult, hot, fresh };
}

/** Measures both peers one after the other (never concurrently with each other or with keylock's load). */
export async function runBaselines(options: { quick: boolean; durationMs: number }): Promise<{ redis: SystemBaseline; pg: SystemBaseline }> {
  const redis = await measureSystem("redis", options.quick, options.durationMs);
  const pgResult = await measureSystem("pg", options.quick, options.durationMs);
  return { redis, pg: pgResult };
}

// ---------------------------------------------------------------------------------------------------------
// Rows (same shape as run.ts's rows).

export interface BaselineRow {
  name: string;
  value: string;
  ratio: string;
  target: string;
  met: boolean | null;
}

function fmtUs(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`;
}

function fmtRate(perSecond: number): string {
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : perSecond >= 1e3 ? `${(perSecond / 1e3).toFixed(1)} k/s` : `${perSecond.toFixed(1)} /s`;
}

const notMeasured = (name: string, reason: string, target = "-"): BaselineRow => ({
  name,
  value: `not measured: ${reason}`,
  ratio: "-",
  target,
  met: null,
});

/**
 * The peers' rows, then the DESIGN §7 comparison rows against the keylock figures measured earlier in the
 * same run. `floor` gives each peer row a ratio to the same physical floor keylock's rows use.
 */
export function baselineRows(
  peers: { redis: SystemBaseline; pg: SystemBaseline },
  keylock: { hotRate: number; hotP99Us: number; freshRate: number },
  floor: { echoP50Us: number; echoRate: number },
): { header: string; rows: BaselineRow[] }[] {
  const sections: { header: string; rows: BaselineRow[] }[] = [];
  for (const [short, peer] of [
    ["redis lock", peers.redis],
    ["pg advisory", peers.pg],
  ] as const) {
    const rows: BaselineRow[] = [];
    const s = peer.serial;
    rows.push(
      s.ok
        ? {
            name: `${short}: 1 client serial acq+rel p50, rate`,
            value: `${fmtUs(s.value.p50Us)}, ${fmtRate(s.value.rate)}`,
            ratio: `${(s.value.p50Us / floor.echoP50Us).toFixed(2)}× echo p50`,
            target: "-",
            met: null,
          }
        : notMeasured(`${short}: 1 client serial acq+rel p50, rate`, s.reason),
    );
    const h = peer.hot;
    rows.push(
      h.ok
        ? {
            name: `${short}: 8 clients on one hot key: rate, p99`,
            value: `${fmtRate(h.value.rate)}, ${fmtUs(h.value.p99Us)}`,
            ratio: `${(h.value.rate / floor.echoRate).toFixed(4)}× echo throughput`,
            target: "-",
            met: null,
          }
        : notMeasured(`${short}: 8 clients on one hot key: rate, p99`, h.reason),
    );
    const f = peer.fresh;
    const freshName = (clients: number): string =>
      `${short}: ${clients} clients on fresh keys${clients < FRESH_CLIENTS ? ` (server limit, not ${FRESH_CLIENTS})` : ""}`;
    rows.push(
      f.ok
        ? {
            name: freshName(f.value.clients),
            value: fmtRate(f.value.rate),
            ratio: `${(f.value.rate / floor.echoRate).toFixed(2)}× echo throughput`,
            target: "-",
            met: null,
          }
        : notMeasured(freshName(FRESH_CLIENTS), f.reason),
    );
    sections.push({ header: `baseline: ${peer.name}, ${HOST}`, rows });
  }

  const vs: BaselineRow[] = [];
  const rh = peers.redis.hot;
  const rf = peers.redis.fresh;
  const pf = peers.pg.fresh;
  vs.push(
    rh.ok
      ? {
          name: "hot key rate: keylock vs redis lock",
          value: `${fmtRate(keylock.hotRate)} vs ${fmtRate(rh.value.rate)}`,
          ratio: `${(keylock.hotRate / rh.value.rate).toFixed(2)}×`,
          target: "≥ 2× redis lock",
          met: keylock.hotRate >= 2 * rh.value.rate,
        }
      : notMeasured("hot key rate: keylock vs redis lock", rh.reason, "≥ 2× redis lock"),
  );
  vs.push(
    rh.ok
      ? {
          name: "hot key p99: keylock vs redis lock",
          value: `${fmtUs(keylock.hotP99Us)} vs ${fmtUs(rh.value.p99Us)}`,
          ratio: `${(keylock.hotP99Us / rh.value.p99Us).toFixed(4)}×`,
          target: "≤ 1/10 of redis lock (0.1×)",
          met: keylock.hotP99Us * 10 <= rh.value.p99Us,
        }
      : notMeasured("hot key p99: keylock vs redis lock", rh.reason, "≤ 1/10 of redis lock (0.1×)"),
  );
  vs.push(
    rf.ok
      ? {
          name: "fresh keys rate: keylock vs redis lock",
          value: `${fmtRate(keylock.freshRate)} vs ${fmtRate(rf.value.rate)}`,
          ratio: `${(keylock.freshRate / rf.value.rate).toFixed(2)}×`,
          target: "≥ 2× redis lock",
          met: keylock.freshRate >= 2 * rf.value.rate,
        }
      : notMeasured("fresh keys rate: keylock vs redis lock", rf.reason, "≥ 2× redis lock"),
  );
  const pgNote = pf.ok && pf.value.clients < FRESH_CLIENTS ? ` (pg: ${pf.value.clients} conns)` : "";
  vs.push(
    pf.ok
      ? {
          name: `fresh keys rate: keylock vs pg advisory${pgNote}`,
          value: `${fmtRate(keylock.freshRate)} vs ${fmtRate(pf.value.rate)}`,
          ratio: `${(keylock.freshRate / pf.value.rate).toFixed(2)}×`,
          target: "≥ 5× pg advisory",
          met: keylock.freshRate >= 5 * pf.value.rate,
        }
      : notMeasured("fresh keys rate: keylock vs pg advisory", pf.reason, "≥ 5× pg advisory"),
  );
  sections.push({ header: "keylock vs peers (DESIGN §7, same run)", rows: vs });
  return sections;
}

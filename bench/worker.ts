/**
 * A benchmark load process (bench/run.ts spawns several, so that no single event loop decides a result).
 * Protocol: reads one JSON job from argv[2]; connects what it needs; prints `ready`; waits for a line
 * `go START_AT_MS` on stdin; runs until START_AT_MS + durationMs; prints one JSON result line and exits.
 * Jobs:
 *  - { kind: "echo", port, connections }: closed-loop echo round trips, 1 in flight per connection
 *  - { kind: "load", system, shape: "hot" | "fresh", clients, key | prefix, servers? }: each client (keylock
 *    client or peer connection) acquires+releases `write` on one shared key (hot) or a fresh key each time
 *  - { kind: "handoff", servers, key }: one client; after each release it waits until the lock was taken
 *    away (invalidated to null) before acquiring again, so every acquire is a hand-off from the other worker
 *    (system "relay", port: the same loop against the protocol floor, bench/relay-floor.ts; so can "load" hot)
 *  - { kind: "spin", servers, key }: holds the key cached and re-acquires it in a tight loop (DESIGN §7 liveness)
 *  - { kind: "contend", servers, key, afterMs }: afterMs into the run, acquires the key once; reports the wait
 *  - { kind: "hold", servers, clients, locks, prefix }: acquires `locks` keys per client and keeps them
 *    cached; after `go` waits for every client's "recovered" event (the parent restarts the server), and
 *    reports when each came (ms since epoch) and the CPU it used from `go` until then; with
 *    KEYLOCK_BENCH_CPU_PHASES=1 it also prints its CPU at its first client's "reconnect" and "recovered".
 *    Its clients stay connected, holding their locks, until the parent closes this worker's stdin (once the
 *    row is measured): a recovered client carries on as an application's would, rather than leave while
 *    the others still recover (leaving is work for the member that is not recovery)
 * Every job that connects keylock clients takes an optional `tlsCaFile` (bench/tls-cost.ts).
 * Results: per-client counts (fairness), latency samples in µs (bounded, evenly strided) and the max latency.
 */
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { connect, type ClientLogger, type LockClient } from "../src/client/client.js";
import { EchoClient } from "./echo-server.js";
import { RelayClient } from "./relay-floor.js";
import { openPeer, type PeerClient, type PeerSystem } from "./peers.js";
import { WARMUP_MS, nowUs } from "./stats.js";

export interface Job {
  kind: "echo" | "load" | "handoff" | "spin" | "contend" | "hold";
  durationMs: number;
  system?: "keylock" | "relay" | PeerSystem;
  shape?: "hot" | "fresh";
  port?: number;
  servers?: string[];
  connections?: number;
  clients?: number;
  prefix?: string;
  key?: string;
  afterMs?: number;
  locks?: number;
  /** Connect with TLS, trusting the PEM CA in this file. */
  tlsCaFile?: string;
}

export interface WorkerResult {
  counts: number[];
  samples: number[];
  maxUs: number;
  /** hold: when each client saw "recovered" (ms since epoch). */
  recoveredAtMs?: number[];
  /** hold: this process's CPU seconds from `go` until every client recovered; load and handoff: over the measured window. */
  cpuSeconds?: number;
  error?: string;
}

/**
 * KEYLOCK_BENCH_WORKER_LOG=1: every keylock client logs (JSON lines on stderr, with the worker's pid) why
 * it lost or closed a connection, its reconnect attempts and fencing; for finding why a row failed.
 */
const logger: ClientLogger | undefined =
  process.env.KEYLOCK_BENCH_WORKER_LOG === "1"
    ? (() => {
        const line = (level: string) => (fields: Record<string, unknown>, msg: string): void =>
          void process.stderr.write(`${JSON.stringify({ level, time: new Date().toISOString(), worker: process.pid, ...fields, msg }, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}\n`);
        return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
      })()
    : undefined;

const SAMPLE_EVERY = 4;
const SAMPLES_MAX = 20_000;
const CONNECT_BATCH = 10;

const job = JSON.parse(process.argv[2]!) as Job;
const tls = job.tlsCaFile === undefined ? {} : { tls: { ca: readFileSync(job.tlsCaFile) } };
const stdin = createInterface({ input: process.stdin });
let startAtMs = 0;
const stdinClosed = new Promise<void>((resolve) => stdin.once("close", resolve));
const go = new Promise<void>((resolve) =>
  stdin.on("line", (line) => {
    if (!line.startsWith("go ")) return;
    startAtMs = Number(line.slice(3));
    resolve();
  }),
);

async function ready(): Promise<void> {
  process.stdout.write("ready\n");
  await go;
  const wait = startAtMs - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

/** The measured window: `from` (ms since epoch, after the warm-up: WARMUP_MS) to `until`. */
function measuredWindow(): { from: number; until: number } {
  const from = Date.now() + WARMUP_MS;
  return { from, until: from + job.durationMs };
}

/**
 * This process's CPU over the measured window: `done()` gives the seconds from `from` (a timer marks it)
 * until the call (the loops have then seen `until`).
 */
function windowCpu(from: number): { done(): number } {
  let mark: NodeJS.CpuUsage | null = null;
  const timer = setTimeout(() => (mark = process.cpuUsage()), Math.max(0, from - Date.now()));
  return {
    done(): number {
      clearTimeout(timer);
      if (mark === null) return 0;
      const used = process.cpuUsage(mark);
      return (used.user + used.system) / 1e6;
    },
  };
}

/** Connects `n` clients, CONNECT_BATCH at a time (a thousand greetings at once would only measure the backlog). */
async function keylockClients(n: number, name: string, extra: { idleLockLimit?: number } = {}): Promise<LockClient[]> {
  const clients: LockClient[] = [];
  while (clients.length < n) {
    const batch = Math.min(CONNECT_BATCH, n - clients.length);
    clients.push(
      ...(await Promise.all(Array.from({ length: batch }, (_, i) => connect({ servers: job.servers!, ...tls, ...extra, ...(logger === undefined ? {} : { logger }), name: `${name}-${clients.length + i}` })))),
    );
  }
  return clients;
}

async function echo(): Promise<WorkerResult> {
  const connections: EchoClient[] = [];
  for (let i = 0; i < (job.connections ?? 1); i++) connections.push(await EchoClient.open(job.port!));
  await ready();
  const { from, until: deadline } = measuredWindow();
  const cpu = windowCpu(from);
  const counts = connections.map(() => 0);
  const samples: number[] = [];
  let maxUs = 0;
  await Promise.all(
    connections.map(
      (connection, c) =>
        new Promise<void>((resolve) => {
          let sentAt = nowUs();
          const answered = (): void => {
            const took = nowUs() - sentAt;
            const now = Date.now();
            if (now >= from) {
              if (took > maxUs) maxUs = took;
              if (++counts[c]! % SAMPLE_EVERY === 0) samples.push(took);
            }
            if (now >= deadline) {
              connection.close();
              resolve();
              return;
            }
            sentAt = nowUs();
            connection.send(answered);
          };
          connection.send(answered);
        }),
    ),
  );
  return { counts, samples, maxUs, cpuSeconds: cpu.done() };
}

/**
 * What the load loop holds: a keylock LockHandle itself (acquire's promise is awaited as a user would, with
 * no wrapper of the harness's around it), or a peer's release function (which returns a promise).
 */
interface AnyLock {
  lock(key: string): Promise<{ release(): unknown }>;
  close(): Promise<void>;
}

function fromKeylock(client: LockClient): AnyLock {
  return { lock: (key) => client.acquire(key, "write"), close: () => client.close() };
}

function fromRelay(client: RelayClient): AnyLock {
  return { lock: () => client.acquire(), close: () => Promise.resolve(client.close()) };
}

function fromPeer(peer: PeerClient): AnyLock {
  return { lock: async (key) => ({ release: await peer.lock(key) }), close: () => peer.close() };
}

async function load(): Promise<WorkerResult> {
  const n = job.clients ?? 1;
  const system = job.system ?? "keylock";
  const locks: AnyLock[] =
    system === "keylock"
      ? (await keylockClients(n, "bench")).map(fromKeylock)
      : system === "relay"
        ? (await Promise.all(Array.from({ length: n }, () => RelayClient.open(job.port!)))).map(fromRelay)
        : (await Promise.all(Array.from({ length: n }, () => openPeer(system)))).map(fromPeer);
  const hot = job.shape === "hot";
  await ready();
  const { from, until: deadline } = measuredWindow();
  const cpu = windowCpu(from);
  const counts = locks.map(() => 0);
  const samples: number[] = [];
  let maxUs = 0;
  let total = 0;
  let cpuSeconds: number;
  try {
    await Promise.all(
      locks.map(async (lock, c) => {
        let i = 0;
        for (let now = Date.now(); now < deadline; now = Date.now()) {
          const key = hot ? job.key! : `${job.prefix}/${c}/${i++}`;
          const start = nowUs();
          const held = await lock.lock(key);
          const took = nowUs() - start;
          const released = held.release();
          if (released instanceof Promise) await released;
          if (now >= from) {
            counts[c]!++;
            total++;
            if (took > maxUs) maxUs = took;
            if (hot || total % SAMPLE_EVERY === 0) samples.push(took);
          }
          // Let the other clients of this process run between iterations (a real application does work here).
          if (hot) await new Promise((r) => setImmediate(r));
        }
      }),
    );
  } finally {
    cpuSeconds = cpu.done();
    await Promise.all(locks.map((lock) => lock.close().catch(() => undefined)));
  }
  return { counts, samples, maxUs, cpuSeconds };
}

async function handoff(): Promise<WorkerResult> {
  let takenAway: (() => void) | null = null;
  let takenAwaySeen: boolean;
  const onTakenAway = (): void => {
    takenAwaySeen = true;
    takenAway?.();
  };
  let acquire: () => Promise<{ release(): void }>;
  let close: () => Promise<void>;
  if (job.system === "relay") {
    const relay = await RelayClient.open(job.port!);
    relay.onTakenAway = onTakenAway;
    acquire = () => relay.acquire();
    close = () => Promise.resolve(relay.close());
  } else {
    const [client] = await keylockClients(1, "bench-handoff");
    client!.on("invalidate", (event) => {
      if (event.to === "null") onTakenAway();
    });
    acquire = () => client!.acquire(job.key!, "write");
    close = () => client!.close();
  }
  await ready();
  const { from, until: deadline } = measuredWindow();
  const cpu = windowCpu(from);
  const samples: number[] = [];
  let count = 0;
  for (let now = Date.now(); now < deadline; now = Date.now()) {
    takenAwaySeen = false;
    const gone = new Promise<void>((resolve) => (takenAway = resolve));
    const start = nowUs();
    const handle = await acquire();
    const took = nowUs() - start;
    handle.release();
    if (now >= from) {
      samples.push(took);
      count++;
    }
    // Bounded, in case the invalidation never comes (a guard timer only while it has not come yet: the
    // common case arrives with the grant, and a timer per iteration would be the harness's own cost).
    if (!takenAwaySeen) {
      let guard: NodeJS.Timeout | undefined;
      await Promise.race([gone, new Promise((r) => (guard = setTimeout(r, 200)))]);
      clearTimeout(guard);
    }
  }
  const cpuSeconds = cpu.done();
  await close();
  return { counts: [count], samples, maxUs: Math.max(0, ...samples), cpuSeconds };
}

async function spin(): Promise<WorkerResult> {
  const [client] = await keylockClients(1, "bench-spin");
  (await client!.acquire(job.key!, "write")).release();
  await ready();
  const deadline = Date.now() + job.durationMs;
  let count = 0;
  while (Date.now() < deadline) {
    for (let i = 0; i < 1000; i++) (await client!.acquire(job.key!, "write")).release();
    count += 1000;
  }
  await client!.close();
  return { counts: [count], samples: [], maxUs: 0 };
}

async function contend(): Promise<WorkerResult> {
  const [client] = await keylockClients(1, "bench-contend");
  await ready();
  await new Promise((r) => setTimeout(r, job.afterMs ?? 0));
  const start = nowUs();
  const handle = await client!.acquire(job.key!, "write");
  const took = nowUs() - start;
  handle.release();
  // Stay until the spinner is done, so closing does not disturb it.
  const rest = startAtMs + job.durationMs - Date.now();
  if (rest > 0) await new Promise((r) => setTimeout(r, rest));
  await client!.close();
  return { counts: [1], samples: [took], maxUs: took };
}

async function hold(): Promise<WorkerResult> {
  const perClient = job.locks ?? 1000;
  const clients = await keylockClients(job.clients ?? 1, "bench-hold", { idleLockLimit: perClient + 1 });
  const recoveredAtMs: number[] = clients.map(() => 0);
  const recovered = clients.map(
    (client, c) =>
      new Promise<void>((resolve) =>
        client.on("recovered", () => {
          recoveredAtMs[c] = Date.now();
          resolve();
        }),
      ),
  );
  const IN_FLIGHT = 256;
  await Promise.all(
    clients.map(async (client, c) => {
      for (let at = 0; at < perClient; at += IN_FLIGHT) {
        const batch: Promise<void>[] = [];
        for (let i = at; i < Math.min(perClient, at + IN_FLIGHT); i++) {
          batch.push(client.acquire(`${job.prefix}/${c}/${i}`, "write").then((h) => h.release()));
        }
        await Promise.all(batch);
      }
    }),
  );
  await ready();
  const cpuAtGo = process.cpuUsage();
  if (process.env.KEYLOCK_BENCH_CPU_PHASES === "1") {
    clients[0]?.on("reconnect", () => {
      const c = process.cpuUsage(cpuAtGo);
      process.stderr.write(`cpu-phase reconnect ${Date.now()} ${(c.user + c.system) / 1000}\n`);
    });
    clients[0]?.on("recovered", () => {
      const c = process.cpuUsage(cpuAtGo);
      process.stderr.write(`cpu-phase recovered ${Date.now()} ${(c.user + c.system) / 1000}\n`);
    });
  }
  const timeout = new Promise<void>((r) => setTimeout(r, job.durationMs).unref());
  await Promise.race([Promise.all(recovered), timeout]);
  const cpu = process.cpuUsage(cpuAtGo);
  // Leave once the parent is done with the row (it closes stdin after every worker's result came in).
  stdinClosed
    .then(() => Promise.all(clients.map((client) => client.close().catch(() => undefined))))
    .finally(() => process.exit(0))
    .catch(() => undefined);
  return { counts: clients.map(() => perClient), samples: [], maxUs: 0, recoveredAtMs, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

// Loaded: say so and wait until every worker of the row is (the parent sends "start"), so that no worker
// connects or greets while others still compile their modules (a hundred processes loading at once left
// the server seconds between turns and timed greetings out).
const started = new Promise<void>((resolve) => stdin.on("line", (line) => line === "start" && resolve()));
process.stdout.write("loaded\n");
await started;

let result: WorkerResult;
try {
  const run = { echo, load, handoff, spin, contend, hold }[job.kind];
  result = await run();
} catch (error) {
  result = { counts: [], samples: [], maxUs: 0, error: error instanceof Error ? error.message : String(error) };
}
const stride = Math.max(1, Math.ceil(result.samples.length / SAMPLES_MAX));
const samples = result.samples.filter((_, i) => i % stride === 0).map((us) => Math.round(us * 10) / 10);
// A hold worker stays (its clients keep their sessions) until the parent closes stdin; the others exit now.
process.stdout.write(`${JSON.stringify({ ...result, samples })}\n`, () => (job.kind === "hold" && result.error === undefined ? undefined : process.exit(0)));

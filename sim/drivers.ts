/**
 * The lock simulator over the production drivers (issue 10): the real LockServerRuntime
 * (runtime/server.ts) and real LockClients (client/client.ts, connection.ts) run in the simulated world
 * (sim-world.ts) under a random workload and each seed's faults: server crashes (a new server with a
 * greater term takes over from the durable MemoryDatabase), connection resets, partitions, client
 * crashes, store outages and fence failures; some seeds are faultless. Nothing here mirrors a driver.
 *
 * Checkers (a violation stops the run and names the seed):
 * - exclusion: a lock granted to a client never conflicts (core/modes.ts `compatible`) with a valid
 *   handle another live client holds on the key;
 * - fencing: write-mode grants on a key carry strictly increasing tokens (a client's cached re-grant may
 *   repeat its own);
 * - honesty: no honest client ever gets EPROTO, and the server never logs a protocol error from one;
 *   nothing throws into the event loop;
 * - convergence: once healed, every live client finishes its workload (no acquire or farewell hangs).
 * Mutations (`DRIVER_MUTATIONS`) are wrappers around the real parts, each caught by a checker:
 * - `reuse-write-seq`: the server's WriteSeqSource hands some write grants the previous token;
 * - `skip-lock-recovery` (driver bug in server.ts): the first-contact greeting finishes the client's lock
 *   recovery along with its greeting, so the table resumes before the client reported what it holds;
 * - `no-reconnect-resend` (driver bug in server.ts): on a reconnect the server does not resend what the
 *   client's session kept, so a grant lost with the old socket stays lost.
 * - `early-invalidation-response` (client bug around core/client-locks.ts): an invalidation is answered
 *   as soon as it arrives, before the client's users released the lock (exclusion; trace validation).
 * - `read-answer-as-null` (server driver bug around core/lock-server.ts): a client's answer that it went
 *   down from write to read reaches the lock table as null, which forgets a reader that still reads.
 * With `traceSink`, the run's protocol trace is observed in the real cores (drivers-trace.ts).
 * Relies on: sim-world.ts for determinism; runs are pure functions of (seed, options).
 */
import { LockServerRuntime, type ServerParts } from "../src/runtime/server.js";
import { connectInWorld, type AcquireMode, type LockClient, type LockHandle } from "../src/client/client.js";
import { compatible, carriesWriteSeq } from "../src/core/modes.js";
import { ReliableSession } from "../src/core/session.js";
import type { WireSession } from "../src/protocol/session.js";
import { KeylockError } from "../src/core/errors.js";
import type { ClusterConfig } from "../src/store/store.js";
import { MemoryStore } from "../src/store/memory.js";
import type { ClientLockEffect, ClientLocks } from "../src/core/client-locks.js";
import type { Rid } from "../src/core/lock-messages.js";
import { traceClientLocks, traceLockServer, type TraceSink } from "./drivers-trace.js";
import { Prng } from "./prng.js";
import type { TraceEvent } from "./trace.js";
import { SimFenceAgent, SimStore, SimWorld, type SimProcess } from "./sim-world.js";

export const DRIVER_MUTATIONS = ["none", "reuse-write-seq", "skip-lock-recovery", "no-reconnect-resend", "early-invalidation-response", "read-answer-as-null"] as const;
export type DriverMutation = (typeof DRIVER_MUTATIONS)[number];

export interface DriverRunOptions {
  mutation?: DriverMutation;
  keepTrace?: boolean;
  /** Receives the run's protocol trace (sim/trace.ts events) observed in the real cores (drivers-trace.ts). */
  traceSink?: TraceSink;
}

export interface DriverViolation {
  readonly seed: number;
  readonly checker: string;
  readonly atUs: number;
  readonly detail: string;
  readonly tail: string[];
}

export interface DriverRunResult {
  readonly seed: number;
  readonly events: number;
  readonly traceHash: string;
  readonly traceLines: number;
  readonly trace: string[] | undefined;
  readonly violation: DriverViolation | undefined;
  readonly stats: DriverStats;
}

export interface DriverStats {
  grants: number;
  serverStarts: number;
  resets: number;
  clientCrashes: number;
  fences: number;
  farewells: number;
}

const ADDRESS = { host: "10.0.0.1", port: 7000 };
const SERVER = `${ADDRESS.host}:${ADDRESS.port}`;
const MODES: Record<AcquireMode, number> = { read: 5, write: 4, write_only: 1 };

interface Held {
  readonly client: number;
  readonly process: SimProcess;
  readonly mode: AcquireMode;
  readonly handle: LockHandle;
}

interface Config {
  readonly clients: number;
  readonly keys: number;
  readonly opsPerClient: number;
  readonly faulty: boolean;
  readonly windowUs: number;
  readonly serverCrashes: number;
  readonly resets: number;
  readonly partitions: number;
  readonly clientCrashes: number;
  readonly storeOutages: number;
  readonly fenceFailChance: number;
  readonly farewellChance: number;
}

function drawConfig(prng: Prng): Config {
  const faulty = prng.chance(0.8);
  return {
    clients: prng.int(2, 5),
    keys: prng.int(1, 4),
    opsPerClient: prng.int(5, 25),
    faulty,
    windowUs: prng.int(300_000, 4_000_000),
    serverCrashes: faulty ? prng.int(0, 2) : 0,
    resets: faulty ? prng.int(0, 8) : 0,
    partitions: faulty ? prng.int(0, 1) : 0,
    clientCrashes: faulty ? prng.int(0, 1) : 0,
    storeOutages: faulty ? prng.int(0, 1) : 0,
    fenceFailChance: faulty ? prng.pick([0, 0, 0.2]) : 0,
    farewellChance: prng.pick([0, 0.5, 1]),
  };
}

class Abort extends Error {}

/** Runs one seed; resolves with its result (never rejects for a violation: that is in `violation`). */
export async function runDriverSeed(seed: number, options: DriverRunOptions = {}): Promise<DriverRunResult> {
  const mutation = options.mutation ?? "none";
  const world = new SimWorld(seed, { keepTrace: options.keepTrace === true });
  const prng = world.prng.fork("driver sim");
  const config = drawConfig(prng.fork("config"));
  const stats: DriverStats = { grants: 0, serverStarts: 0, resets: 0, clientCrashes: 0, fences: 0, farewells: 0 };
  let violation: DriverViolation | undefined;
  const violate = (checker: string, detail: string): void => {
    if (violation !== undefined) return;
    violation = { seed, checker, atUs: world.nowUs, detail, tail: world.trace.tail() };
    world.stopped = checker;
  };
  world.trace.add(`config ${JSON.stringify(config)} mutation ${mutation}`);

  const store = new SimStore(world);
  const fenceAgent = new SimFenceAgent(world, prng.fork("fence"));
  let healed = !config.faulty;
  const cluster: ClusterConfig = { clusterId: "sim", slots: [{ slot: 0, ...ADDRESS }], secretDigest: null, formattedAtMs: 0 };
  await new MemoryStore(world.database).format(cluster);

  // Mutation wrappers around real parts.
  const serverSessions = new WeakSet<WireSession>();
  const restore: (() => void)[] = [];
  if (mutation === "no-reconnect-resend") {
    const proto = ReliableSession.prototype;
    const attach = Object.getOwnPropertyDescriptor(proto, "attach")!.value as WireSession["attach"];
    proto.attach = function (this: WireSession) {
      const kept = attach.call(this);
      if (serverSessions.has(this) && kept.length > 0) world.trace.add(`mutation: the server drops ${kept.length} kept message(s) at a reconnect`);
      return serverSessions.has(this) ? [] : kept;
    };
    restore.push(() => (proto.attach = attach));
  }

  // ------------------------------------------------------------------ the server (as the member runs it)
  let term = 0n;
  let server = null as { process: SimProcess; runtime: LockServerRuntime | null } | null;
  const clientOfRid = new Map<Rid, number>();
  const clientOf = (rid: Rid): number => clientOfRid.get(rid) ?? -1;
  const startServer = async (): Promise<void> => {
    term++;
    const process = world.spawn(`s${term}`);
    const current = { process, runtime: null as LockServerRuntime | null };
    server = current;
    stats.serverStarts++;
    try {
      const runtime = await LockServerRuntime.start({
        store: store.for(process),
        config: cluster,
        slot: 0,
        term,
        ...ADDRESS,
        clock: process.clock,
        fenceAgent,
        reconnectTimeoutMs: 2_000,
        recoveryTimeoutMs: 3_000,
        limits: { storeUnreachableMs: 4_000, invalidationTimeoutMs: 5_000 },
        log: (line) => {
          world.trace.add(`${process.name}: ${line}`);
          if (/protocol error/.test(line)) violate("honesty", `${process.name} logged: ${line}`);
        },
        onFatal: (reason) => crashServer(`fatal: ${reason}`),
        parts: serverParts(process, term),
      });
      if (!process.alive) {
        await runtime.stop();
        return;
      }
      current.runtime = runtime;
      world.network.listen(process, SERVER, (connection) => runtime.serve(connection));
      world.trace.add(`${process.name} serving term ${term}`);
    } catch (error) {
      world.trace.add(`${process.name} failed to start: ${(error as Error).message}`);
      crashServer("start failed");
    }
  };
  /** The runtime's parts, observed and wrapped through its one seam (LockServerRuntime.start `parts`). */
  const serverParts = (process: SimProcess, term: bigint): ServerParts => ({
    wrapWriteSeq: (source) => {
      if (mutation !== "reuse-write-seq") return source;
      let previous = 0n;
      let calls = 0;
      return {
        available: () => source.available(),
        observe: (seen) => source.observe(seen),
        next: () => {
          const fresh = source.next();
          const given = ++calls % 3 === 0 && previous > 0n ? previous : fresh;
          previous = fresh;
          return given;
        },
      };
    },
    recovery: (recovery) => {
      if (mutation !== "skip-lock-recovery") return;
      const finish = recovery.finish.bind(recovery);
      recovery.finish = (rid, parts) => finish(rid, parts.includes("greeting") ? ["greeting", "locks"] : parts);
    },
    lockServer: (locks) => {
      if (options.traceSink !== undefined) traceLockServer(locks, term, clientOf, () => process.alive, options.traceSink);
      if (mutation === "read-answer-as-null") {
        // Outside the trace's wrapper: the trace shows what the table really got.
        const answer = locks.onInvalidateResponse.bind(locks);
        locks.onInvalidateResponse = (rid, response) => answer(rid, response.newMode === "read" ? { ...response, newMode: "null" } : response);
      }
    },
    session: (reliable) => {
      if (mutation === "no-reconnect-resend") serverSessions.add(reliable);
    },
  });
  const crashServer = (why: string): void => {
    const current = server;
    if (current === null || !current.process.alive) return;
    if (current.runtime !== null) options.traceSink?.({ e: "server-stop" });
    current.process.kill(why);
    void current.runtime?.stop();
    world.at(prng.int(500, 3_000) * 1000, () => void startServer());
  };

  // ------------------------------------------------------------------ clients, workload, checkers
  const holders = new Map<string, Held[]>();
  /** Highest token seen per key over every write-mode grant, and over exclusive (write) grants only. */
  const anyTokens = new Map<string, { token: bigint; client: number }>();
  const writeTokens = new Map<string, { token: bigint; client: number }>();
  const clientProcesses: SimProcess[] = [];
  const finished: boolean[] = [];
  const clients: (LockClient | null)[] = [];

  const onGrant = (held: Held, key: string): void => {
    stats.grants++;
    const list = holders.get(key) ?? [];
    for (const other of list) {
      if (other.client === held.client || !other.process.alive || !other.handle.isValid) continue;
      if (!compatible(other.mode, held.mode, false)) {
        violate("exclusion", `c${held.client} granted ${key} ${held.mode} while c${other.client} holds it ${other.mode}`);
      }
    }
    list.push(held);
    holders.set(key, list);
    if (carriesWriteSeq(held.mode)) {
      // Exclusive (write) grants are seen in the order they were issued; concurrent write_only holders of
      // one key may see theirs in any order, so they are compared with exclusive grants only.
      const token = held.handle.writeSeq;
      const exclusive = held.mode === "write";
      const seen = exclusive ? anyTokens.get(key) : writeTokens.get(key);
      if (token <= 0n) violate("fencing", `c${held.client} got ${key} ${held.mode} with token ${token}`);
      else if (seen !== undefined && (token < seen.token || (token === seen.token && seen.client !== held.client))) {
        violate("fencing", `c${held.client} got ${key} ${held.mode} with token ${token}; c${seen.client} already had ${seen.token}`);
      }
      for (const table of exclusive ? [anyTokens, writeTokens] : [anyTokens]) {
        const best = table.get(key);
        if (best === undefined || token > best.token) table.set(key, { token, client: held.client });
      }
    }
  };
  const onRelease = (held: Held, key: string): void => {
    const list = holders.get(key) ?? [];
    const index = list.indexOf(held);
    if (index >= 0) list.splice(index, 1);
  };

  const runClient = async (index: number): Promise<void> => {
    const process = world.spawn(`c${index}`);
    clientProcesses[index] = process;
    const cprng = prng.fork(`client ${index}`);
    const rid = cprng.u64NonZero();
    fenceAgent.owners.set(rid, process);
    clientOfRid.set(rid, index);
    let fenced = false;
    let client: LockClient;
    try {
      client = await connectInWorld(
        {
          servers: [SERVER],
          name: `c${index}`,
          connectTimeoutMs: 600_000,
          onInvalidate: () => process.sleep(cprng.int(0, 20)),
        },
        process,
        rid,
      );
    } catch (error) {
      world.trace.add(`c${index} could not connect: ${(error as Error).message}`);
      finished[index] = true;
      return;
    }
    clients[index] = client;
    const machine = (client as unknown as { machine: ClientLocks }).machine;
    if (mutation === "early-invalidation-response") answerInvalidationsEarly(machine);
    if (options.traceSink !== undefined) {
      const traced = traceClientLocks(machine, index, options.traceSink);
      process.onKill(() => traced.out("died"));
    }
    client.on("error", (error) => {
      world.trace.add(`c${index} error: ${error.message}`);
      if (error instanceof KeylockError && error.code === "EPROTO") violate("honesty", `c${index}: ${error.message}`);
    });
    client.on("fenced", () => {
      fenced = true;
      world.trace.add(`c${index} fenced`);
    });
    for (let op = 0; op < config.opsPerClient && !fenced; op++) {
      await process.sleep(cprng.int(0, 30));
      const key = `k${cprng.int(1, config.keys)}`;
      const mode = cprng.weighted(MODES);
      const nonblock = cprng.chance(0.1);
      let handle: LockHandle;
      try {
        handle = await client.acquire(key, mode, { nonblock });
      } catch (error) {
        world.trace.add(`c${index} acquire ${key} ${mode}: ${(error as Error).message}`);
        continue;
      }
      world.trace.add(`c${index} holds ${key} ${mode} seq=${handle.writeSeq}`);
      const held: Held = { client: index, process, mode, handle };
      onGrant(held, key);
      await process.sleep(cprng.int(0, 40));
      onRelease(held, key);
      if (!handle.isReleased) handle.release();
    }
    if (!fenced && cprng.chance(config.farewellChance)) {
      try {
        await client.close();
        stats.farewells++;
        world.trace.add(`c${index} said farewell`);
      } catch (error) {
        world.trace.add(`c${index} close: ${(error as Error).message}`);
      }
    }
    finished[index] = true;
  };

  // ------------------------------------------------------------------ faults
  const faults = prng.fork("faults");
  const at = (): number => faults.int(0, config.windowUs);
  for (let i = 0; i < config.serverCrashes; i++) world.at(at(), () => !healed && crashServer("crash fault"));
  for (let i = 0; i < config.resets; i++) {
    world.at(at(), () => {
      if (healed) return;
      const candidates = clientProcesses.filter((p) => p?.alive);
      if (candidates.length === 0) return;
      const process = faults.pick(candidates);
      stats.resets++;
      for (const end of [...process.ends]) world.network.reset(end.link, "reset fault");
      // Often the client stays away a little (below the reconnect timeout): the server keeps sending meanwhile.
      const target = server?.process;
      if (target !== undefined && faults.chance(0.5)) world.network.partition(process, target, faults.int(1, 800) * 1000);
    });
  }
  for (let i = 0; i < config.partitions; i++) {
    world.at(at(), () => {
      const target = server?.process;
      const candidates = clientProcesses.filter((p) => p?.alive);
      if (healed || candidates.length === 0 || target === undefined) return;
      const process = faults.pick(candidates);
      world.network.partition(process, target, faults.int(100, 4_000) * 1000);
    });
  }
  for (let i = 0; i < config.clientCrashes; i++) {
    world.at(at(), () => {
      const alive = clientProcesses.filter((p, n) => p?.alive && !finished[n]);
      if (healed || alive.length <= 1) return;
      stats.clientCrashes++;
      faults.pick(alive).kill("crash fault");
    });
  }
  for (let i = 0; i < config.storeOutages; i++) {
    world.at(at(), () => {
      if (healed) return;
      const forUs = faults.int(100, 6_000) * 1000;
      store.outageUntilUs = world.nowUs + forUs;
      world.trace.add(`store outage for ${forUs}us`);
    });
  }
  fenceAgent.failChance = config.fenceFailChance;
  world.at(config.windowUs, () => {
    healed = true;
    fenceAgent.failChance = 0;
    world.trace.add("--- healed: no more faults ---");
  });

  // ------------------------------------------------------------------ run
  const uncaught = (error: unknown): void => violate("crash", `thrown into the event loop: ${String((error as Error)?.stack ?? error)}`);
  process.on("uncaughtException", uncaught);
  process.on("unhandledRejection", uncaught);
  let events = 0;
  try {
    world.at(0, () => void startServer());
    for (let i = 0; i < config.clients; i++) world.at(prng.int(0, 100) * 1000, () => void runClient(i));
    // Long enough after healing for reconnects, recovery and fence deadlines to play out.
    const endUs = config.windowUs + 120_000_000;
    events = await world.run(endUs);
    if (violation === undefined && world.stopped !== null) violate("livelock", world.stopped);
    if (violation === undefined) {
      for (let i = 0; i < config.clients; i++) {
        const process = clientProcesses[i];
        if (process?.alive && finished[i] !== true) {
          violate("convergence", `c${i} has not finished its workload ${(endUs - config.windowUs) / 1e6} s after healing`);
        }
      }
    }
  } catch (error) {
    if (!(error instanceof Abort)) violate("crash", `the run threw: ${String((error as Error)?.stack ?? error)}`);
  } finally {
    process.off("uncaughtException", uncaught);
    process.off("unhandledRejection", uncaught);
    for (const undo of restore) undo();
    // Leave nothing behind: every process dies, so no promise of this run can touch the next one.
    for (const p of world.processes) if (p.alive) p.kill("end of run");
    await server?.runtime?.stop();
  }
  stats.fences = fenceAgent.fenced;
  stats.resets = world.network.resets;
  return {
    seed,
    events,
    traceHash: world.trace.hash,
    traceLines: world.trace.count,
    trace: world.trace.all,
    violation,
    stats,
  };
}

/**
 * The `early-invalidation-response` mutation: every invalidation is answered the moment it arrives (an
 * echo, as the machine would send later), and the machine's own answer, once its users released, is
 * dropped. The machine's state is left as it is: only the answer's timing is wrong.
 */
function answerInvalidationsEarly(machine: ClientLocks): void {
  const methods = machine as unknown as Record<string, (...args: unknown[]) => ClientLockEffect[]>;
  const early = new Set<number>();
  const withoutLateAnswers = (effects: ClientLockEffect[]): ClientLockEffect[] =>
    effects.filter((e) => e.type !== "send-invalidate-response" || !early.delete(e.requestId));
  for (const name of ["acquire", "release", "abort", "onGrant", "onRefuse", "invalidationDone", "onNewServer", "shutdown", "reset"]) {
    const original = methods[name]!.bind(machine);
    methods[name] = (...args: unknown[]) => withoutLateAnswers(original(...args));
  }
  const onInvalidate = methods.onInvalidate!.bind(machine);
  methods.onInvalidate = (...args: unknown[]) => {
    const [requestId, invalidation] = args as Parameters<ClientLocks["onInvalidate"]>;
    const effects = onInvalidate(requestId, invalidation);
    if (effects.some((e) => e.type === "send-invalidate-response" && e.requestId === requestId)) return effects;
    early.add(requestId);
    return [{ type: "send-invalidate-response", requestId, response: invalidation }, ...effects];
  };
}

/** Runs one seed and collects its protocol trace (for model/trace-check.ts). */
export async function runDriverSeedTraced(
  seed: number,
  options: Omit<DriverRunOptions, "traceSink"> = {},
): Promise<{ result: DriverRunResult; trace: TraceEvent[] }> {
  const trace: TraceEvent[] = [];
  const result = await runDriverSeed(seed, { ...options, traceSink: (event) => trace.push(event) });
  return { result, trace };
}

export function formatDriverViolation(v: DriverViolation, mutation: DriverMutation = "none"): string {
  const replay = `npm run sim -- --drivers --seed ${v.seed}${mutation === "none" ? "" : ` --mutation ${mutation}`}`;
  return `seed ${v.seed}: ${v.checker} at t=${(v.atUs / 1000).toFixed(3)}ms: ${v.detail} (replay: ${replay})`;
}

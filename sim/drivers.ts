/**
 * The lock simulator (issue 10): the real LockServerRuntime (runtime/server.ts) and real LockClients
 * (client/client.ts, connection.ts) run in the simulated world (sim-world.ts) under a random workload and
 * each seed's faults: server crashes (a new server with a greater term takes over from the durable
 * MemoryDatabase), connection resets, partitions, client crashes, store outages and fence failures; some
 * seeds are faultless. Nothing here mirrors a driver; private parts are reached only through
 * driver-parts.ts.
 *
 * The workload: 2–5 clients, each with 1–3 concurrent tasks acquiring random keys in random modes
 * (some nonblock), holding them a while, reading and writing a simulated resource under them; some seeds
 * keep few idle locks (idle releases: null requests); afterwards clients may close (farewell).
 *
 * Checkers (a violation stops the run; the report names the seed, the virtual time, the trace tail):
 * - exclusion: a handle granted to a client never conflicts (core/modes.ts `compatible`) with a valid
 *   handle another live client holds on the key, nor with the mode another client's application is still
 *   flushing under in its invalidation callback (B7); within one client, two handles held at once share
 *   (`handlesShare`: DESIGN §4).
 * - fencing: write-mode grants on a key carry strictly increasing tokens across servers (a client's
 *   cached re-grant may repeat its own; concurrent write_only holders are compared with exclusive grants
 *   only); a client learns EFENCED only after some server started fencing it.
 * - coherence: the application caches the resource's version per key under read-capable handles and drops
 *   it in its invalidation callback (unless it keeps a read-capable mode); a read under a handle must find
 *   its cache equal to the resource.
 * - honesty: no honest client ever gets EPROTO, and the server never logs a protocol error from one;
 *   nothing throws into the event loop (crash).
 * - departed: once a client's farewell was answered, the serving table holds no entry of it and the
 *   store no record (B5).
 * - convergence: once healed, every live client finishes its workload (no acquire or farewell hangs).
 * - quiet (after healing, at the end): one server serves, recovery is over; the table holds only granted
 *   entries, each of a live client that did not leave, in exactly the mode that client caches for the key;
 *   no client has a request or invalidation outstanding; the store's records are exactly the live clients
 *   that did not leave.
 * - model (with `checkModel`, on by default without hostile peers): the protocol trace observed in the real cores
 *   (drivers-trace.ts) is allowed, step by step, by the Promela model's rules (model/trace-check.ts).
 * Mutations (driver-mutations.ts) are wrappers around real parts; each is caught by one of these.
 * Relies on: sim-world.ts for determinism; runs are pure functions of (seed, options).
 */
import { LockServerRuntime } from "../src/runtime/server.js";
import { connectInWorld, type AcquireMode, type LockClient, type LockHandle } from "../src/client/client.js";
import { compatible, carriesWriteSeq, handlesShare, satisfies, type LockMode } from "../src/core/modes.js";
import { KeylockError } from "../src/core/errors.js";
import type { ClusterConfig } from "../src/store/store.js";
import { MemoryStore } from "../src/store/memory.js";
import { keyFromText, ridToHex, type Key } from "../src/core/keys.js";
import type { RecoveredLock, Rid } from "../src/core/lock-messages.js";
import { checkTrace, formatVerdict } from "../model/trace-check.js";
import { around, traceClientLocks, traceLockServer, type TraceSink } from "./drivers-trace.js";
import type { LockServer } from "../src/core/lock-server.js";
import type { ClientLocks } from "../src/core/client-locks.js";
import { recordClientParts, type ClientParts } from "./driver-parts.js";
import {
  DRIVER_MUTATIONS,
  isDriverMutation,
  mutateClient,
  serverSeam,
  mutateStore,
  nextTerm,
  type DriverMutation,
} from "./driver-mutations.js";
import { Prng } from "./prng.js";
import type { TraceEvent } from "./trace.js";
import { DEFAULT_NETWORK, SimFenceAgent, SimStore, SimWorld, type SimProcess } from "./sim-world.js";
import type { ViolationReport } from "./violation.js";
import { TokenOrder } from "./token-order.js";
import { HostilePeers, hostileCount, type HostileStats } from "./hostile-peer.js";

export { DRIVER_MUTATIONS, isDriverMutation, type DriverMutation };

export type DriverChecker =
  | "exclusion"
  | "fencing"
  | "coherence"
  | "honesty"
  | "crash"
  | "departed"
  | "liveness"
  | "convergence"
  | "quiet"
  | "model"
  | "livelock"
  | "greeting-deadline"
  | "resigned"
  | "invariant";

export interface DriverRunOptions {
  mutation?: DriverMutation;
  keepTrace?: boolean;
  /** Receives the run's protocol trace (sim/trace.ts events) observed in the real cores (drivers-trace.ts). */
  traceSink?: TraceSink;
  /** Check the protocol trace against the model's rules (model/trace-check.ts) at the end; default: true without hostile peers. */
  checkModel?: boolean;
  /** Changes the seed's drawn configuration (to force a rare path; see FAILOVER_HEAVY). */
  adjust?: (config: DriverConfig) => DriverConfig;
  /** Up to this many hostile simulated peers (hostile-peer.ts), the count drawn per seed; 0 by default. */
  hostile?: number;
}

export type DriverViolation = ViolationReport<DriverChecker>;

export interface DriverRunResult {
  readonly seed: number;
  readonly events: number;
  readonly traceHash: string;
  readonly traceLines: number;
  readonly trace: string[] | undefined;
  readonly violation: DriverViolation | undefined;
  readonly stats: DriverStats;
  /** What the hostile peers did (with `hostile`). */
  readonly hostile?: HostileStats;
}

export interface DriverStats {
  grants: number;
  serverStarts: number;
  resets: number;
  clientCrashes: number;
  fences: number;
  farewells: number;
  invalidations: number;
  reads: number;
  writes: number;
}

export function emptyDriverStats(): DriverStats {
  return { grants: 0, serverStarts: 0, resets: 0, clientCrashes: 0, fences: 0, farewells: 0, invalidations: 0, reads: 0, writes: 0 };
}

const ADDRESS = { host: "10.0.0.1", port: 7000 };
const SERVER = `${ADDRESS.host}:${ADDRESS.port}`;
const MODES: Record<AcquireMode, number> = { read: 5, write: 4, write_only: 1 };
/** Frames of one direction arrive in one read this often when another is in flight (sim-world.ts). */
const COALESCE_CHANCE = 0.3;
/**
 * A live client may be fenced only this long after a fault cut it off (its partition healed or its store
 * outage ended): reconnect timeout (2 s) + recovery timeout (3 s) + back-off and delays.
 */
const TROUBLE_SLACK_US = 6_000_000;

interface Held {
  readonly client: number;
  readonly process: SimProcess;
  readonly mode: AcquireMode;
  readonly handle: LockHandle;
}

export interface DriverConfig {
  readonly clients: number;
  readonly tasks: number;
  readonly keys: number;
  readonly opsPerTask: number;
  readonly idleLockLimit: number;
  readonly faulty: boolean;
  readonly windowUs: number;
  readonly serverCrashes: number;
  readonly resets: number;
  readonly partitions: number;
  readonly clientCrashes: number;
  readonly storeOutages: number;
  readonly fenceFailChance: number;
  readonly farewellChance: number;
  /** The chance a client closes as soon as it reconnected to a new server (farewell during recovery). */
  readonly leaveOnFailoverChance: number;
  /** The chance an invalidation callback takes 100–1500 ms (flushing while a failover happens: B7). */
  readonly slowFlushChance: number;
}

function drawConfig(prng: Prng): DriverConfig {
  const faulty = prng.chance(0.8);
  return {
    clients: prng.int(2, 5),
    tasks: prng.int(1, 3),
    keys: prng.int(1, 4),
    opsPerTask: prng.int(4, 15),
    idleLockLimit: prng.pick([1, 2, 10_000, 10_000]),
    faulty,
    windowUs: prng.int(300_000, 4_000_000),
    serverCrashes: faulty ? prng.int(0, 2) : 0,
    resets: faulty ? prng.int(0, 8) : 0,
    partitions: faulty ? prng.int(0, 1) : 0,
    clientCrashes: faulty ? prng.int(0, 1) : 0,
    storeOutages: faulty ? prng.int(0, 1) : 0,
    fenceFailChance: faulty ? prng.pick([0, 0, 0.2]) : 0,
    farewellChance: prng.pick([0, 0.5, 1]),
    leaveOnFailoverChance: prng.pick([0, 0, 0.3]),
    slowFlushChance: prng.pick([0, 0.05, 0.3]),
  };
}

/**
 * A profile that makes failovers meet everything else: every seed faulty, several server crashes, slow
 * invalidation callbacks, clients that leave as they reach a new server (B5, B7).
 */
export const FAILOVER_HEAVY = (config: DriverConfig): DriverConfig => ({
  ...config,
  faulty: true,
  serverCrashes: 5,
  slowFlushChance: 0.5,
  leaveOnFailoverChance: 0.5,
  opsPerTask: config.opsPerTask * 2,
});

/** Simulated time after healing for every client to finish its workload, then more, a step at a time, while handles are still granted. */
const CONVERGENCE_US = 120_000_000;
const CONVERGENCE_STEP_US = 60_000_000;
const CONVERGENCE_MAX_US = 900_000_000;

/** Runs one seed; resolves with its result (never rejects for a violation: that is in `violation`). */
export async function runDriverSeed(seed: number, options: DriverRunOptions = {}): Promise<DriverRunResult> {
  const mutation = options.mutation ?? "none";
  const world = new SimWorld(seed, { keepTrace: options.keepTrace === true, network: { ...DEFAULT_NETWORK, coalesceChance: COALESCE_CHANCE } });
  const prng = world.prng.fork("driver sim");
  const drawn = drawConfig(prng.fork("config"));
  const config = options.adjust?.(drawn) ?? drawn;
  const stats = emptyDriverStats();
  let violation: DriverViolation | undefined;
  const violate = (checker: DriverChecker, detail: string): void => {
    if (violation !== undefined) return;
    violation = { seed, checker, atUs: world.nowUs, detail, trace: world.trace.tail() };
    world.stopped = checker;
  };
  world.trace.add(`config ${JSON.stringify(config)} mutation ${mutation}`);
  const protocol: TraceEvent[] = [];
  // The model speaks for honest clients only: a hostile peer's accepted-then-refused frames are no model step.
  const checkModel = options.checkModel ?? (options.hostile ?? 0) === 0;
  const sink: TraceSink | undefined =
    checkModel || options.traceSink !== undefined
      ? (event) => {
          if (checkModel) protocol.push(event);
          options.traceSink?.(event);
        }
      : undefined;

  const store = new SimStore(world);
  const fenceAgent = new SimFenceAgent(world, prng.fork("fence"));
  /** Rids some server started fencing (a client may learn EFENCED only after that). */
  const fenceStarted = new Set<Rid>();
  const fence = fenceAgent.fence.bind(fenceAgent);
  /** Per client: until when a fault it suffered (reset, partition, store outage) may get it fenced. */
  const troubleUntilUs: number[] = [];
  const trouble = (client: number, forUs: number): void => {
    troubleUntilUs[client] = Math.max(troubleUntilUs[client] ?? 0, world.nowUs + forUs + TROUBLE_SLACK_US);
  };
  fenceAgent.fence = (target) => {
    fenceStarted.add(target.rid);
    const c = clientOf(target.rid);
    // A departed client's rid may be claimed afresh by another (a hostile peer replays it): not c's fence.
    if (clientProcesses[c]?.alive === true && departed[c] !== true && world.nowUs > (troubleUntilUs[c] ?? 0)) {
      violate("liveness", `c${c} is fenced (${target.reason}) though it is alive and no fault touched it for ${TROUBLE_SLACK_US / 1e6} s`);
    }
    return fence(target);
  };
  // Hostile peers attack the real server at the byte level (hostile-peer.ts; its own PRNG, its own checker).
  const keys = Array.from({ length: config.keys }, (_, i) => `k${i + 1}`);
  const hostile = (options.hostile ?? 0) > 0 ? new HostilePeers(world, { peers: hostileCount(seed, options.hostile!), server: SERVER, honestKeys: keys, windowUs: config.windowUs, violate }) : null;
  let healed = !config.faulty;
  const cluster: ClusterConfig = { clusterId: "sim", slots: [{ slot: 0, ...ADDRESS }], secretDigest: null, formattedAtMs: 0 };
  await new MemoryStore(world.database).format(cluster);

  // ------------------------------------------------------------------ the server (as the member runs it)
  let term = 0n;
  let server = null as { process: SimProcess; runtime: LockServerRuntime | null } | null;
  /** Each server's lock table, as its seam handed it over. */
  const tables = new Map<SimProcess, LockServer>();
  const tableOf = (runtime: LockServerRuntime): LockServer => {
    const table = server !== null && server.runtime === runtime ? tables.get(server.process) : undefined;
    if (table === undefined) throw new Error("sim/drivers: no lock table recorded for the serving runtime");
    return table;
  };
  const clientOfRid = new Map<Rid, number>();
  const clientOf = (rid: Rid): number => clientOfRid.get(rid) ?? -1;
  /**
   * Whether a server line about a client's protocol error is not about an honest client: its rid is none of
   * theirs (a hostile peer's, whatever name its greeting carried: a replayed farewell greeting is served
   * again without a proof, as a resent farewell must be, since the rid has no record and nothing to protect),
   * or, with hostile peers in the run, its honest client already said farewell (a session under that rid
   * now may be a replayer's, as with fences above). Without hostile peers nobody else can greet as a
   * departed client: a protocol error on its rid is its own (the farewell-skips-recovery mutation, B5,
   * shows as just that since recovery conflicts are settled by grant proofs).
   */
  const notAboutAnHonestClient = (line: string): boolean => {
    const about = /\bclient ([0-9a-f]{16})\b/.exec(line);
    if (about === null) return false;
    const c = clientOf(BigInt(`0x${about[1]}`));
    return c < 0 || (hostile !== null && departed[c] === true);
  };
  const startServer = async (): Promise<void> => {
    term = nextTerm(mutation, term);
    const process = world.spawn(`s${stats.serverStarts + 1}`);
    const current = { process, runtime: null as LockServerRuntime | null };
    server = current;
    stats.serverStarts++;
    try {
      const runtime = await LockServerRuntime.start({
        store: store.for(process, (s) => mutateStore(mutation, s)),
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
          if (/protocol error/.test(line) && hostile?.excuses(line) !== true && !notAboutAnHonestClient(line)) violate("honesty", `${process.name} logged: ${line}`);
        },
        onFatal: (reason) => crashServer(`fatal: ${reason}`),
        parts: serverSeam(
          mutation,
          { note: (text: string) => world.trace.add(`${process.name} ${text}`), clock: process.clock },
          (locks) => {
            tables.set(process, locks);
            if (sink !== undefined) traceLockServer(locks, term, clientOf, () => process.alive, sink);
          },
          () => current.runtime?.isStopping ?? !process.alive,
        ),
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
  const crashServer = (why: string): void => {
    const current = server;
    if (current === null || !current.process.alive) return;
    if (current.runtime !== null) sink?.({ e: "server-stop" });
    current.process.kill(why);
    void current.runtime?.stop();
    world.at(prng.int(500, 3_000) * 1000, () => void startServer());
  };
  /** The lock table of the server serving now, if one is. */
  const servingTable = () => {
    const current = server;
    return current !== null && current.process.alive && current.runtime !== null && !current.runtime.isStopping ? current.runtime : null;
  };

  // ------------------------------------------------------------------ checkers over the workload
  const holders = new Map<string, Held[]>();
  /** Per key and client: the mode an application invalidation callback is still flushing under (B7). */
  const flushing = new Map<string, Map<number, LockMode>>();
  /** Fencing: the tokens of write-mode grants per key only grow (token-order.ts). */
  const tokens = new TokenOrder();
  /** The simulated resource: a version per key, and each client's cached copy of it. */
  const resource = new Map<string, number>();
  const caches: Map<string, number>[] = [];
  const clientProcesses: SimProcess[] = [];
  const finished: boolean[] = [];
  const fenced: boolean[] = [];
  const departed: boolean[] = [];
  const closing: boolean[] = [];
  /** Per client: keys a recovery reported above the mode they ended at (see watchReportedAbove). */
  const reportedAbove: Set<Key>[] = [];
  const clients: (LockClient | null)[] = [];
  const clientPartsOf: ClientParts[] = [];
  /** When a handle was last granted to any client (convergence: is the workload still moving?). */
  let lastGrantUs = 0;
  const counts = (i: number): boolean => clientProcesses[i]?.alive === true && fenced[i] !== true;

  const onGrant = (held: Held, key: string): void => {
    stats.grants++;
    lastGrantUs = world.nowUs;
    const list = holders.get(key) ?? [];
    for (const other of list) {
      if (!other.process.alive || !other.handle.isValid) continue;
      if (other.client === held.client) {
        if (!handlesShare(other.mode, held.mode)) violate("exclusion", `c${held.client} holds two handles on ${key} at once: ${other.mode} and ${held.mode}`);
      } else if (!compatible(other.mode, held.mode, false)) {
        violate("exclusion", `c${held.client} granted ${key} ${held.mode} while c${other.client} holds it ${other.mode}`);
      }
    }
    for (const [client, mode] of flushing.get(key) ?? []) {
      if (client !== held.client && counts(client) && closing[client] !== true && !compatible(mode, held.mode, false)) {
        violate("exclusion", `c${held.client} granted ${key} ${held.mode} while c${client}'s application still flushes under ${mode}`);
      }
    }
    list.push(held);
    holders.set(key, list);
    if (carriesWriteSeq(held.mode)) {
      const problem = tokens.observe(key, held.mode, held.handle.writeSeq, held.client);
      if (problem !== null) violate("fencing", problem);
    }
    // Coherence: a read-capable handle reads through the client's cache.
    if (held.mode !== "write_only") {
      stats.reads++;
      const cache = caches[held.client]!;
      const now = resource.get(key) ?? 0;
      const cached = cache.get(key);
      if (cached !== undefined && cached !== now) {
        violate("coherence", `c${held.client} reads ${key} v${cached} from its cache under ${held.mode}; the resource is at v${now}`);
      }
      cache.set(key, now);
    }
  };
  const write = (held: Held, key: string): void => {
    if (!held.process.alive || !held.handle.isValid || held.handle.isReleased) return;
    stats.writes++;
    const version = (resource.get(key) ?? 0) + 1;
    resource.set(key, version);
    const cache = caches[held.client]!;
    if (held.mode === "write") cache.set(key, version);
    else cache.delete(key);
    world.trace.add(`c${held.client} writes ${key} v${version} with token ${held.handle.writeSeq}`);
  };
  const onRelease = (held: Held, key: string): void => {
    const list = holders.get(key) ?? [];
    const index = list.indexOf(held);
    if (index >= 0) list.splice(index, 1);
  };

  const runClient = async (index: number): Promise<void> => {
    const process = world.spawn(`c${index}`);
    clientProcesses[index] = process;
    caches[index] = new Map();
    const cprng = prng.fork(`client ${index}`);
    let rid = cprng.u64NonZero();
    fenceAgent.owners.set(rid, process);
    clientOfRid.set(rid, index);
    // The server said another client holds the rid (a hostile peer took it: known finding F2) before the
    // first greeting completed: the client greets again under a new one, and the old one is not c's.
    const ridChanged = (newRid: bigint): void => {
      world.trace.add(`c${index} greets again as ${ridToHex(newRid)}: ${ridToHex(rid)} is another client's`);
      fenceAgent.owners.delete(rid);
      clientOfRid.delete(rid);
      rid = newRid;
      fenceAgent.owners.set(rid, process);
      clientOfRid.set(rid, index);
    };
    const isFenced = (): boolean => fenced[index] === true;
    let client: LockClient;
    let traced: ReturnType<typeof traceClientLocks> | undefined;
    // The client's seam hands over its machine (the protocol trace goes on before its first call) and connection.
    const recorded = recordClientParts((machine) => {
      if (sink !== undefined) traced = traceClientLocks(machine, index, sink);
      reportedAbove[index] = watchReportedAbove(machine);
    }, ridChanged);
    try {
      client = await connectInWorld(
        {
          servers: [SERVER],
          name: `c${index}`,
          connectTimeoutMs: 600_000,
          idleLockLimit: config.idleLockLimit,
          onInvalidate: async (event) => {
            const key = new TextDecoder().decode(event.key);
            stats.invalidations++;
            const modes = flushing.get(key) ?? new Map<number, LockMode>();
            flushing.set(key, modes);
            modes.set(index, event.from);
            world.trace.add(`c${index} flushes ${key} ${event.from}->${event.to}`);
            // The application drops what it cached unless it keeps a mode it can read under.
            if (event.to !== "read" && event.to !== "write") caches[index]!.delete(key);
            await process.sleep(cprng.chance(config.slowFlushChance) ? cprng.int(100, 1_500) : cprng.int(0, 20));
            modes.delete(index);
            world.trace.add(`c${index} flushed ${key}`);
          },
        },
        process,
        rid,
        recorded.seam,
      );
    } catch (error) {
      world.trace.add(`c${index} could not connect: ${(error as Error).message}`);
      finished[index] = true;
      return;
    }
    clients[index] = client;
    const context = { note: (text: string) => world.trace.add(`c${index} ${text}`), clock: process.clock };
    if (traced !== undefined) process.onKill(() => traced?.out("died"));
    const parts = recorded.parts();
    clientPartsOf[index] = parts;
    mutateClient(mutation, parts, context);
    client.on("error", (error) => {
      world.trace.add(`c${index} error: ${error.message}`);
      if (error instanceof KeylockError && (error.code === "EPROTO" || error.code === "EAUTH")) violate("honesty", `c${index}: ${error.message}`);
    });
    client.on("fenced", () => {
      fenced[index] = true;
      caches[index]!.clear();
      world.trace.add(`c${index} fenced`);
      if (!fenceStarted.has(rid)) violate("fencing", `c${index} learned EFENCED though no server started fencing it`);
    });
    const task = async (t: number): Promise<void> => {
      const tprng = cprng.fork(`task ${t}`);
      for (let op = 0; op < config.opsPerTask && !isFenced() && closing[index] !== true; op++) {
        await process.sleep(tprng.int(0, 30));
        const key = `k${tprng.int(1, config.keys)}`;
        const mode = tprng.weighted(MODES);
        const nonblock = tprng.chance(0.1);
        let handle: LockHandle;
        try {
          handle = await client.acquire(key, mode, { nonblock });
        } catch (error) {
          world.trace.add(`c${index}/${t} acquire ${key} ${mode}: ${(error as Error).message}`);
          continue;
        }
        world.trace.add(`c${index}/${t} holds ${key} ${mode} seq=${handle.writeSeq}`);
        const held: Held = { client: index, process, mode, handle };
        onGrant(held, key);
        await process.sleep(tprng.int(0, 40));
        if (mode !== "read" && tprng.chance(0.7)) write(held, key);
        onRelease(held, key);
        if (!handle.isReleased) handle.release();
      }
    };
    /** Says farewell (once); the application counts as gone from here. */
    const farewell: { closed: Promise<void> | null } = { closed: null };
    const leave = (): Promise<void> =>
      (farewell.closed ??= (async () => {
        // close() does not wait for an invalidation callback still running (docs/simulation.md): as in the
        // model's P1, a closing client relies on nothing, so its flushes stop counting for exclusion.
        closing[index] = true;
        try {
          await client.close();
          if (isFenced()) return;
          departed[index] = true;
          stats.farewells++;
          world.trace.add(`c${index} said farewell`);
          const table = servingTable();
          const entries = table === null ? 0 : tableOf(table).clientLoad(rid).entries;
          if (entries > 0) violate("departed", `c${index}'s farewell was answered but the table still holds ${entries} of its entries`);
          if (world.database.clients.has(rid)) violate("departed", `c${index}'s farewell was answered but the store still has its record`);
        } catch (error) {
          world.trace.add(`c${index} close: ${(error as Error).message}`);
        }
      })());
    const leavesOnFailover = cprng.chance(config.leaveOnFailoverChance);
    client.on("reconnect", (info: { newServer: boolean }) => {
      if (!info.newServer || !leavesOnFailover || farewell.closed !== null) return;
      world.trace.add(`c${index} leaves as it reaches a new server`);
      void leave();
    });
    await Promise.all(Array.from({ length: config.tasks }, (_, t) => task(t)));
    if (farewell.closed !== null) await farewell.closed;
    else if (!isFenced() && cprng.chance(config.farewellChance)) await leave();
    finished[index] = true;
  };

  /** After healing: one server, no recovery, the table and the store agree with the live clients. */
  const checkQuiet = (): void => {
    const runtime = servingTable();
    if (runtime === null) return violate("quiet", "no server serves after healing");
    if (runtime.recovering) return violate("quiet", "the server still recovers after healing");
    const locks = tableOf(runtime);
    const staying = new Map<Rid, number>();
    for (const [rid, i] of clientOfRid) if (counts(i) && departed[i] !== true && clients[i] != null) staying.set(rid, i);
    const granted = new Map<string, LockMode>();
    for (const entry of locks.dump()) {
      const c = clientOf(entry.rid);
      if (!staying.has(entry.rid)) return violate("quiet", `the table holds ${entry.key} ${entry.mode} (${entry.state}) of c${c}, which is gone`);
      if (entry.state !== "granted") return violate("quiet", `the table still has ${entry.key} ${entry.mode} ${entry.state} for c${c}`);
      granted.set(`${entry.rid}:${entry.key}`, entry.mode);
    }
    for (const [rid, i] of staying) {
      const machine = clientPartsOf[i]!.machine;
      for (let k = 1; k <= config.keys; k++) {
        const key: Key = keyFromText(`k${k}`);
        const view = machine.view(key);
        if (view !== undefined && (view.requestPending !== null || view.invalidations > 0 || view.waiters > 0)) {
          return violate("quiet", `c${i} still has ${key} ${view.requestPending !== null ? `requested ${view.requestPending}` : view.waiters > 0 ? "waiters" : "invalidations"} outstanding`);
        }
        const mine = view?.mode ?? "null";
        const theirs = granted.get(`${rid}:${key}`) ?? "null";
        // By design (B7; reference §6.12): recovery reported the pre-invalidation mode while a dead server's
        // invalidation ran, and the new server, which has not needed the key since, still believes it.
        const staleHigh = reportedAbove[i]?.has(key) === true && satisfies(theirs, mine);
        if (mine !== theirs && !staleHigh) return violate("quiet", `c${i} caches ${key} ${mine}, the server's table grants it ${theirs}`);
      }
    }
    for (const rid of world.database.clients.keys()) {
      if (!staying.has(rid)) return violate("quiet", `the store keeps the record of c${clientOf(rid)}, which is gone`);
    }
    for (const [rid, i] of staying) if (!world.database.clients.has(rid)) return violate("quiet", `the store has no record of c${i}`);
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
      const c = clientProcesses.indexOf(process);
      for (const end of [...process.ends]) world.network.reset(end.link, "reset fault");
      trouble(c, 0);
      // Often the client stays away a little (below the reconnect timeout): the server keeps sending meanwhile.
      const target = server?.process;
      if (target !== undefined && faults.chance(0.5)) {
        const forUs = faults.int(1, 800) * 1000;
        world.network.partition(process, target, forUs);
        trouble(c, forUs);
      }
    });
  }
  for (let i = 0; i < config.partitions; i++) {
    world.at(at(), () => {
      const target = server?.process;
      const candidates = clientProcesses.filter((p) => p?.alive);
      if (healed || candidates.length === 0 || target === undefined) return;
      const process = faults.pick(candidates);
      const forUs = faults.int(100, 4_000) * 1000;
      world.network.partition(process, target, forUs);
      trouble(clientProcesses.indexOf(process), forUs);
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
      for (let c = 0; c < config.clients; c++) trouble(c, forUs);
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
    // Long enough after healing for reconnects, recovery and fence deadlines to play out. A workload that
    // is still being granted handles gets more time, a step at a time (slow callbacks on one hot key in
    // every mode can need minutes: seeds 7213330 and 7214354 with --failover-heavy), up to a cap; one
    // that nobody is granted anything in for a whole step has stopped.
    const unfinished = (): number => clientProcesses.findIndex((process, i) => process?.alive === true && finished[i] !== true);
    let endUs = config.windowUs + CONVERGENCE_US;
    events = await world.run(endUs);
    while (violation === undefined && world.stopped === null && unfinished() >= 0 && lastGrantUs > endUs - CONVERGENCE_STEP_US &&
      endUs < config.windowUs + CONVERGENCE_MAX_US) {
      endUs += CONVERGENCE_STEP_US;
      events += await world.run(endUs);
    }
    if (violation === undefined && world.stopped !== null) violate("livelock", world.stopped);
    const stuck = unfinished();
    if (violation === undefined && stuck >= 0) {
      const after = `${(endUs - config.windowUs) / 1e6} s after healing`;
      violate(
        "convergence",
        lastGrantUs > endUs - CONVERGENCE_STEP_US
          ? `c${stuck} never finished its workload: still being granted handles ${after}, the most allowed`
          : `c${stuck} never finished its workload: nothing granted to anyone in the last ${CONVERGENCE_STEP_US / 1e6} s (${after})`,
      );
    }
    if (violation === undefined) checkQuiet();
    if (violation === undefined && checkModel) {
      const verdict = checkTrace(protocol);
      if (!verdict.ok) violate("model", formatVerdict(verdict));
    }
  } catch (error) {
    violate("crash", `the run threw: ${String((error as Error)?.stack ?? error)}`);
  } finally {
    process.off("uncaughtException", uncaught);
    process.off("unhandledRejection", uncaught);
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
    ...(hostile !== null ? { hostile: hostile.stats } : {}),
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

/** The command that replays `seed` (with `mutation`, the failover-heavy profile when `heavy`, and `hostile` peers). */
export function replayCommand(seed: number, mutation: DriverMutation = "none", heavy = false, hostile = 0): string {
  return `npm run sim -- --seed ${seed}${mutation === "none" ? "" : ` --mutation ${mutation}`}${heavy ? " --failover-heavy" : ""}${hostile > 0 ? ` --hostile ${hostile}` : ""}`;
}

/** One line: seed, checker, virtual time, detail, replay command. */
export function formatDriverViolation(v: DriverViolation, mutation: DriverMutation = "none", heavy = false, hostile = 0): string {
  return `seed ${v.seed}: ${v.checker} at t=${(v.atUs / 1000).toFixed(3)}ms: ${v.detail} (replay: ${replayCommand(v.seed, mutation, heavy, hostile)})`;
}

/**
 * The keys a client's recovery reported above the mode the lock then held (B7: its pre-invalidation mode,
 * an invalidation of the dead server being in progress), until a grant or an invalidation on the key (the
 * new server's own) brings the two views together again. Watches the machine's methods, as the trace does.
 */
function watchReportedAbove(machine: ClientLocks): Set<Key> {
  const keys = new Set<Key>();
  around(machine, "recoverBatch", () => undefined, (batch: RecoveredLock[]) => {
    for (const lock of batch) if (lock.mode !== (machine.view(lock.key)?.mode ?? "null")) keys.add(lock.key);
  });
  around(machine, "onGrant", (grant: { key: Key }) => void keys.delete(grant.key), () => undefined);
  around(machine, "onInvalidate", (_requestId: number, invalidation: { key: Key }) => void keys.delete(invalidation.key), () => undefined);
  return keys;
}

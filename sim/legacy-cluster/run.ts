/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * One simulator run: `runSeed(seed, options)` draws every knob from the seed, builds the world, and runs
 * three phases, checking invariants after every event (checkers.ts):
 *   1. active: the random workload runs while the seed's faults (faults.ts: server crashes and restarts,
 *      connection resets, client crashes, fence agent failures, each seed its own profile, some none)
 *      happen inside the faulty window; after it the world heals. The phase ends when every task finished
 *      and the queue drained; then the quiescence checks (liveness after healing: recovery finished,
 *      every live client connected, every waiter resolved, nothing stuck anywhere, the lock table and
 *      the store consistent with the clients).
 *   2. forced shrink: the live clients cycle private keys until the idle-lock limit released every hot
 *      key through null requests; then nothing hot is left on any client or on the server.
 *   3. farewell: every live client closes in turn (shutdown, farewell request, onClientGone, record
 *      deleted, farewell response, reset); then the server table and the store's records are empty and
 *      no client holds a lock object. Dead and fenced clients were reclaimed in phase 1.
 * The first violation stops the run; its report carries the seed, the checker, the virtual time and
 * the last trace lines. A machine that throws is a violation too (checker `machine-threw`).
 *
 * Guarantees: the result (including `traceHash`, a hash of every trace line) is a pure function of
 * (seed, options); nothing reads a real clock or Math.random.
 * Relies on: world.ts (clock, network, nodes), workload.ts, checkers.ts.
 */
import { RECOVER_BATCH_LOCKS_MAX } from "../../src/core/lock-messages.js";
import { Checkers, Violation, type CheckerName, type Coverage, type Notes } from "./checkers.js";
import { Faults, type FaultConfig } from "./faults.js";
import { attachProtocolTrace, type TraceEvent } from "./trace.js";
import { Prng } from "../prng.js";
import {
  MachineThrew,
  World,
  formatUs,
  type CallbackConfig,
  type Mutation,
  type NetworkConfig,
  type ServerConfig,
} from "./world.js";
import { Workload, hotKeys, shrinkThenFarewell, type WorkloadConfig } from "./workload.js";

export interface RunOptions {
  /** Number of clients (2–8); drawn from the seed when absent. */
  readonly clients?: number;
  readonly mutation?: Mutation;
  /** Keep every trace line in the result (for --verbose and tests). */
  readonly keepTrace?: boolean;
  /**
   * Also run the `trylock` checker (checkers.ts). Off by default: today's machines refuse a nonblock
   * request that conflicts only with the requester's own idle cached grant (reported finding).
   */
  readonly strictTrylock?: boolean;
  /**
   * Also report, as a violation, the one remaining reported finding in today's drivers (checkers.ts,
   * "With `findings`": stale server grants after failover); by default it is counted in `notes` only.
   */
  readonly findings?: boolean;
  /**
   * Check recovery reports against what the application still uses (checkers.ts `recovery`); on by
   * default. Tests turn it off to show that the outcome of a wrong report (B7) is caught as well.
   */
  readonly checkRecoveryReports?: boolean;
  /**
   * Stress profile (`--stress`): every seed faulty, with many server crashes, long partitions, slow
   * returns, slow store writes, long-held handles and fence agents that do not kill. Rare interleavings
   * of recovery and fencing become common; the other knobs are still drawn from the seed.
   */
  readonly stress?: boolean;
  /** Adjusts the drawn configuration (tests forcing rare paths: one hot key, idle limit 0, ...). */
  readonly adjust?: (config: SimConfig) => SimConfig;
  /** Events one phase may take before it counts as not converging (a livelock). */
  readonly phaseEventsMax?: number;
  /** Receives the protocol trace (sim/trace.ts), for model/trace-check.ts. */
  readonly traceSink?: (event: TraceEvent) => void;
}

export interface SimConfig {
  readonly clients: number;
  readonly hotKeys: number;
  readonly idleLockLimit: number;
  readonly network: NetworkConfig;
  readonly callback: CallbackConfig;
  readonly workload: WorkloadConfig;
  readonly server: ServerConfig;
  readonly faults: FaultConfig;
  /** Locks per recovery batch a client sends (1 forces the many-batch path). */
  readonly recoverBatchMax: number;
  readonly mutation: Mutation;
}

export interface ViolationReport {
  readonly seed: number;
  readonly checker: CheckerName;
  readonly detail: string;
  readonly atUs: number;
  readonly phase: string;
  /** The last trace lines before the violation, oldest first. */
  readonly tail: readonly string[];
}

export interface RunResult {
  readonly seed: number;
  readonly config: SimConfig;
  readonly violation: ViolationReport | undefined;
  readonly events: number;
  readonly traceLines: number;
  readonly traceHash: string;
  readonly virtualUs: number;
  readonly acquires: number;
  readonly coverage: Coverage;
  readonly notes: Notes;
  readonly trace: readonly string[] | undefined;
}

const PHASE_EVENTS_MAX = 2_000_000;

/** Every knob of one run, drawn from its own fork of the seed. */
export function drawConfig(seed: number, options: RunOptions = {}): SimConfig {
  const p = new Prng(seed).fork("config");
  // Drawn even when fixed by the options, so --clients C leaves the rest of the seed's configuration alone.
  const drawnClients = p.int(2, 8);
  const clients = options.clients ?? drawnClients;
  if (!Number.isInteger(clients) || clients < 1 || clients > 64)
    throw new RangeError(`clients must be 1..64, got ${clients}`);
  const hot = p.pick([2, 2, 3, 4, 5]);
  const delayMinUs = p.pick([0, 10, 100, 200]);
  const opsPerTask = p.int(4, 20);
  // Now and then some clients (never all) close mid-run while the others carry on.
  const leaverCount = p.chance(0.3) ? p.int(1, Math.max(1, Math.floor(clients / 2))) : 0;
  const leavers: number[] = [];
  while (leavers.length < Math.min(leaverCount, clients - 1)) {
    const c = p.int(0, clients - 1);
    if (!leavers.includes(c)) leavers.push(c);
  }
  // Failures and recovery draw from their own fork, so the knobs above keep their values per seed.
  const f = new Prng(seed).fork("faults");
  const enabled = f.chance(0.8);
  const faults: FaultConfig = {
    enabled,
    windowUs: f.pick([30_000, 100_000, 300_000, 1_000_000]),
    serverCrashes: enabled ? f.pick([0, 1, 1, 2, 3]) : 0,
    resets: enabled ? f.pick([0, 1, 3, 8]) : 0,
    clientCrashes: enabled && f.chance(0.25) ? f.int(1, Math.max(1, Math.floor(clients / 3))) : 0,
    detectMaxUs: f.pick([0, 1_000, 20_000]),
    lateChance: f.pick([0, 0.3, 0.8]),
    longPartitionChance: f.pick([0, 0.1, 0.3]),
    slowReturnChance: f.pick([0, 0, 0.1, 0.3]),
    farewellCrashChance: enabled ? f.pick([0, 0.3, 1]) : 0,
  };
  const server: ServerConfig = {
    // Both well above the 100 ms reconnect delay; short enough that a slow client is fenced in a run.
    reconnectTimeoutUs: f.pick([150_000, 300_000, 1_000_000]),
    recoveryTimeoutUs: f.pick([250_000, 500_000, 2_000_000]),
    // A tiny block runs out between reservations: write grants then wait for the store (DESIGN §9).
    seqBlock: f.pick([4n, 1_000n, 1_000_000n]),
    storeLatencyMaxUs: f.pick([0, 200, 2_000, 20_000]),
    restartMinUs: 1_000,
    restartMaxUs: f.pick([5_000, 50_000, 200_000]),
    fenceDelayMaxUs: f.pick([1_000, 20_000]),
    fenceFailChance: enabled ? f.pick([0, 0.3, 0.6]) : 0,
    fenceKills: f.chance(0.6),
  };
  // Rare paths forced on purpose (STYLE): one lock per recovery batch, callbacks slower than a failover.
  const recoverBatchMax = f.chance(0.3) ? 1 : f.pick([2, RECOVER_BATCH_LOCKS_MAX]);
  const verySlowCallbacks = f.chance(0.2);
  // Handles held across failovers and fences (a handle from before a crash stays valid unless fenced).
  const longHolds = f.chance(0.15);
  const verySlow = (c: CallbackConfig): CallbackConfig =>
    verySlowCallbacks ? { ...c, slowChance: Math.max(c.slowChance, 0.1), slowMaxUs: 300_000 } : c;
  return {
    clients,
    hotKeys: hot,
    // Below the number of hot keys, so acquires keep shrinking; now and then 0 (every idle lock goes at once).
    idleLockLimit: p.chance(0.1) ? 0 : p.int(1, Math.min(3, hot)),
    network: {
      delayMinUs,
      delayMaxUs: delayMinUs + p.pick([100, 1000, 3000]),
      spikeChance: p.pick([0, 0.02, 0.1]),
      spikeMaxUs: p.int(5_000, 30_000),
    },
    callback: verySlow({
      maxUs: p.pick([0, 500, 3000]),
      slowChance: p.pick([0, 0.05, 0.2]),
      slowMaxUs: p.int(5_000, 20_000),
    }),
    workload: {
      tasksPerClient: p.int(1, 5),
      opsPerTask,
      modeWeights: { read: p.int(1, 5), write: p.int(1, 5), write_only: p.int(0, 3) },
      nonblockChance: p.pick([0, 0.1, 0.3]),
      abortChance: p.pick([0, 0.1, 0.3]),
      abortMaxUs: p.pick([100, 2_000, 10_000]),
      holdMaxUs: ((us: number) => (longHolds ? 300_000 : us))(p.pick([0, 2_000, 10_000])),
      thinkMaxUs: p.pick([0, 1_000, 5_000]),
      pairChance: p.pick([0, 0.2, 0.5]),
      midWriteChance: p.pick([0, 0.5]),
      leavers,
      leaverOpsPerTask: p.int(0, opsPerTask),
    },
    server,
    faults,
    recoverBatchMax,
    mutation: options.mutation ?? "none",
  };
}

export function runSeed(seed: number, options: RunOptions = {}): RunResult {
  const drawn = drawConfig(seed, options);
  const profiled = options.stress === true ? stressed(drawn) : drawn;
  const config = options.adjust?.(profiled) ?? profiled;
  const prng = new Prng(seed);
  const keys = hotKeys(config.hotKeys);
  const world = new World(
    {
      clients: config.clients,
      idleLockLimit: config.idleLockLimit,
      network: config.network,
      callback: config.callback,
      server: config.server,
      recoverBatchMax: config.recoverBatchMax,
      mutation: config.mutation,
      keepTrace: options.keepTrace ?? false,
    },
    prng.fork("world"),
    (w) => {
      const checkers = new Checkers(w, keys, {
        strictTrylock: options.strictTrylock ?? false,
        findings: options.findings ?? true,
        checkRecoveryReports: options.checkRecoveryReports ?? true,
      });
      return options.traceSink === undefined ? checkers : attachProtocolTrace(checkers, options.traceSink);
    },
  );
  const phaseEventsMax = options.phaseEventsMax ?? PHASE_EVENTS_MAX;
  let events = 0;
  let phase = "setup";

  const runUntilQuiet = (): void => {
    let phaseEvents = 0;
    while (world.clock.step()) {
      events++;
      world.checkers.afterEvent();
      if (++phaseEvents > phaseEventsMax) {
        throw new Violation("liveness", `${phase}: not quiet after ${phaseEventsMax} events (livelock?)`);
      }
    }
  };

  let violation: ViolationReport | undefined;
  try {
    phase = "active";
    const workload = new Workload(world, keys, config.workload, prng.fork("workload"));
    world.start();
    workload.start();
    new Faults(world, config.faults, prng.fork("faults")).start();
    runUntilQuiet();
    world.checkers.atQuiet(phase);
    if (workload.running !== 0)
      throw new Violation("liveness", `${phase}: ${workload.running} tasks never finished`);

    shrinkThenFarewell(world, keys, config.hotKeys + config.idleLockLimit + 4, runUntilQuiet, (next) => (phase = next));
  } catch (error) {
    const { checker, detail } = describeFailure(error);
    violation = { seed, checker, detail, atUs: world.clock.nowUs, phase, tail: world.trace.tail() };
  }
  let acquires = 0;
  for (const c of world.clients) acquires += c.waiters.size;
  return {
    seed,
    config,
    violation,
    events,
    traceLines: world.trace.count,
    traceHash: world.trace.hash,
    virtualUs: world.clock.nowUs,
    acquires,
    coverage: world.checkers.coverage,
    notes: world.checkers.notes,
    trace: world.trace.all,
  };
}

/** The stress profile (RunOptions.stress) applied to a drawn configuration. */
/** What a run's exception means: a checker's violation, a machine that threw, or a bug in the simulator. */
export function describeFailure(error: unknown): { checker: CheckerName; detail: string } {
  if (error instanceof Violation) return { checker: error.checker, detail: error.detail };
  if (error instanceof MachineThrew) return { checker: "machine-threw", detail: error.message };
  const detail = error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ""}` : String(error);
  return { checker: "sim-error", detail };
}

export function stressed(c: SimConfig): SimConfig {
  return {
    ...c,
    faults: {
      ...c.faults,
      enabled: true,
      windowUs: 1_000_000,
      serverCrashes: 3,
      resets: 6,
      longPartitionChance: 0.5,
      slowReturnChance: 0.3,
    },
    server: { ...c.server, fenceKills: false, storeLatencyMaxUs: 50_000 },
    workload: { ...c.workload, holdMaxUs: Math.max(c.workload.holdMaxUs, 100_000) },
  };
}

/** The command that replays one seed with the same options. */
export function replayCommand(seed: number, options: RunOptions = {}): string {
  let cmd = `npm run sim -- --seed ${seed}`;
  if (options.clients !== undefined) cmd += ` --clients ${options.clients}`;
  if (options.mutation !== undefined && options.mutation !== "none") cmd += ` --mutation ${options.mutation}`;
  if (options.strictTrylock === true) cmd += " --strict-trylock";
  if (options.stress === true) cmd += " --stress";
  if (options.findings === true) cmd += " --findings";
  return cmd;
}

/** One line: seed, checker, virtual time, detail, replay command. */
export function formatViolation(v: ViolationReport, options: RunOptions = {}): string {
  return `seed ${v.seed}: ${v.checker} violation at ${formatUs(v.atUs)} (${v.phase}): ${v.detail} — replay: ${replayCommand(v.seed, options)}`;
}

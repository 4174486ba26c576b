/**
 * One simulator run: `runSeed(seed, options)` draws every knob from the seed, builds the world, and runs
 * three phases, checking invariants after every event (checkers.ts):
 *   1. active: the random workload runs until every task finished its operations and the queue drained
 *      (some clients may close early, see workload.ts); then the quiescence checks (liveness: every
 *      waiter resolved, nothing stuck anywhere).
 *   2. forced shrink: clients cycle private keys until the idle-lock limit released every hot key
 *      through null requests; then nothing hot is left on any client or on the server.
 *   3. farewell: every remaining client closes in turn (shutdown, farewell message, onClientGone, farewell
 *      response, reset); then the server table is empty and no client holds a lock object.
 * The first violation stops the run; its report carries the seed, the checker, the virtual time and
 * the last trace lines. A machine that throws is a violation too (checker `machine-threw`).
 *
 * Guarantees: the result (including `traceHash`, a hash of every trace line) is a pure function of
 * (seed, options); nothing reads a real clock or Math.random.
 * Relies on: world.ts (clock, network, nodes), workload.ts, checkers.ts.
 */
import { Checkers, Violation, type CheckerName, type Coverage } from "./checkers.js";
import { Prng } from "./prng.js";
import {
  MachineThrew,
  World,
  formatUs,
  type CallbackConfig,
  type Mutation,
  type NetworkConfig,
} from "./world.js";
import { Workload, hotKeys, startForcedShrink, type WorkloadConfig } from "./workload.js";

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
  /** Adjusts the drawn configuration (tests forcing rare paths: one hot key, idle limit 0, ...). */
  readonly adjust?: (config: SimConfig) => SimConfig;
  /** Events one phase may take before it counts as not converging (a livelock). */
  readonly phaseEventsMax?: number;
}

export interface SimConfig {
  readonly clients: number;
  readonly hotKeys: number;
  readonly idleLockLimit: number;
  readonly network: NetworkConfig;
  readonly callback: CallbackConfig;
  readonly workload: WorkloadConfig;
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
    callback: {
      maxUs: p.pick([0, 500, 3000]),
      slowChance: p.pick([0, 0.05, 0.2]),
      slowMaxUs: p.int(5_000, 20_000),
    },
    workload: {
      tasksPerClient: p.int(1, 5),
      opsPerTask,
      modeWeights: { read: p.int(1, 5), write: p.int(1, 5), write_only: p.int(0, 3) },
      nonblockChance: p.pick([0, 0.1, 0.3]),
      abortChance: p.pick([0, 0.1, 0.3]),
      abortMaxUs: p.pick([100, 2_000, 10_000]),
      holdMaxUs: p.pick([0, 2_000, 10_000]),
      thinkMaxUs: p.pick([0, 1_000, 5_000]),
      pairChance: p.pick([0, 0.2, 0.5]),
      midWriteChance: p.pick([0, 0.5]),
      leavers,
      leaverOpsPerTask: p.int(0, opsPerTask),
    },
    mutation: options.mutation ?? "none",
  };
}

export function runSeed(seed: number, options: RunOptions = {}): RunResult {
  const drawn = drawConfig(seed, options);
  const config = options.adjust?.(drawn) ?? drawn;
  const prng = new Prng(seed);
  const keys = hotKeys(config.hotKeys);
  const world = new World(
    {
      clients: config.clients,
      idleLockLimit: config.idleLockLimit,
      network: config.network,
      callback: config.callback,
      mutation: config.mutation,
      keepTrace: options.keepTrace ?? false,
    },
    prng.fork("world"),
    (w) => new Checkers(w, keys, { strictTrylock: options.strictTrylock ?? false }),
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
    workload.start();
    runUntilQuiet();
    world.checkers.atQuiet(phase);
    if (workload.running !== 0)
      throw new Violation("liveness", `${phase}: ${workload.running} tasks never finished`);

    phase = "shrink";
    world.trace.add("--- forced shrink ---");
    startForcedShrink(world, keys, config.hotKeys + config.idleLockLimit + 4);
    runUntilQuiet();
    world.checkers.atQuiet(phase);
    world.checkers.afterShrink();

    phase = "farewell";
    world.trace.add("--- farewell ---");
    for (const client of world.clients) {
      if (client.leaving) continue;
      client.leave();
      runUntilQuiet();
    }
    world.checkers.afterFarewell();
  } catch (error) {
    let checker: CheckerName;
    let detail: string;
    if (error instanceof Violation) {
      checker = error.checker;
      detail = error.detail;
    } else if (error instanceof MachineThrew) {
      checker = "machine-threw";
      detail = error.message;
    } else {
      checker = "sim-error";
      detail =
        error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ""}` : String(error);
    }
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
    trace: world.trace.all,
  };
}

/** The command that replays one seed with the same options. */
export function replayCommand(seed: number, options: RunOptions = {}): string {
  let cmd = `npm run sim -- --seed ${seed}`;
  if (options.clients !== undefined) cmd += ` --clients ${options.clients}`;
  if (options.mutation !== undefined && options.mutation !== "none") cmd += ` --mutation ${options.mutation}`;
  if (options.strictTrylock === true) cmd += " --strict-trylock";
  return cmd;
}

/** One line: seed, checker, virtual time, detail, replay command. */
export function formatViolation(v: ViolationReport, options: RunOptions = {}): string {
  return `seed ${v.seed}: ${v.checker} violation at ${formatUs(v.atUs)} (${v.phase}): ${v.detail} — replay: ${replayCommand(v.seed, options)}`;
}

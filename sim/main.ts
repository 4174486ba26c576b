/**
 * The lock simulator's command line (`npm run sim -- ...`): the real LockServerRuntime and LockClients in
 * the simulated world (drivers.ts over sim-world.ts).
 *
 *   --seeds N [--base B]  run seeds B..B+N-1 (B = 1 by default)
 *   --seed S              replay one seed: its result and the last trace lines of a violation
 *   --verbose             with --seed: print the whole trace
 *   --mutation M          run with a deliberately wrong part (driver-mutations.ts) to see a checker fail
 *   --trace FILE          with --seed: write the protocol trace observed in the production cores
 *                         (drivers-trace.ts, sim/trace.ts events) as JSON lines, for
 *                         `tsx model/trace-check.ts FILE` (docs/model.md)
 *   --failover-heavy      the failover-heavy profile (drivers.ts FAILOVER_HEAVY): many crashes, slow
 *                         invalidation callbacks, clients leaving as they reach a new server
 *   --no-model            skip the model checker (trace validation at the end of every run)
 *   --hostile N           add up to N hostile simulated peers per seed (hostile-peer.ts; the count is
 *                         drawn from the seed): byte-level attacks on the real server
 *   --drivers             accepted and ignored (the simulator always runs the production drivers)
 *
 * Prints one line per failing seed (seed, checker, virtual time, detail, replay command) and ends with
 * the line `N seeds, V violations`; the exit status is 1 when V > 0, 2 on bad arguments.
 * Relies on: runs being pure functions of (seed, options), so a printed replay command reproduces the run.
 */
import { writeFileSync } from "node:fs";
import type { TraceEvent } from "./trace.js";
import { DRIVER_MUTATIONS, FAILOVER_HEAVY, emptyDriverStats, formatDriverViolation, isDriverMutation, runDriverSeed, type DriverMutation } from "./drivers.js";

function usage(problem: string): never {
  console.error(`sim: ${problem}`);
  console.error("usage: npm run sim -- --seeds N [--base B] | --seed S [--verbose] [--trace FILE]  [--mutation M] [--failover-heavy] [--no-model] [--hostile N]");
  console.error(`mutations: ${DRIVER_MUTATIONS.join(", ")}`);
  process.exit(2);
}

async function main(argv: readonly string[]): Promise<void> {
  let seeds: number | undefined;
  let seed: number | undefined;
  let base = 1;
  let verbose = false;
  let checkModel = true;
  let heavy = false;
  let trace: string | undefined;
  let mutation: DriverMutation = "none";
  let hostile = 0;
  const whole = (flag: string, value: string | undefined, min: number): number => {
    if (value === undefined || !/^\d+$/.test(value) || Number(value) < min) usage(`${flag} needs a whole number >= ${min}, got ${value ?? "nothing"}`);
    return Number(value);
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--drivers") continue;
    else if (flag === "--seeds") seeds = whole(flag, argv[++i], 1);
    else if (flag === "--seed") seed = whole(flag, argv[++i], 0);
    else if (flag === "--base") base = whole(flag, argv[++i], 0);
    else if (flag === "--verbose") verbose = true;
    else if (flag === "--no-model") checkModel = false;
    else if (flag === "--failover-heavy") heavy = true;
    else if (flag === "--hostile") hostile = whole(flag, argv[++i], 0);
    else if (flag === "--trace") {
      trace = argv[++i];
      if (trace === undefined) usage("--trace needs a file name");
    } else if (flag === "--mutation") {
      const m = argv[++i] ?? "";
      if (!isDriverMutation(m)) usage(`unknown mutation "${m}"`);
      mutation = m;
    } else usage(`unknown argument ${flag}`);
  }
  if ((seeds === undefined) === (seed === undefined)) usage("give either --seeds N or --seed S");
  if (trace !== undefined && seed === undefined) usage("--trace goes with --seed S");
  const first = seed ?? base;
  const count = seed === undefined ? seeds! : 1;
  const started = performance.now();
  const total = emptyDriverStats();
  let violations = 0;
  let events = 0;
  const attacks = { cases: 0, greeted: 0, refuted: 0, connections: 0, bytesSent: 0, closed: 0 };
  for (let s = first; s < first + count; s++) {
    const protocol: TraceEvent[] = [];
    const result = await runDriverSeed(s, {
      mutation,
      keepTrace: verbose,
      ...(checkModel ? {} : { checkModel: false }),
      hostile,
      ...(heavy ? { adjust: FAILOVER_HEAVY } : {}),
      ...(trace !== undefined ? { traceSink: (event: TraceEvent) => protocol.push(event) } : {}),
    });
    if (trace !== undefined) {
      writeFileSync(trace, protocol.map((event) => JSON.stringify(event)).join("\n") + "\n");
      console.log(`protocol trace: ${protocol.length} events in ${trace}`);
    }
    events += result.events;
    for (const name of Object.keys(total) as (keyof typeof total)[]) total[name] += result.stats[name];
    if (result.hostile !== undefined) for (const name of Object.keys(attacks) as (keyof typeof attacks)[]) attacks[name] += result.hostile[name];
    if (verbose) for (const line of result.trace ?? []) console.log(`  ${line}`);
    if (result.violation !== undefined) {
      violations++;
      console.log(formatDriverViolation(result.violation, mutation, heavy, hostile));
      if (count === 1 && !verbose) for (const line of result.violation.trace) console.log(`  ${line}`);
    }
    if (count === 1) console.log(`seed ${s}: ${result.events} events, ${result.traceLines} trace lines, hash ${result.traceHash}`);
  }
  const seconds = (performance.now() - started) / 1000;
  console.error(`sim: seeds ${first}..${first + count - 1}, ${events} events in ${seconds.toFixed(1)} s; ${JSON.stringify(total)}`);
  if (hostile > 0) console.error(`sim: hostile peers ${JSON.stringify(attacks)}`);
  console.log(`${count} seeds, ${violations} violations`);
  process.exitCode = violations > 0 ? 1 : 0;
}

// `npm run sim -- --seed S --verbose | head` closes the pipe early; that is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw error;
});

void main(process.argv.slice(2));

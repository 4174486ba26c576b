/**
 * `npm run sim -- --drivers ...`: the lock simulator over the production drivers (drivers.ts).
 *
 *   --seeds N [--base B]      run seeds B..B+N-1 (B = 1 by default)
 *   --seed S [--verbose]      replay one seed; --verbose prints its whole trace
 *   --mutation M              run with a deliberately wrong part (drivers.ts DRIVER_MUTATIONS)
 *   --hostile N               add up to N hostile simulated peers per seed (hostile-peer.ts; the count is
 *                             drawn from the seed): byte-level attacks on the real server
 *   --findings                with --hostile: report the hostile peers' known finding F1 as a violation
 *   --trace FILE              with --seed: write the protocol trace observed in the production cores
 *                             (drivers-trace.ts, sim/trace.ts events) as JSON lines, for
 *                             `tsx model/trace-check.ts FILE` (docs/model.md)
 *
 * Prints one line per failing seed with its replay command and ends with `N seeds, V violations`; the exit
 * status is 1 when V > 0, 2 on bad arguments. Relies on: runs being pure functions of (seed, mutation).
 */
import { writeFileSync } from "node:fs";
import type { TraceEvent } from "./trace.js";
import { DRIVER_MUTATIONS, formatDriverViolation, runDriverSeed, type DriverMutation, type DriverStats } from "./drivers.js";

export async function driversMain(argv: readonly string[]): Promise<void> {
  const usage = (problem: string): never => {
    console.error(`sim --drivers: ${problem}`);
    console.error("usage: npm run sim -- --drivers --seeds N [--base B] | --seed S [--verbose] [--trace FILE]  [--mutation M] [--hostile N]");
    console.error(`mutations: ${DRIVER_MUTATIONS.join(", ")}`);
    process.exit(2);
  };
  let seeds: number | undefined;
  let seed: number | undefined;
  let base = 1;
  let verbose = false;
  let trace: string | undefined;
  let mutation: DriverMutation = "none";
  let hostile = 0;
  let findings = false;
  const whole = (flag: string, value: string | undefined): number => {
    if (value === undefined || !/^\d+$/.test(value)) usage(`${flag} needs a whole number, got ${value ?? "nothing"}`);
    return Number(value);
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--drivers") continue;
    else if (flag === "--seeds") seeds = whole(flag, argv[++i]);
    else if (flag === "--seed") seed = whole(flag, argv[++i]);
    else if (flag === "--base") base = whole(flag, argv[++i]);
    else if (flag === "--verbose") verbose = true;
    else if (flag === "--hostile") hostile = whole(flag, argv[++i]);
    else if (flag === "--findings") findings = true;
    else if (flag === "--trace") {
      trace = argv[++i];
      if (trace === undefined) usage("--trace needs a file name");
    } else if (flag === "--mutation") {
      const m = argv[++i] ?? "";
      if (!(DRIVER_MUTATIONS as readonly string[]).includes(m)) usage(`unknown mutation "${m}"`);
      mutation = m as DriverMutation;
    } else usage(`unknown flag ${flag}`);
  }
  if ((seeds === undefined) === (seed === undefined)) usage("give either --seeds N or --seed S");
  if (trace !== undefined && seed === undefined) usage("--trace goes with --seed S");
  const first = seed ?? base;
  const count = seed === undefined ? seeds! : 1;
  const started = performance.now();
  const total: DriverStats = { grants: 0, serverStarts: 0, resets: 0, clientCrashes: 0, fences: 0, farewells: 0 };
  let violations = 0;
  let events = 0;
  const attacks = { cases: 0, greeted: 0, knownFindings: 0, connections: 0, bytesSent: 0, closed: 0 };
  for (let s = first; s < first + count; s++) {
    const protocol: TraceEvent[] = [];
    const result = await runDriverSeed(s, {
      mutation,
      hostile,
      hostileFindings: findings,
      keepTrace: verbose,
      ...(trace !== undefined ? { traceSink: (event: TraceEvent) => protocol.push(event) } : {}),
    });
    if (trace !== undefined) {
      writeFileSync(trace, protocol.map((event) => JSON.stringify(event)).join("\n") + "\n");
      console.log(`protocol trace: ${protocol.length} events in ${trace}`);
    }
    events += result.events;
    for (const name of Object.keys(total) as (keyof DriverStats)[]) total[name] += result.stats[name];
    if (result.hostile !== undefined) for (const name of Object.keys(attacks) as (keyof typeof attacks)[]) attacks[name] += result.hostile[name];
    if (verbose) for (const line of result.trace ?? []) console.log(`  ${line}`);
    if (result.violation !== undefined) {
      violations++;
      console.log(formatDriverViolation(result.violation, mutation, hostile).replace(/\)$/, findings ? " --findings)" : ")"));
      if (count === 1 && !verbose) for (const line of result.violation.tail) console.log(`  ${line}`);
    }
    if (count === 1) console.log(`seed ${s}: ${result.events} events, trace hash ${result.traceHash}`);
  }
  const seconds = (performance.now() - started) / 1000;
  console.error(`sim --drivers: seeds ${first}..${first + count - 1}, ${events} events in ${seconds.toFixed(1)} s; ${JSON.stringify(total)}`);
  if (hostile > 0) console.error(`sim --drivers: hostile peers ${JSON.stringify(attacks)}`);
  console.log(`${count} seeds, ${violations} violations`);
  process.exitCode = violations > 0 ? 1 : 0;
}

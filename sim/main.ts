/**
 * The simulator's command line (`npm run sim -- ...`).
 *
 *   --seeds N        run seeds base..base+N-1 (base 1 unless --base B)
 *   --seed S         replay one seed; prints its configuration, result and the last trace lines
 *   --clients C      fix the number of clients (otherwise 2–8, drawn per seed)
 *   --mutation M     run with a deliberately wrong rule (world.ts MUTATIONS) to see a checker fail
 *   --strict-trylock also check that a trylock never fails only because of the requester's own idle cached grant
 *   --stress         the stress profile (run.ts): every seed faulty, many crashes, non-killing fences, ...
 *   --findings       also report the remaining known finding in today's drivers as a violation (checkers.ts:
 *                    stale server grants after failover); by default only counted
 *   --verbose        with --seed: print the whole trace
 *   --drivers        the lock simulator over the production drivers instead (drivers-main.ts: the real
 *                    LockServerRuntime and LockClient in the simulated world of sim-world.ts;
 *                    `--hostile N` adds up to N hostile simulated peers per seed, hostile-peer.ts)
 *   --trace FILE     with --seed: write the protocol trace (sim/trace.ts) as JSON lines, for
 *                    `tsx model/trace-check.ts FILE` (docs/model.md)
 *
 * Prints one line per failing seed (seed, checker, virtual time, detail, replay command) and ends with
 * the line `N seeds, V violations`; the exit status is 1 when V > 0, 2 on bad arguments.
 * Relies on: run.ts; runs are pure functions of (seed, options), so a printed replay command
 * reproduces the run exactly.
 */
import { emptyCoverage, emptyNotes, type Coverage, type Notes } from "./checkers.js";
import { formatViolation, replayCommand, runSeed, type RunOptions, type RunResult } from "./run.js";
import { MUTATIONS, formatUs, isMutation } from "./world.js";
import { driversMain } from "./drivers-main.js";
import { writeFileSync } from "node:fs";
import type { TraceEvent } from "./trace.js";

interface Args {
  seeds: number | undefined;
  base: number;
  seed: number | undefined;
  clients: number | undefined;
  mutation: string | undefined;
  verbose: boolean;
  strictTrylock: boolean;
  findings: boolean;
  stress: boolean;
  trace: string | undefined;
}

function usage(problem: string): never {
  console.error(`sim: ${problem}`);
  console.error(
    "usage: npm run sim -- --seeds N [--base B] | --seed S [--verbose] [--trace FILE]  [--clients C] [--mutation M] [--strict-trylock] [--stress] [--findings]",
  );
  console.error(`mutations: ${MUTATIONS.join(", ")}`);
  process.exit(2);
}

function parseInteger(flag: string, value: string | undefined, min: number): number {
  if (value === undefined || !/^\d+$/.test(value))
    usage(`${flag} needs a whole number, got ${value ?? "nothing"}`);
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) usage(`${flag} must be at least ${min}, got ${value}`);
  return n;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = {
    seeds: undefined,
    base: 1,
    seed: undefined,
    clients: undefined,
    mutation: undefined,
    verbose: false,
    strictTrylock: false,
    findings: false,
    stress: false,
    trace: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    switch (flag) {
      case "--seeds":
        args.seeds = parseInteger(flag, argv[++i], 1);
        break;
      case "--base":
        args.base = parseInteger(flag, argv[++i], 0);
        break;
      case "--seed":
        args.seed = parseInteger(flag, argv[++i], 0);
        break;
      case "--clients": {
        const n = parseInteger(flag, argv[++i], 1);
        if (n > 64) usage(`--clients must be at most 64, got ${n}`);
        args.clients = n;
        break;
      }
      case "--mutation":
        args.mutation = argv[++i];
        if (args.mutation === undefined || !isMutation(args.mutation))
          usage(`unknown mutation ${args.mutation ?? "(none given)"}`);
        break;
      case "--strict-trylock":
        args.strictTrylock = true;
        break;
      case "--findings":
        args.findings = true;
        break;
      case "--stress":
        args.stress = true;
        break;
      case "--verbose":
        args.verbose = true;
        break;
      case "--trace":
        args.trace = argv[++i];
        if (args.trace === undefined) usage("--trace needs a file name");
        break;
      default:
        usage(`unknown argument ${flag}`);
    }
  }
  if (args.seeds === undefined && args.seed === undefined) usage("give --seeds N or --seed S");
  if (args.seeds !== undefined && args.seed !== undefined) usage("give either --seeds or --seed, not both");
  if (args.trace !== undefined && args.seed === undefined) usage("--trace goes with --seed S");
  return args;
}

function describe(result: RunResult): string {
  const c = result.config;
  const w = c.workload;
  return (
    `seed ${result.seed}: ${c.clients} clients, ${c.hotKeys} hot keys, idleLockLimit ${c.idleLockLimit}, ` +
    `${w.tasksPerClient} tasks x ${w.opsPerTask} ops` +
    `${w.leavers.length > 0 ? ` (${w.leavers.map((c) => `c${c}`).join(", ")} close after ${w.leaverOpsPerTask})` : ""}, ` +
    `${result.acquires} acquires, ${result.events} events, ` +
    `virtual ${formatUs(result.virtualUs)}, trace ${result.traceLines} lines hash ${result.traceHash}` +
    `${c.mutation !== "none" ? `, mutation ${c.mutation}` : ""}`
  );
}

function addCoverage<T extends Coverage | Notes>(total: T, one: T): void {
  const t = total as unknown as Record<string, number>;
  const o = one as unknown as Record<string, number>;
  for (const name of Object.keys(t)) t[name]! += o[name]!;
}

function formatCoverage(c: Coverage | Notes): string {
  return Object.entries(c)
    .map(([name, n]) => `${name} ${n}`)
    .join(", ");
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const options: RunOptions = {
    ...(args.clients !== undefined ? { clients: args.clients } : {}),
    ...(args.mutation !== undefined && isMutation(args.mutation) ? { mutation: args.mutation } : {}),
    ...(args.strictTrylock ? { strictTrylock: true } : {}),
    ...(args.findings ? { findings: true } : {}),
    ...(args.stress ? { stress: true } : {}),
  };
  let violations = 0;
  if (args.seed !== undefined) {
    const events: TraceEvent[] = [];
    const result = runSeed(args.seed, {
      ...options,
      keepTrace: args.verbose,
      ...(args.trace !== undefined ? { traceSink: (event: TraceEvent) => events.push(event) } : {}),
    });
    if (args.trace !== undefined) {
      writeFileSync(args.trace, events.map((event) => JSON.stringify(event)).join("\n") + "\n");
      console.log(`protocol trace: ${events.length} events in ${args.trace}`);
    }
    console.log(describe(result));
    console.log(`coverage: ${formatCoverage(result.coverage)}`);
    console.log(`notes: ${formatCoverage(result.notes)}`);
    if (args.verbose) {
      console.log(
        `config: ${JSON.stringify(result.config, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v))}`,
      );
      for (const line of result.trace ?? []) console.log(`  ${line}`);
    }
    if (result.violation !== undefined) {
      violations++;
      console.log(formatViolation(result.violation, options));
      if (!args.verbose) {
        console.log(`last ${result.violation.tail.length} events:`);
        for (const line of result.violation.tail) console.log(`  ${line}`);
      }
    }
    console.log(`1 seeds, ${violations} violations`);
  } else {
    const count = args.seeds!;
    const started = performance.now();
    const total = emptyCoverage();
    const notes = emptyNotes();
    for (let seed = args.base; seed < args.base + count; seed++) {
      const result = runSeed(seed, options);
      addCoverage(total, result.coverage);
      addCoverage(notes, result.notes);
      if (result.violation !== undefined) {
        violations++;
        console.log(formatViolation(result.violation, options));
      }
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(`coverage: ${formatCoverage(total)}`);
    console.log(`notes: ${formatCoverage(notes)}`);
    console.error(
      `sim: seeds ${args.base}..${args.base + count - 1} in ${seconds.toFixed(1)} s (replay one: ${replayCommand(args.base, options)})`,
    );
    console.log(`${count} seeds, ${violations} violations`);
  }
  process.exitCode = violations > 0 ? 1 : 0;
}

// `npm run sim -- --seed S --verbose | head` closes the pipe early; that is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw error;
});

if (process.argv.includes("--drivers")) void driversMain(process.argv.slice(2));
else main();

/**
 * The election simulator's command line (`npx tsx sim/election-main.ts ...`).
 *
 *   --seeds N        run seeds base..base+N-1 (base 1 unless --base B)
 *   --seed S         replay one seed; prints its configuration, result and trace tail (--verbose: all)
 *   --slots K        fix the number of configured slots (otherwise drawn per seed)
 *   --mutation M     run with a deliberately wrong driver rule (sim/election.ts ELECTION_MUTATIONS)
 *
 * Prints one line per failing seed (seed, checker, virtual time, detail, replay command) and ends with
 * `N seeds, V violations`; exit status 1 when V > 0, 2 on bad arguments.
 * Relies on: sim/election.ts; a run is a pure function of (seed, options).
 */
import {
  ELECTION_MUTATIONS,
  formatElectionViolation,
  isElectionMutation,
  runElectionSeed,
  type ElectionSimOptions,
} from "./election.js";
import { SLOTS_MAX } from "../src/core/limits.js";

function usage(problem: string): never {
  console.error(`election sim: ${problem}`);
  console.error("usage: npx tsx sim/election-main.ts --seeds N [--base B] | --seed S [--verbose]  [--slots K] [--mutation M]");
  console.error(`mutations: ${ELECTION_MUTATIONS.join(", ")}`);
  process.exit(2);
}

function whole(flag: string, value: string | undefined, min: number): number {
  if (value === undefined || !/^\d+$/.test(value)) usage(`${flag} needs a whole number, got ${value ?? "nothing"}`);
  const n = Number(value);
  if (n < min) usage(`${flag} must be at least ${min}`);
  return n;
}

const argv = process.argv.slice(2);
let seeds: number | undefined;
let base = 1;
let seed: number | undefined;
let verbose = false;
const options: { slots?: number; mutation?: ElectionSimOptions["mutation"] } = {};
for (let i = 0; i < argv.length; i++) {
  const flag = argv[i]!;
  switch (flag) {
    case "--seeds":
      seeds = whole(flag, argv[++i], 1);
      break;
    case "--base":
      base = whole(flag, argv[++i], 0);
      break;
    case "--seed":
      seed = whole(flag, argv[++i], 0);
      break;
    case "--slots": {
      const n = whole(flag, argv[++i], 1);
      if (n > SLOTS_MAX) usage(`--slots must be 1..${SLOTS_MAX}`);
      options.slots = n;
      break;
    }
    case "--mutation": {
      const m = argv[++i] ?? "";
      if (!isElectionMutation(m)) usage(`unknown mutation "${m}"`);
      options.mutation = m;
      break;
    }
    case "--verbose":
      verbose = true;
      break;
    default:
      usage(`unknown argument ${flag}`);
  }
}

if (seed !== undefined) {
  const result = await runElectionSeed(seed, { ...options, keepTrace: true });
  console.log(JSON.stringify(result.config, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)));
  const trace = result.trace ?? [];
  for (const line of verbose ? trace : trace.slice(-60)) console.log(line);
  console.log(`seed ${seed}: ${result.events} events, ${result.virtualMs} virtual ms, hash ${result.traceHash}, coverage ${JSON.stringify(result.coverage)}`);
  if (result.violation !== undefined) {
    console.log(formatElectionViolation(result.violation, options));
    process.exit(1);
  }
  console.log(`converged ${result.convergedAfterMs} ms after healing`);
  process.exit(0);
}

const count = seeds ?? 1000;
let violations = 0;
const started = performance.now();
for (let s = base; s < base + count; s++) {
  const result = await runElectionSeed(s, options);
  if (result.violation !== undefined) {
    violations++;
    console.log(formatElectionViolation(result.violation, options));
  }
}
console.log(`${count} seeds, ${violations} violations (${Math.round(performance.now() - started)} ms)`);
process.exit(violations > 0 ? 1 : 0);

/**
 * The hostile-peer fuzzer's command line (`npm run fuzz -- ...`), see harness.ts.
 *
 *   --seconds N   run cases until N seconds passed (default 60)
 *   --cases N     run cases 0..N-1 (with --seconds: whichever ends first)
 *   --seed S      the run's seed (default: random, printed first)
 *   --case K      replay case K of seed S against fresh targets (repeatable)
 *   --tcp-only    skip the forged-datagram cases (every fifth index; no three-member cluster is started)
 *
 * Prints the seed, one line per case, then `N cases, V failures (I honest increments)` and the replay command of
 * each failure; exits 1 when V > 0, 2 on bad arguments. KEYLOCK_FUZZ_VERBOSE=1 prints the members' output.
 * Relies on: harness.ts.
 */
import { randomInt } from "node:crypto";
import { runFuzz, type FuzzOptions } from "./harness.js";

function usage(problem: string): never {
  console.error(`fuzz: ${problem}`);
  console.error("usage: npm run fuzz -- [--seconds N] [--cases N] [--seed S] [--case K ...] [--tcp-only]");
  process.exit(2);
}

function integer(flag: string, raw: string | undefined, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(raw);
  if (raw === undefined || !Number.isSafeInteger(n) || n < 0 || n > max) usage(`${flag} needs a whole number (0..${max}), got ${raw}`);
  return n;
}

function parse(argv: string[]): FuzzOptions {
  let seed: number | undefined;
  let seconds: number | undefined;
  let cases: number | undefined;
  let tcpOnly = false;
  const only: number[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    switch (flag) {
      case "--seed":
        seed = integer(flag, argv[++i], 0xffffffff);
        break;
      case "--seconds":
        seconds = integer(flag, argv[++i]);
        break;
      case "--cases":
        cases = integer(flag, argv[++i]);
        break;
      case "--case":
        only.push(integer(flag, argv[++i]));
        break;
      case "--tcp-only":
        tcpOnly = true;
        break;
      default:
        usage(`unknown argument ${flag}`);
    }
  }
  if (only.length > 0 && seed === undefined) usage("--case needs the --seed it came from");
  return {
    seed: seed ?? randomInt(0, 0xffffffff),
    ...(only.length > 0 ? { only } : {}),
    ...(cases !== undefined ? { cases } : {}),
    ...(only.length === 0 && (seconds !== undefined || cases === undefined) ? { seconds: seconds ?? 60 } : {}),
    tcpOnly,
  };
}

const options = parse(process.argv.slice(2));
console.log(`fuzz: seed ${options.seed} (replay a case: npm run fuzz -- --seed ${options.seed} --case K)`);
const uncaught: string[] = [];
// A throw in this process (the client library, the harness) is a finding too, not a reason to stop reporting.
process.on("uncaughtException", (error) => {
  // During a client case the harness has its own listener and reports the throw with that case.
  if (process.listenerCount("uncaughtException") > 1) return;
  uncaught.push(error.stack ?? String(error));
  console.log(`fuzz: UNCAUGHT in the fuzzer process: ${error.stack ?? String(error)}`);
});
// Ctrl-C: exit through process.exit so the members and servers started are killed ("exit" hooks).
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(130));
const result = await runFuzz(options);
const failed = result.failures.length + uncaught.length;
console.log(`\n${result.cases} cases, ${failed} failures (${result.increments} honest increments)`);
for (const failure of result.failures) console.log(`  ${failure.replay}    # ${failure.reasons[0]!.split("\n")[0]}`);
for (const stack of uncaught) console.log(`  uncaught in the fuzzer process: ${stack.split("\n")[0]}`);
process.exit(failed > 0 ? 1 : 0);

/**
 * `npm run model`: checks the Promela model of the lock protocol (model/keylock.pml) with spin.
 * For each check it copies the model into a scratch directory, generates the verifier (`spin -a`
 * with the check's -D switches), compiles it with gcc, runs it, and parses spin's report (errors,
 * states, transitions, depth, memory, time, and for bitstate runs the hash factor). Then every
 * mutation variant (keylock.pml MUT_*) is checked the same way and must produce an error trail.
 *
 *   npm run model                      the CI size: the honest model, then every mutation
 *   npm run model -- --size large      the larger documented run (docs/model.md)
 *   npm run model -- --mutation NAME   one mutation only (keeps its trail; read it with spin -t)
 *   npm run model -- --no-mutations    the honest model only
 *
 * Prints one line per check and ends with `N errors` (honest checks that found an error, plus
 * mutations that were NOT caught); exit status 1 when N > 0, 2 when spin or gcc is missing.
 * Guarantees: a check's verdict comes from pan's own output ("errors: N"); a run that did not finish
 * (killed at its time limit, or pan's search stopped early) counts as an error, never as a pass.
 * Relies on: spin (Debian package `spin`, 6.x) and gcc on PATH.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const MODEL_FILE = join(dirname(fileURLToPath(import.meta.url)), "keylock.pml");

/** One verification: spin -D switches, gcc -D switches, pan arguments. */
export interface Check {
  readonly name: string;
  readonly defines: readonly string[];
  readonly panDefines: readonly string[];
  readonly panArgs: readonly string[];
  /** Wall-clock limit for pan, seconds. */
  readonly timeLimitS: number;
}

export interface CheckResult {
  readonly check: Check;
  readonly errors: number;
  readonly finished: boolean;
  readonly statesStored: number;
  readonly transitions: number;
  readonly depth: number;
  readonly memoryMb: number;
  readonly panSeconds: number;
  /** Bitstate only: spin's hash factor (expected coverage is high above ~100). */
  readonly hashFactor: number | undefined;
  readonly firstError: string | undefined;
  /** Where the trail was kept (--keep), else undefined. */
  readonly trailDir: string | undefined;
  readonly output: string;
}

/** Every model mutation (keylock.pml MUT_*) and the simulator mutation it mirrors (sim/base.ts). */
export const MODEL_MUTATIONS: Readonly<Record<string, string>> = {
  GRANT_WHILE_INV: "grant-while-invalidating",
  NULL_COMPAT: "null-compatible-within-client",
  REUSE_SEQ: "reuse-write-seq",
  REISSUE_SEQ: "reissue-write-seqs",
  EARLY_INV_RESP: "early-invalidation-response",
  RECOVER_LOWERED: "recover-lowered-mode",
  FAREWELL_SKIPS: "farewell-skips-recovery",
  RESUME_EARLY: "resume-before-recovery",
  SHARED_WRITE: "shared-write-handles",
  NO_RESEND: "no-resend",
};

export type Size = "ci" | "large";

/**
 * The honest checks per size. Scope of the CI size: 3 clients, 2 keys, every mode (read, write,
 * write_only). Its exhaustive check leaves out the faults, trylock, shrink and the second local task
 * (about 340,000 states); its bitstate check is the whole model (one server crash, one client crash
 * fenced and reclaimed, farewell, idle shrink, 2 tasks on client 0 of which one may trylock) in a
 * 1 Mbit hash array, which bounds its time: spin's hash factor says how much of the space it covered
 * (docs/model.md has the numbers). The large size runs the whole model exhaustively (COLLAPSE
 * compression, hours and gigabytes; docs/model.md); both sizes run the no-cycle check (ACYCLIC).
 */
/**
 * Progress: with no progress labels, any cycle is a non-progress cycle, so "no non-progress cycle" means
 * every execution ends, and ends in the P8 quiescence check (every request answered). Run exhaustively on
 * the fault-free configuration (about 680,000 states, ~20 s), in both sizes.
 */
const ACYCLIC: Check = {
  name: "acyclic: no non-progress cycle (so every execution ends in the P8 quiescence check)",
  defines: ["-DNT0=1", "-DNONBLOCK=0", "-DSHRINK=0", "-DSCRASH=0", "-DCCRASH=0"],
  panDefines: ["-DNP", "-DNOFAIR", "-DCOLLAPSE"],
  panArgs: ["-l", "-m400000"],
  timeLimitS: 600,
};

export function honestChecks(size: Size): Check[] {
  if (size === "ci") {
    return [
      {
        name: "exhaustive: 3 clients x 2 keys, every mode, farewell (no faults, 1 task per client)",
        defines: ["-DNT0=1", "-DNONBLOCK=0", "-DSHRINK=0", "-DSCRASH=0", "-DCCRASH=0"],
        panDefines: ["-DSAFETY", "-DCOLLAPSE"],
        panArgs: ["-m400000"],
        timeLimitS: 600,
      },
      {
        name: "bitstate -w20: 3 clients x 2 keys, every mode, 1 server crash, 1 client crash, farewell, shrink, trylock, 2 local tasks",
        defines: [],
        panDefines: ["-DSAFETY", "-DBITSTATE"],
        panArgs: ["-m400000", "-w20"],
        timeLimitS: 600,
      },
      ACYCLIC,
    ];
  }
  return [
    {
      name: "exhaustive: the whole model (3 clients x 2 keys, every mode, 2 local tasks with trylock, 1 server crash, 1 client crash, farewell, shrink)",
      defines: [],
      panDefines: ["-DSAFETY", "-DCOLLAPSE"],
      panArgs: ["-m600000", "-w28"],
      timeLimitS: 6 * 3600,
    },
    {
      name: "bitstate -w32: the whole model",
      defines: [],
      panDefines: ["-DSAFETY", "-DBITSTATE"],
      panArgs: ["-m600000", "-w32"],
      timeLimitS: 6 * 3600,
    },
    ACYCLIC,
  ];
}

/** The small configurations the mutations run in (each shows its error within seconds). */
const QUIET = ["-DNT0=1", "-DNONBLOCK=0", "-DSHRINK=0", "-DSCRASH=0", "-DCCRASH=0"];
const WITH_SERVER_CRASH = ["-DNT0=1", "-DNONBLOCK=0", "-DSHRINK=0", "-DSCRASH=1", "-DCCRASH=0"];
const TWO_TASKS_SHRINK = ["-DNT0=2", "-DNONBLOCK=0", "-DSHRINK=1", "-DSCRASH=0", "-DCCRASH=0"];
const MUTATION_CONFIG: Readonly<Record<string, readonly string[]>> = {
  GRANT_WHILE_INV: QUIET,
  NULL_COMPAT: TWO_TASKS_SHRINK,
  REUSE_SEQ: QUIET,
  REISSUE_SEQ: WITH_SERVER_CRASH,
  EARLY_INV_RESP: QUIET,
  RECOVER_LOWERED: WITH_SERVER_CRASH,
  FAREWELL_SKIPS: [...WITH_SERVER_CRASH, "-DONLY=1"],
  RESUME_EARLY: WITH_SERVER_CRASH,
  SHARED_WRITE: ["-DNT0=2", "-DNONBLOCK=0", "-DSHRINK=0", "-DSCRASH=0", "-DCCRASH=0", "-DONLY=0"],
  NO_RESEND: WITH_SERVER_CRASH,
};

/** A mutation check: a small configuration in which it shows, stopping at the first error. */
export function mutationCheck(mutation: string): Check {
  return {
    name: `mutation ${mutation} (sim: ${MODEL_MUTATIONS[mutation] ?? "?"})`,
    defines: [...(MUTATION_CONFIG[mutation] ?? QUIET), `-DMUT_${mutation}`],
    panDefines: ["-DSAFETY", "-DCOLLAPSE"],
    panArgs: ["-m400000"],
    timeLimitS: 300,
  };
}

export function toolsMissing(): string | undefined {
  for (const [tool, args] of [
    ["spin", ["-V"]],
    ["gcc", ["--version"]],
  ] as const) {
    const r = spawnSync(tool, args, { encoding: "utf8" });
    if (r.error !== undefined || r.status !== 0) return `${tool} is not installed (apt-get install ${tool})`;
  }
  return undefined;
}

function numberAfter(text: string, pattern: RegExp): number {
  const m = pattern.exec(text);
  return m === null ? NaN : Number(m[1]);
}

/** Runs one check in a scratch directory; keeps the directory (with any trail) when `keep`. */
export function runCheck(check: Check, options: { keep?: boolean } = {}): CheckResult {
  const dir = mkdtempSync(join(tmpdir(), "keylock-model-"));
  try {
    copyFileSync(MODEL_FILE, join(dir, "keylock.pml"));
    const spin = spawnSync("spin", [...check.defines, "-a", "keylock.pml"], { cwd: dir, encoding: "utf8" });
    if (spin.status !== 0) throw new Error(`spin -a failed:\n${spin.stdout}${spin.stderr}`);
    const gcc = spawnSync("gcc", ["-O0", ...check.panDefines, "-o", "pan", "pan.c"], { cwd: dir, encoding: "utf8" });
    if (gcc.status !== 0) throw new Error(`gcc failed:\n${gcc.stdout}${gcc.stderr}`);
    const started = performance.now();
    const pan = spawnSync("./pan", [...check.panArgs], {
      cwd: dir,
      encoding: "utf8",
      timeout: check.timeLimitS * 1000,
      maxBuffer: 64 * 1024 * 1024,
    });
    const seconds = (performance.now() - started) / 1000;
    const output = `${pan.stdout ?? ""}${pan.stderr ?? ""}`;
    const errors = numberAfter(output, /errors: (\d+)/);
    const killed = pan.signal !== null || pan.error !== undefined;
    // pan prints "Warning: Search not completed" when it stopped early (depth or memory bound).
    const incomplete = /Search not completed/.test(output) && errors === 0;
    const firstError = /^(pan:\d+: .*)$/m.exec(output)?.[1];
    return {
      check,
      errors: Number.isNaN(errors) ? 1 : errors,
      finished: !killed && !incomplete && !Number.isNaN(errors),
      statesStored: numberAfter(output, /([\d.e+]+) states, stored/),
      transitions: numberAfter(output, /([\d.e+]+) transitions/),
      depth: numberAfter(output, /depth reached (\d+)/),
      memoryMb: numberAfter(output, /([\d.]+)\s+total actual memory usage/),
      panSeconds: Number.isNaN(numberAfter(output, /elapsed time ([\d.e+]+)/))
        ? seconds
        : numberAfter(output, /elapsed time ([\d.e+]+)/),
      hashFactor: check.panDefines.includes("-DBITSTATE") ? numberAfter(output, /hash factor: ([\d.e+]+)/) : undefined,
      firstError,
      trailDir: options.keep === true ? dir : undefined,
      output,
    };
  } finally {
    if (options.keep !== true) rmSync(dir, { recursive: true, force: true });
  }
}

export function describeResult(r: CheckResult): string {
  const parts = [
    `${r.statesStored} states`,
    `${r.transitions} transitions`,
    `depth ${r.depth}`,
    `${r.memoryMb} MB`,
    `${r.panSeconds.toFixed(1)} s`,
  ];
  if (r.hashFactor !== undefined) parts.push(`hash factor ${r.hashFactor}`);
  if (!r.finished) parts.push("NOT FINISHED");
  return parts.join(", ");
}

function main(): void {
  const argv = process.argv.slice(2);
  let size: Size = "ci";
  let mutations: string[] = Object.keys(MODEL_MUTATIONS);
  let honest = true;
  let keep = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--size") {
      const value = argv[++i];
      if (value !== "ci" && value !== "large") usage(`--size is ci or large, got ${value ?? "nothing"}`);
      size = value;
    } else if (arg === "--mutation") {
      const value = argv[++i] ?? "";
      if (MODEL_MUTATIONS[value] === undefined) usage(`unknown mutation ${value}`);
      mutations = [value];
      honest = false;
      keep = true;
    } else if (arg === "--no-mutations") mutations = [];
    else if (arg === "--keep") keep = true;
    else usage(`unknown argument ${arg}`);
  }
  const missing = toolsMissing();
  if (missing !== undefined) {
    console.error(`model: ${missing}`);
    process.exit(2);
  }
  console.log(`model: ${MODEL_FILE} (spin ${spawnSync("spin", ["-V"], { encoding: "utf8" }).stdout.trim()})`);
  let errors = 0;
  if (honest) {
    for (const check of honestChecks(size)) {
      const r = runCheck(check, { keep });
      const ok = r.finished && r.errors === 0;
      if (!ok) errors++;
      console.log(`${ok ? "ok  " : "FAIL"} ${check.name}: ${r.errors} errors; ${describeResult(r)}`);
      if (r.firstError !== undefined) console.log(`     ${r.firstError}`);
      if (r.trailDir !== undefined) console.log(`     kept in ${r.trailDir}`);
    }
  }
  for (const mutation of mutations) {
    const r = runCheck(mutationCheck(mutation), { keep });
    const caught = r.errors > 0;
    if (!caught) errors++;
    console.log(
      `${caught ? "ok  " : "FAIL"} ${r.check.name}: ${caught ? `caught: ${r.firstError ?? "error trail"}` : "NOT caught"}; ${describeResult(r)}`,
    );
    if (r.trailDir !== undefined)
      console.log(`     trail: cd ${r.trailDir} && spin -t -p ${r.check.defines.join(" ")} keylock.pml`);
  }
  console.log(`${errors} errors`);
  process.exitCode = errors > 0 ? 1 : 0;
}

function usage(problem: string): never {
  console.error(`model: ${problem}`);
  console.error("usage: npm run model -- [--size ci|large] [--mutation NAME | --no-mutations] [--keep]");
  console.error(`mutations: ${Object.keys(MODEL_MUTATIONS).join(", ")}`);
  process.exit(2);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();

// npm run bench [-- --quick] [--no-peers] [--seconds N] [--only cold,cached,...] [--json FILE] [--svg FILE] [--compare FILE]: see bench/run.ts.
// `npm run bench` compiles src/ and bench/ with tsc (tsconfig.bench.json) into .bench-build/ and runs this
// file there with plain node, so the member and every client run the JavaScript users run (no tsx loader,
// no source maps); `npx tsx bench/main.ts` runs the same bench from the TypeScript sources.
import { GROUPS, runBenchmarks, type Group } from "./run.js";

/** bench/ of the repository, also when this file runs compiled from .bench-build/bench/. */
const BENCH_DIR = new URL(import.meta.url.includes("/.bench-build/bench/") ? "../../bench/" : "./", import.meta.url);

const argv = process.argv.slice(2);
const value = (flag: string): string | undefined => {
  const i = argv.indexOf(flag);
  return i < 0 ? undefined : argv[i + 1];
};
const known = new Set(["--quick", "--no-peers", "--seconds", "--only", "--json", "--svg", "--compare"]);
for (let i = 0; i < argv.length; i++) {
  if (!known.has(argv[i]!)) {
    console.error(`bench: unknown argument ${argv[i]}; flags: --quick --no-peers --seconds N --only ${GROUPS.join(",")} --json FILE --svg FILE --compare FILE`);
    process.exit(2);
  }
  if (argv[i] !== "--quick" && argv[i] !== "--no-peers") i++;
}
const only = value("--only")?.split(",").map((g) => g.trim()) ?? null;
const unknown = only?.filter((g) => !(GROUPS as readonly string[]).includes(g)) ?? [];
if (unknown.length > 0) {
  console.error(`bench: unknown group ${unknown.join(", ")}; groups: ${GROUPS.join(", ")}`);
  process.exit(2);
}
const serverFlags = (process.env.KEYLOCK_BENCH_SERVER_FLAGS ?? "").split(" ").filter((f) => f !== "");
await runBenchmarks({
  quick: argv.includes("--quick"),
  peers: !argv.includes("--no-peers"),
  ...(value("--seconds") === undefined ? {} : { durationMs: Number(value("--seconds")) * 1000 }),
  only: only as Group[] | null,
  jsonFile: value("--json") ?? new URL("last-run.json", BENCH_DIR).pathname,
  svgFile: value("--svg") ?? new URL("last-run.svg", BENCH_DIR).pathname,
  compareFile: value("--compare") ?? null,
  serverFlags,
});
process.exit(0);

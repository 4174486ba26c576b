// npm run bench [-- --quick]: see src/bench/run.ts.
import { runBenchmarks } from "../src/bench/run.js";

await runBenchmarks({ quick: process.argv.includes("--quick") });
process.exit(0);

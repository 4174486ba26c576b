// npx tsx bench/greeting-cost.ts OLD_TREE [--quick]: what greeting v2 costs against the greeting of another
// keylock tree (e.g. a `git worktree add --detach /tmp/old <commit before greeting v2>`), side by side in one
// run: two `keylock up --secret-file` processes on this machine, one from each tree, each measured with its
// own tree's client library, in alternating blocks: connect + greeting + close (the handshake, once per
// connection; sequential) and cold acquire + release on fresh keys over one connection (the grant path).
// Prints p50/p99 of each, and new/old ratios.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, tempDir } from "../test/support/processes.js";

const NEW_TREE = new URL("../", import.meta.url).pathname;
const OLD_TREE = process.argv[2];
if (OLD_TREE === undefined || OLD_TREE.startsWith("--")) {
  console.error("usage: npx tsx bench/greeting-cost.ts OLD_TREE [--quick]");
  process.exit(2);
}
const quick = process.argv.includes("--quick");
const BLOCKS = quick ? 3 : 6;
const CONNECTS = quick ? 40 : 100;
const ACQUIRES = quick ? 300 : 1000;

// Run inside a child with the tree's own client: prints one JSON line of microsecond samples.
const MEASURE = `
const [tree, address, secret, connects, acquires, block] = process.argv.slice(2);
const { connect } = await import(tree + "src/index.ts");
const now = () => Number(process.hrtime.bigint() / 1000n);
const greet = [];
for (let i = 0; i < Number(connects); i++) {
  const t = now();
  const c = await connect({ servers: [address], secret, name: "bench" });
  greet.push(now() - t);
  await c.close();
}
const c = await connect({ servers: [address], secret, name: "bench" });
const cold = [];
for (let i = 0; i < Number(acquires); i++) {
  const t = now();
  const h = await c.acquire("cold/" + block + "/" + i, "write");
  cold.push(now() - t);
  h.release();
}
await c.close();
console.log(JSON.stringify({ greet, cold }));
`;

function run(args: string[], cwd: string): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", ...args], { cwd, stdio: ["ignore", "pipe", "inherit"] });
}

function firstLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (pattern.test(line)) resolve(line);
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code}`)));
  });
}

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const dir = tempDir("greeting-cost");
const secretFile = join(dir.path, "secret");
const secret = "bench-secret-0123456789abcdef0123456789";
writeFileSync(secretFile, secret, { mode: 0o600 });
const measureFile = join(dir.path, "measure.mts");
writeFileSync(measureFile, MEASURE);
const trees = { old: OLD_TREE.endsWith("/") ? OLD_TREE : `${OLD_TREE}/`, new: NEW_TREE };
const servers: Record<string, { child: ChildProcess; address: string }> = {};
const results: Record<string, { greet: number[]; cold: number[] }> = { old: { greet: [], cold: [] }, new: { greet: [], cold: [] } };
try {
  for (const [name, tree] of Object.entries(trees)) {
    const port = await freePort();
    const child = run([join(tree, "src/cli/main.ts"), "up", "--dir", join(dir.path, name), "--port", String(port), "--secret-file", secretFile], tree);
    const address = (await firstLine(child, /^keylock: serving on/)).replace("keylock: serving on ", "").trim();
    servers[name] = { child, address };
  }
  for (let block = 0; block < BLOCKS; block++) {
    for (const name of block % 2 === 0 ? ["old", "new"] : ["new", "old"]) {
      const tree = trees[name as "old" | "new"];
      const child = run([measureFile, tree, servers[name]!.address, secret, String(CONNECTS), String(ACQUIRES), String(block)], tree);
      const line = await firstLine(child, /^\{/);
      const sample = JSON.parse(line) as { greet: number[]; cold: number[] };
      results[name]!.greet.push(...sample.greet);
      results[name]!.cold.push(...sample.cold);
    }
  }
  const row = (what: string, key: "greet" | "cold"): void => {
    const o = results.old![key];
    const n = results.new![key];
    const [o50, o99, n50, n99] = [percentile(o, 50), percentile(o, 99), percentile(n, 50), percentile(n, 99)];
    console.log(`${what.padEnd(34)} old p50 ${o50} µs p99 ${o99} µs | new p50 ${n50} µs p99 ${n99} µs | ratio p50 ${(n50 / o50).toFixed(2)} p99 ${(n99 / o99).toFixed(2)}`);
  };
  row("connect + greeting + close", "greet");
  row("cold acquire + release (grant path)", "cold");
} finally {
  for (const server of Object.values(servers)) server.child.kill("SIGTERM");
  await new Promise((resolve) => setTimeout(resolve, 500));
  dir.remove();
}

// npx tsx bench/tls-cost.ts [--quick]: what TLS costs (docs/operations.md "TLS"), measured side by side in
// one run against two `keylock up` processes on this machine, one plaintext and one with --tls-cert (a
// throwaway CA made with openssl, as the tests do): the connect + greeting (the handshake cost, once per
// connection), cold acquire p50/p99 (alternating blocks, same client shape as `npm run bench`), and
// 64 clients on fresh keys (grants/s, the bench's worker processes; median of 3 alternating rounds).
// Prints each pair and the ratio.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { connect } from "../src/client/client.js";
import { nowUs, percentile } from "./stats.js";
import { runWorkers, summarise } from "./run.js";
import { freePort, tempDir } from "../test/support/processes.js";
import { makeTestPki } from "../test/support/tls.js";

const quick = process.argv.includes("--quick");
const durationMs = quick ? 1500 : 4000;
const REPO = new URL("../", import.meta.url).pathname;

function spawnTs(script: string, args: string[]): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", join(REPO, script), ...args], { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] });
}

function firstLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (pattern.test(line)) resolve(line);
    });
    child.once("exit", (code) => reject(new Error(`${String(child.spawnargs.slice(3).join(" "))} exited with ${code}`)));
  });
}

async function up(dir: string, extra: string[]): Promise<{ child: ChildProcess; address: string }> {
  const child = spawnTs("src/cli/main.ts", ["up", "--dir", dir, "--port", String(await freePort()), ...extra]);
  const address = (await firstLine(child, /^keylock: serving on/)).replace("keylock: serving on ", "").trim();
  return { child, address };
}

async function fresh64(servers: string[], tlsCaFile: string | undefined): Promise<number> {
  const jobs = [0, 1, 2, 3].map((w) => ({
    kind: "load" as const,
    system: "keylock" as const,
    shape: "fresh" as const,
    servers,
    clients: 16,
    prefix: `fresh/${w}/${tlsCaFile ? "tls" : "plain"}`,
    ...(tlsCaFile ? { tlsCaFile } : {}),
  }));
  return summarise(await runWorkers(jobs, durationMs), durationMs).rate;
}

const fmtUs = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`);
const row = (name: string, plain: string, tls: string, ratio: number): void =>
  console.log(`${name.padEnd(34)} plain ${plain.padEnd(20)} tls ${tls.padEnd(20)} tls/plain ${ratio.toFixed(2)}×`);

const pki = makeTestPki();
const dirA = tempDir("tls-cost-plain");
const dirB = tempDir("tls-cost-tls");
const [plain, secure] = await Promise.all([up(dirA.path, []), up(dirB.path, ["--tls-cert", pki.serverCert, "--tls-key", pki.serverKey])]);
const tls = { ca: pki.read(pki.caCert) };
try {
  console.log(`keylock TLS cost (${quick ? "quick" : "full"}): node ${process.version}, one run, plaintext and TLS side by side\n`);
  // Connect + greeting (+ TLS handshake): a fresh client each time, alternating.
  const connects: { plain: number[]; tls: number[] } = { plain: [], tls: [] };
  for (let i = 0; i < (quick ? 30 : 100); i++) {
    for (const kind of ["plain", "tls"] as const) {
      const start = nowUs();
      const client = await connect(kind === "plain" ? { servers: [plain.address] } : { servers: [secure.address], tls });
      connects[kind].push(nowUs() - start);
      await client.close();
    }
  }
  const cp = percentile(connects.plain.slice(5), 50);
  const ct = percentile(connects.tls.slice(5), 50);
  row("connect + greeting p50", fmtUs(cp), fmtUs(ct), ct / cp);

  // Cold acquires: a fresh key each (every grant comes from the server), alternating blocks.
  const a = await connect({ servers: [plain.address], idleLockLimit: 1_000_000 });
  const b = await connect({ servers: [secure.address], tls, idleLockLimit: 1_000_000 });
  const cold: { plain: number[]; tls: number[] } = { plain: [], tls: [] };
  let key = 0;
  for (let block = 0; block < (quick ? 6 : 20); block++) {
    for (const [kind, client] of [["plain", a], ["tls", b]] as const) {
      const samples: number[] = [];
      for (let i = 0; i < 500; i++) {
        const start = nowUs();
        const handle = await client.acquire(`cold/${key++}`, "write");
        samples.push(nowUs() - start);
        handle.release();
      }
      if (block > 0) cold[kind].push(...samples);
    }
  }
  await Promise.all([a.close(), b.close()]);
  const p50 = { plain: percentile(cold.plain, 50), tls: percentile(cold.tls, 50) };
  const p99 = { plain: percentile(cold.plain, 99), tls: percentile(cold.tls, 99) };
  row("cold acquire p50", fmtUs(p50.plain), fmtUs(p50.tls), p50.tls / p50.plain);
  row("cold acquire p99", fmtUs(p99.plain), fmtUs(p99.tls), p99.tls / p99.plain);

  // 64 clients on fresh keys, one server at a time (they would share the CPU otherwise), alternating
  // rounds; the median round of each.
  const rates: { plain: number[]; tls: number[] } = { plain: [], tls: [] };
  for (let round = 0; round < (quick ? 1 : 3); round++) {
    rates.plain.push(await fresh64([plain.address], undefined));
    rates.tls.push(await fresh64([secure.address], pki.caCert));
  }
  const ratePlain = percentile(rates.plain, 50);
  const rateTls = percentile(rates.tls, 50);
  row("64 clients on fresh keys (median)", `${(ratePlain / 1000).toFixed(1)} k/s`, `${(rateTls / 1000).toFixed(1)} k/s`, rateTls / ratePlain);
} finally {
  plain.child.kill("SIGTERM");
  secure.child.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 500));
  dirA.remove();
  dirB.remove();
  pki.remove();
}
process.exit(0);

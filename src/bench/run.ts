/**
 * `npm run bench` / `keylock bench`: the benchmarks of DESIGN §7, measured side by side in one run and
 * reported as ratios to the physical floor measured in the same run (machines are noisy; absolute
 * numbers from another run mean little).
 *
 * The floor is a loopback TCP round trip between two Node processes with keylock's own framing and
 * codec (src/bench/echo-server.ts). The lock server runs as a separate `keylock up` process on a
 * fresh SQLite store; load comes from this process and from worker processes (src/bench/worker.ts).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connect } from "../client/client.js";
import { FramedConnection, connectTcp } from "../io/tcp.js";
import { Command, WireError } from "../protocol/messages.js";
import { keyFromText } from "../core/keys.js";
import { nowUs, percentile } from "./stats.js";
import { GRACEFUL_TARGET_MS, runFailoverBench } from "./failover.js";
import { baselineRows, runBaselines } from "./baselines.js";

export interface BenchOptions {
  quick: boolean;
}

const here = fileURLToPath(new URL(".", import.meta.url));
const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";

function spawnModule(relative: string, args: string[], nodeFlags: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeFlags, ...process.execArgv, join(here, `${relative}${ext}`), ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
}

function firstLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      if (pattern.test(line)) resolve(line);
    });
    child.once("exit", (code) => reject(new Error(`${String(child.spawnargs[2])} exited with ${code}`)));
  });
}

interface LoadResult {
  count: number;
  samples: number[];
}

async function runWorkers(jobs: object[], durationMs: number): Promise<{ rate: number; samples: number[] }> {
  const startAtMs = Date.now() + 1500;
  const children = jobs.map((job) => spawnModule("worker", [JSON.stringify({ ...job, durationMs, startAtMs })]));
  const results = await Promise.all(
    children.map(async (child) => JSON.parse(await firstLine(child, /^\{/)) as LoadResult),
  );
  const count = results.reduce((sum, r) => sum + r.count, 0);
  return { rate: count / (durationMs / 1000), samples: results.flatMap((r) => r.samples) };
}

/** One echo connection that can be asked for blocks of closed-loop round trips (µs samples). */
class EchoProbe {
  private seq = 0;
  private waiter: (() => void) | null = null;

  private constructor(private readonly connection: FramedConnection) {
    connection.start({ onMessage: () => this.waiter?.(), onClose: () => this.waiter?.() });
  }

  static async open(port: number): Promise<EchoProbe> {
    return new EchoProbe(new FramedConnection(await connectTcp("127.0.0.1", port, 5000)));
  }

  async roundTrips(n: number): Promise<number[]> {
    const samples: number[] = [];
    for (let i = 0; i < n; i++) {
      const seq = ++this.seq;
      const answered = new Promise<void>((resolve) => (this.waiter = resolve));
      const sentAt = nowUs();
      this.connection.send({
        header: { seq, ack: 0, id: seq, cmd: Command.LOCK, response: false, error: WireError.NONE },
        payload: { kind: "lock", body: { key: keyFromText(`cold/${seq}`), oldMode: "null", newMode: "read", writeSeq: 0n, noQueue: false } },
      });
      await answered;
      samples.push(nowUs() - sentAt);
    }
    return samples;
  }

  close(): void {
    this.connection.close("done");
  }
}

function fmtUs(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`;
}

function fmtRate(perSecond: number): string {
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : `${(perSecond / 1e3).toFixed(1)} k/s`;
}

interface Row {
  name: string;
  value: string;
  ratio: string;
  target: string;
  met: boolean | null;
}

export async function runBenchmarks(options: BenchOptions): Promise<Row[]> {
  const quick = options.quick;
  const durationMs = quick ? 1500 : 4000;
  const rows: Row[] = [];
  const report = (row: Row): void => {
    rows.push(row);
    const verdict = row.met === null ? "" : row.met ? "  [met]" : "  [NOT met]";
    console.log(`${row.name.padEnd(44)} ${row.value.padEnd(24)} ${row.ratio.padEnd(22)} target ${row.target}${verdict}`);
  };
  const dir = mkdtempSync(join(tmpdir(), "keylock-bench-"));
  const echo = spawnModule("echo-server", []);
  const port = Number((await firstLine(echo, /^echo: listening on/)).split(" ").pop());
  const serverPort = 17411 + Math.floor(Math.random() * 1000);
  const server = spawnModule("../cli/main", ["up", "--dir", dir, "--port", String(serverPort)]);
  const address = (await firstLine(server, /^keylock: serving on/)).replace("keylock: serving on ", "").trim();
  const servers = [address];
  try {
    console.log(`keylock bench (${quick ? "quick" : "full"}): node ${process.version}, one run, ratios to the floor measured now\n`);

    // The floor (one loopback round trip between two Node processes, same framing, same await-per-message
    // loop as a client) and cold acquires (a fresh key each: every grant comes from the server), measured
    // in alternating blocks so both see the same machine conditions.
    const echo = await EchoProbe.open(port);
    const client = await connect({ servers, name: "bench-main", idleLockLimit: 1_000_000 });
    const echoSamples: number[] = [];
    const cold: number[] = [];
    const blocks = quick ? 6 : 20;
    const perBlock = 500;
    let coldKey = 0;
    for (let block = 0; block < blocks; block++) {
      const e = await echo.roundTrips(perBlock);
      const c: number[] = [];
      for (let i = 0; i < perBlock; i++) {
        const start = nowUs();
        const handle = await client.acquire(`cold/${coldKey++}`, "write");
        c.push(nowUs() - start);
        handle.release();
      }
      if (block === 0) continue; // warm-up
      echoSamples.push(...e);
      cold.push(...c);
    }
    echo.close();
    const echoP50 = percentile(echoSamples, 50);
    report({ name: "floor: echo round trip p50 / p99", value: `${fmtUs(echoP50)} / ${fmtUs(percentile(echoSamples, 99))}`, ratio: "1.00×", target: "-", met: null });
    const echo64 = await runWorkers([0, 1, 2, 3].map(() => ({ kind: "echo", port, connections: 16 })), durationMs);
    report({ name: "floor: echo throughput, 64 in flight", value: fmtRate(echo64.rate), ratio: "1.00×", target: "-", met: null });
    const coldP50 = percentile(cold, 50);
    report({
      name: "cold acquire p50 / p99",
      value: `${fmtUs(coldP50)} / ${fmtUs(percentile(cold, 99))}`,
      ratio: `${(coldP50 / echoP50).toFixed(2)}× echo p50`,
      target: "≤ 1.3× echo p50",
      met: coldP50 <= 1.3 * echoP50,
    });

    // Cached re-acquire: the same key, same client, no network.
    await client.acquire("cached/1", "write").then((h) => h.release());
    let cachedCount = 0;
    const cachedEnd = Date.now() + durationMs;
    while (Date.now() < cachedEnd) {
      for (let i = 0; i < 1000; i++) {
        const handle = await client.acquire("cached/1", "write");
        handle.release();
      }
      cachedCount += 1000;
    }
    const cachedRate = cachedCount / (durationMs / 1000);
    report({
      name: "cached re-acquire (acquire+release)",
      value: fmtRate(cachedRate),
      ratio: `${(cachedRate / echo64.rate).toFixed(1)}× echo throughput`,
      target: "≥ 2,000,000/s",
      met: cachedRate >= 2_000_000,
    });
    await client.close();

    // Two clients alternating write on one key: every acquire is a hand-off (invalidate + grant).
    const handoff = await runWorkers(
      [0, 1].map(() => ({ kind: "handoff", servers, key: "handoff/1" })),
      durationMs,
    );
    const handoffP50 = percentile(handoff.samples, 50);
    report({
      name: "two-client hand-off p50 / p99",
      value: `${fmtUs(handoffP50)} / ${fmtUs(percentile(handoff.samples, 99))}`,
      ratio: `${(handoffP50 / echoP50).toFixed(2)}× echo p50`,
      target: "≤ 2.5× echo p50",
      met: handoffP50 <= 2.5 * echoP50,
    });

    // Eight clients on one hot key (FIFO, no polling).
    const hot = await runWorkers([0, 1, 2, 3].map(() => ({ kind: "hot", servers, clients: 2, key: "hot/1" })), durationMs);
    const hotP99 = percentile(hot.samples, 99);
    report({
      name: "8 clients on one hot key: rate, p99",
      value: `${fmtRate(hot.rate)}, ${fmtUs(hotP99)}`,
      ratio: `${(hot.rate / echo64.rate).toFixed(2)}× echo throughput`,
      target: "vs redis lock: see below",
      met: null,
    });

    // 64 clients on fresh keys: server throughput.
    const fresh = await runWorkers(
      [0, 1, 2, 3].map((w) => ({ kind: "fresh", servers, clients: 16, prefix: `fresh/${w}` })),
      durationMs,
    );
    report({
      name: "64 clients on fresh keys: grants/s",
      value: fmtRate(fresh.rate),
      ratio: `${(fresh.rate / echo64.rate).toFixed(2)}× echo throughput`,
      target: "≥ 0.6× echo throughput",
      met: fresh.rate >= 0.6 * echo64.rate,
    });

    // Peers on this machine's Redis and PostgreSQL, same shapes and duration, then the §7 ratios.
    const peers = await runBaselines({ quick, durationMs });
    const keylockFigures = { hotRate: hot.rate, hotP99Us: hotP99, freshRate: fresh.rate };
    for (const section of baselineRows(peers, keylockFigures, { echoP50Us: echoP50, echoRate: echo64.rate })) {
      console.log(`\n${section.header}`);
      for (const row of section.rows) report(row);
    }
    console.log("");

    // The pure core in a child process with --expose-gc: memory per entry and server-side recovery cost.
    const entries = quick ? 200_000 : 1_000_000;
    const core = JSON.parse(await firstLine(spawnModule("core", [String(entries)], ["--expose-gc"]), /^\{/)) as {
      bytesPerEntry: number;
      recoveryMs: number;
    };
    report({
      name: `server memory per granted entry (${entries / 1000}k)`,
      value: `${core.bytesPerEntry.toFixed(0)} bytes`,
      ratio: "-",
      target: "≤ 300 bytes (keys included)",
      met: core.bytesPerEntry <= 300,
    });
    const perMillion = (core.recoveryMs / entries) * 1_000_000;
    report({
      name: "recovery of 1M locks / 100 clients (server CPU)",
      value: `${(perMillion / 1000).toFixed(2)} s`,
      ratio: "-",
      target: "≤ 3 s (decode + lock table; network not included)",
      met: perMillion <= 3000,
    });

    // Failover: its own three-member cluster (SQLite, heartbeat timeout 2000 ms).
    const failover = await runFailoverBench({ quick, print: () => undefined });
    const silentTarget = failover.heartbeatTimeoutMs + 1000;
    const silentMax = Math.max(...failover.silentMs);
    const gracefulMax = Math.max(...failover.gracefulMs);
    report({
      name: `failover, silent leader loss (hb ${failover.heartbeatTimeoutMs} ms)`,
      value: `p50 ${percentile(failover.silentMs, 50).toFixed(0)} ms, max ${silentMax.toFixed(0)} ms`,
      ratio: `${(silentMax / silentTarget).toFixed(2)}× target`,
      target: `≤ heartbeat timeout + 1 s (${silentTarget} ms)`,
      met: silentMax <= silentTarget,
    });
    report({
      name: "failover, graceful leader exit",
      value: `p50 ${percentile(failover.gracefulMs, 50).toFixed(0)} ms, max ${gracefulMax.toFixed(0)} ms`,
      ratio: `${(gracefulMax / GRACEFUL_TARGET_MS).toFixed(2)}× target`,
      target: `≤ ${GRACEFUL_TARGET_MS} ms`,
      met: gracefulMax <= GRACEFUL_TARGET_MS,
    });
    return rows;
  } finally {
    echo.kill("SIGKILL");
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * `npm run bench`: the benchmarks of DESIGN §7 (issue 11's table), measured side by side in one run and
 * reported as ratios taken in that run (this machine is shared and noisy: only ratios count).
 *
 * - The floor is a bare Node length-prefixed echo between two processes (bench/echo-server.ts).
 * - keylock is a `keylock up` process on a fresh SQLite store, used through the public client.
 * - Peers (bench/peers.ts) run through their real client libraries: redlock and redis-semaphore over
 *   ioredis, PostgreSQL advisory locks over pg. A peer that does not answer says "not measured: <why>".
 * - Every multi-client load runs in worker processes (bench/worker.ts): several event loops, not one.
 *   Multi-client rows show rate, p99, max latency and fairness (the fewest acquisitions any client
 *   completed, as a share of an equal split).
 * - Scale rows: 1,000 connected clients on one member, 1,000,000 granted entries (bench/core.ts),
 *   recovery of 1,000,000 locks from 100 client processes end to end; failover (bench/failover.ts).
 * Writes a JSON record (--json FILE, default bench/last-run.json) and an SVG chart of the multi-client
 * rows (--svg FILE, default bench/last-run.svg); `--compare FILE` prints this run's ratios against a saved
 * record. `--quick` shortens everything; `--only a,b` runs the named groups (GROUPS below); `--seconds N`
 * sets each load's length and `--no-peers` skips the peers (profiling runs: docs/performance.md).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connect } from "../src/client/client.js";
import { GreetingExchange } from "../src/client/handshake.js";
import { FramedConnection, connectTcp, parseAddress } from "../src/io/tcp.js";
import { WARMUP_MS, nowUs, percentile } from "./stats.js";
import { EchoClient } from "./echo-server.js";
import { GRACEFUL_TARGET_MS, runFailoverBench } from "./failover.js";
import { PEER_LABELS, PEER_SYSTEMS, peerReachable, type PeerSystem } from "./peers.js";
import type { Job, WorkerResult } from "./worker.js";
import { multiClientSvg } from "./chart.js";

export const GROUPS = ["cold", "cached", "handoff", "hot", "fresh", "liveness", "clients", "entries", "recovery", "failover"] as const;
export type Group = (typeof GROUPS)[number];

export interface BenchOptions {
  quick: boolean;
  /** Measure the peers too (default); --no-peers for profiling runs. */
  peers: boolean;
  /** Length of each load (default 3 s, 1.5 s with --quick). */
  durationMs?: number;
  only: Group[] | null;
  jsonFile: string;
  svgFile: string;
  compareFile: string | null;
  /** Extra node flags for the `keylock up` process (e.g. --cpu-prof): KEYLOCK_BENCH_SERVER_FLAGS. */
  serverFlags: string[];
}

/** One measured system in a row (keylock, the floor or a peer). */
export interface Cell {
  system: string;
  value: string;
  rate?: number;
  p50Us?: number;
  p99Us?: number;
  maxUs?: number;
  fairness?: number;
  notMeasured?: string;
}

export interface Row {
  id: string;
  workload: string;
  cells: Cell[];
  /** keylock's figure against the target's base, e.g. cold p50 / echo p50. */
  ratios: { name: string; value: number; target: string; met: boolean }[];
  note?: string;
}

export interface BenchRecord {
  date: string;
  machine: { cores: number; cpu: string; node: string };
  quick: boolean;
  rows: Row[];
}

const here = fileURLToPath(new URL(".", import.meta.url));
const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
const CLI = join(here, `../src/cli/main${ext}`);
const WORKER = join(here, `worker${ext}`);
const WORKER_SLACK_MS = 60_000;

function spawnNode(file: string, args: string[], nodeFlags: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeFlags, ...process.execArgv, file, ...args], { stdio: ["pipe", "pipe", "inherit"] });
}

function firstLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (pattern.test(line)) resolve(line);
    });
    child.once("exit", (code) => reject(new Error(`${String(child.spawnargs.at(-1))} exited with ${code}`)));
  });
}

/**
 * Runs `jobs` in worker processes: spawns them, waits until every one has loaded (`loaded`), lets them all
 * set up (`start`), waits until every one is connected (`ready`), calls
 * `beforeGo` (e.g. to read the server's memory), starts them together, and collects their results.
 */
export async function runWorkers(
  jobs: Omit<Job, "durationMs">[],
  durationMs: number,
  hooks: { beforeGo?: () => Promise<void> | void; afterGo?: (startAtMs: number) => Promise<void> | void; startWave?: number } = {},
): Promise<WorkerResult[]> {
  const children = jobs.map((job) => spawnNode(WORKER, [JSON.stringify({ ...job, durationMs })], WORKER_FLAGS));
  const loads: Promise<void>[] = [];
  const readies: Promise<void>[] = [];
  const results = children.map((child) => {
    let loadedResolve: () => void = () => undefined;
    let readyResolve: () => void = () => undefined;
    loads.push(new Promise<void>((r) => (loadedResolve = r)));
    readies.push(new Promise<void>((r) => (readyResolve = r)));
    return new Promise<WorkerResult>((resolve) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        if (line === "loaded") loadedResolve();
        else if (line === "ready") readyResolve();
        else if (line.startsWith("{")) resolve(JSON.parse(line) as WorkerResult);
      });
      child.once("exit", (code) => {
        loadedResolve();
        readyResolve();
        resolve({ counts: [], samples: [], maxUs: 0, error: `worker exited with ${code}` });
      });
    });
  });
  const killer = setTimeout(() => children.forEach((c) => c.kill("SIGKILL")), durationMs + 10 * WORKER_SLACK_MS);
  // Every worker has loaded its modules before any connects (the module-loading storm of a hundred
  // processes is not the server's load), then each sets up (connects, takes its locks) and says "ready".
  // `startWave`: that many at a time, each wave once the previous one is ready (a set-up that is not what
  // the row measures, such as a hundred clients taking 10,000 locks each, then does not flood the server).
  await Promise.all(loads);
  const wave = hooks.startWave ?? children.length;
  for (let first = 0; first < children.length; first += wave) {
    for (const child of children.slice(first, first + wave)) if (child.exitCode === null) child.stdin!.write("start\n");
    await Promise.all(readies.slice(first, first + wave));
  }
  await hooks.beforeGo?.();
  const startAtMs = Date.now() + 200;
  for (const child of children) child.stdin!.write(`go ${startAtMs}\n`);
  await hooks.afterGo?.(startAtMs);
  const out = await Promise.all(results);
  clearTimeout(killer);
  // Closing stdin releases the workers that stay until the row is measured (hold); the next row starts
  // once every worker has exited (or was killed WORKER_SLACK_MS later), so their departures do not load it.
  const exited = children.map((child) => (child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once("exit", () => r()))));
  for (const child of children) child.stdin!.end();
  const straggler = setTimeout(() => children.forEach((c) => c.exitCode === null && c.kill("SIGKILL")), WORKER_SLACK_MS);
  await Promise.all(exited);
  clearTimeout(straggler);
  const failed = out.find((r) => r.error !== undefined);
  if (failed) throw new Error(failed.error);
  return out;
}

interface Load {
  /** The workers' CPU per acquisition over the measured window (µs; 0 when they did not report it). */
  clientCpuUs: number;
  rate: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  fairness: number;
  samples: number[];
}

export function summarise(results: WorkerResult[], durationMs: number): Load {
  const counts = results.flatMap((r) => r.counts);
  const total = counts.reduce((a, b) => a + b, 0);
  const samples = results.flatMap((r) => r.samples);
  const cpu = results.reduce((sum, r) => sum + (r.cpuSeconds ?? 0), 0);
  return {
    clientCpuUs: total === 0 ? 0 : (cpu * 1e6) / total,
    rate: total / (durationMs / 1000),
    p50Us: percentile(samples, 50),
    p99Us: percentile(samples, 99),
    maxUs: Math.max(0, ...results.map((r) => r.maxUs)),
    fairness: counts.length === 0 || total === 0 ? 0 : Math.min(...counts) / (total / counts.length),
    samples,
  };
}

/** `total` clients spread over `workers` processes. */
function spread(total: number, workers: number): number[] {
  return Array.from({ length: workers }, (_, w) => Math.floor(total / workers) + (w < total % workers ? 1 : 0)).filter((n) => n > 0);
}

/**
 * A ratio with two decimals, or three when it is below 0.1 or when two would round a missed target onto
 * its bound (1.997 against "≥ 2" reads 1.997, not 2.00).
 */
export function fmtRatio(r: { value: number; met: boolean; target: string }): string {
  const two = r.value.toFixed(2);
  const bound = /^[≤≥]\s*([0-9.]+)/.exec(r.target)?.[1];
  return r.value < 0.1 || (!r.met && bound !== undefined && Number(two) === Number(bound)) ? r.value.toFixed(3) : two;
}

export function fmtUs(us: number | undefined): string {
  if (us === undefined || Number.isNaN(us)) return "-";
  return us >= 1000 ? `${(us / 1000).toFixed(us >= 100_000 ? 0 : 1)} ms` : `${us.toFixed(0)} µs`;
}

export function fmtRate(perSecond: number | undefined): string {
  if (perSecond === undefined) return "-";
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : perSecond >= 1e3 ? `${(perSecond / 1e3).toFixed(1)}k/s` : `${perSecond.toFixed(0)}/s`;
}

/** The cell name of the one-key rows' protocol floor (bench/relay-floor.ts). */
const PROTOCOL_FLOOR = "protocol floor (bare Node relay)";

function loadCell(system: string, load: Load): Cell {
  return {
    system,
    value: `${fmtRate(load.rate)}, p99 ${fmtUs(load.p99Us)}, max ${fmtUs(load.maxUs)}, fair ${load.fairness.toFixed(2)}`,
    rate: load.rate,
    p50Us: load.p50Us,
    p99Us: load.p99Us,
    maxUs: load.maxUs,
    fairness: load.fairness,
  };
}

function printRow(row: Row): void {
  console.log(`\n${row.workload}`);
  for (const cell of row.cells) console.log(`  ${cell.system.padEnd(22)} ${cell.notMeasured === undefined ? cell.value : `not measured: ${cell.notMeasured}`}`);
  for (const r of row.ratios) {
    console.log(`  ${"→ " + r.name.padEnd(20)} ${fmtRatio(r)}×   target ${r.target}   ${r.target.startsWith("-") ? "" : r.met ? "[met]" : "[NOT met]"}`);
  }
  if (row.note) console.log(`  (${row.note})`);
}

/** Extra node flags for every worker process (e.g. --cpu-prof --cpu-prof-dir=DIR): KEYLOCK_BENCH_WORKER_FLAGS. */
const WORKER_FLAGS = (process.env.KEYLOCK_BENCH_WORKER_FLAGS ?? "").split(" ").filter((f) => f !== "");

/** CPU seconds (user + system) a process has used so far: Linux /proc, clock ticks of 10 ms. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * A server process's CPU over a row's measured window (WARMUP_MS after the workers' start, then
 * `durationMs`): `afterGo` (runWorkers' hook) sets the two readings; `seconds()` once the row is done.
 */
function windowCpuOf(pid: number, durationMs: number): { afterGo(startAtMs: number): void; seconds(): number } {
  let first = 0;
  let last = 0;
  return {
    afterGo(startAtMs) {
      const from = startAtMs + WARMUP_MS;
      setTimeout(() => (first = cpuSeconds(pid)), from - Date.now());
      setTimeout(() => (last = cpuSeconds(pid)), from + durationMs - Date.now());
    },
    seconds: () => last - first,
  };
}

/** A load measured in workers, with the CPU its server process (`serverPid`) used over the measured window. */
interface Measured {
  load: Load;
  serverSeconds: number;
}

async function runMeasured(jobs: Omit<Job, "durationMs">[], durationMs: number, serverPid: number): Promise<Measured> {
  const cpu = windowCpuOf(serverPid, durationMs);
  const load = summarise(await runWorkers(jobs, durationMs, cpu), durationMs);
  return { load, serverSeconds: cpu.seconds() };
}

/** A row's note: CPU per acquisition (per round trip for the echo) over the measured window, of the server process and of the clients. */
function cpuNote(durationMs: number, parts: { system: string; server: string; measured: Measured }[]): string {
  const per = ({ system, server, measured: { load, serverSeconds } }: (typeof parts)[number]): string => {
    const acquisitions = load.rate * (durationMs / 1000);
    const serverUs = acquisitions === 0 ? 0 : (serverSeconds * 1e6) / acquisitions;
    return `${system} ${fmtUs(serverUs)} in its ${server}, ${fmtUs(load.clientCpuUs)} in its clients`;
  };
  return `CPU per acquisition in the measured window (the server's in 10 ms ticks): ${parts.map(per).join("; ")}`;
}

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) * 1024 : NaN;
}

/**
 * Whether a busy member keeps serving other connections: every `everyMs` a new connection sends HELLO and
 * times its answer (answered at once by a server whose event loop turns; a greeting costs the store, HELLO
 * does not). `stop()` returns how many were answered and the slowest answer (an unanswered one counts
 * from its send until stop).
 */
function helloProber(address: string, everyMs: number): { stop(): { count: number; maxMs: number; p50Ms: number } } {
  const { host, port } = parseAddress(address);
  const answeredMs: number[] = [];
  const open = new Set<{ sentAt: number; connection: FramedConnection | null }>();
  let stopped = false;
  const probe = async (): Promise<void> => {
    const entry = { sentAt: performance.now(), connection: null as FramedConnection | null };
    open.add(entry);
    try {
      const connection = new FramedConnection(await connectTcp(host, port, 30_000));
      entry.connection = connection;
      const exchange = new GreetingExchange(address, {
        rid: 1n, name: "bench-hello-probe", pid: process.pid, lastServerTerm: 0n, farewell: false, admin: false,
        secret: undefined, clusterId: "", resume: null, claim: null,
      });
      connection.start({
        onMessage: () => {
          answeredMs.push(performance.now() - entry.sentAt);
          open.delete(entry);
          connection.close("probed");
        },
        onClose: () => open.delete(entry),
      });
      connection.send(exchange.hello());
    } catch {
      open.delete(entry);
    }
  };
  const timer = setInterval(() => void (stopped || probe()), everyMs);
  void probe();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
      const now = performance.now();
      const waiting = [...open].map((e) => now - e.sentAt);
      for (const e of open) e.connection?.close("probe stopped");
      return { count: answeredMs.length, maxMs: Math.max(0, ...answeredMs, ...waiting), p50Ms: percentile(answeredMs, 50) };
    },
  };
}

/** A `keylock up` process on a store directory; restartable on the same directory and port. */
class KeylockUp {
  child: ChildProcess | null = null;
  address = "";
  constructor(
    readonly dir: string,
    readonly port: number,
    private readonly nodeFlags: string[],
  ) {}

  async start(): Promise<number> {
    // A fence command instead of the built-in local agent: that agent looks up each new client's process
    // in /proc during its greeting, which a thousand simultaneous greetings would measure instead of locks
    // (docs/performance.md). The bench never needs to fence anyone.
    this.child = spawnNode(CLI, ["up", "--dir", this.dir, "--port", String(this.port), "--fence-command", "true"], this.nodeFlags);
    this.address = (await firstLine(this.child, /^keylock: serving on/)).replace("keylock: serving on ", "").trim();
    return Date.now();
  }

  async stop(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
    this.child = null;
  }
}

export async function runBenchmarks(options: BenchOptions): Promise<BenchRecord> {
  const quick = options.quick;
  const wants = (group: Group): boolean => options.only === null || options.only.includes(group);
  const durationMs = options.durationMs ?? (quick ? 1500 : 3000);
  const rows: Row[] = [];
  const add = (row: Row): void => {
    rows.push(row);
    printRow(row);
  };
  const record: BenchRecord = {
    date: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? "unknown", node: process.version },
    quick,
    rows,
  };
  console.log(`keylock bench (${quick ? "quick" : "full"}), ${record.date}, ${record.machine.cores} cores (${record.machine.cpu}), node ${process.version}`);
  console.log("every ratio is taken within this run; only ratios count on a shared machine");

  const dir = mkdtempSync(join(tmpdir(), "keylock-bench-"));
  const echoServer = spawnNode(join(here, `echo-server${ext}`), []);
  const echoPort = Number((await firstLine(echoServer, /^echo: listening on/)).split(" ").pop());
  // The protocol floor of the one-key rows: a fresh relay process per row (it keeps one key's state).
  const relayFloor = async (jobs: (port: number) => Omit<Job, "durationMs">[]): Promise<Measured> => {
    const relay = spawnNode(join(here, `relay-floor${ext}`), []);
    try {
      const port = Number((await firstLine(relay, /^relay: listening on/)).split(" ").pop());
      return await runMeasured(jobs(port), durationMs, relay.pid!);
    } finally {
      relay.kill("SIGKILL");
    }
  };
  const server = new KeylockUp(dir, 20000 + Math.floor(Math.random() * 40000), options.serverFlags);
  await server.start();
  const servers = [server.address];
  // Peers: reachable or why not (2 s each).
  const peerState = new Map<PeerSystem, Awaited<ReturnType<typeof peerReachable>>>();
  for (const system of PEER_SYSTEMS) {
    peerState.set(system, options.peers ? await peerReachable(system, 64) : { ok: false, reason: "--no-peers" });
  }
  const peerLoad = async (system: PeerSystem, shape: "hot" | "fresh", clients: number, workers: number, runId: string): Promise<Cell> => {
    const state = peerState.get(system)!;
    if (!state.ok) return { system: PEER_LABELS[system], value: "", notMeasured: state.reason };
    const n = Math.min(clients, state.clients);
    try {
      const load = summarise(
        await runWorkers(
          spread(n, Math.min(workers, n)).map((c, w) => ({ kind: "load", system, shape, clients: c, key: `keylock-bench:${runId}:hot`, prefix: `keylock-bench:${runId}:${w}` })),
          durationMs,
        ),
        durationMs,
      );
      const cell = loadCell(PEER_LABELS[system], load);
      if (n < clients) cell.value += ` (${n} connections: server limit)`;
      return cell;
    } catch (error) {
      return { system: PEER_LABELS[system], value: "", notMeasured: (error as Error).message };
    }
  };
  const runId = Math.random().toString(36).slice(2, 8);
  /** Runs one group; a failure becomes a "not measured" row and the run goes on. */
  const guarded = async (id: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (error) {
      add({ id, workload: id, cells: [{ system: "keylock", value: "", notMeasured: `failed: ${(error as Error).message}` }], ratios: [] });
    }
  };

  try {
    // The floor and cold grants, in alternating blocks so both see the same machine conditions.
    const echo = await EchoClient.open(echoPort);
    const client = await connect({ servers, name: "bench-main", idleLockLimit: 1_000_000 });
    const echoSamples: number[] = [];
    const cold: number[] = [];
    const blocks = quick ? 6 : 16;
    const perBlock = 500;
    let coldKey = 0;
    // Warm-up, not measured: enough cold grants and echo round trips for V8 to optimise both paths in every
    // process involved (a short run would otherwise measure the interpreter; block 0 is discarded too).
    for (let i = 0; i < 3000; i++) {
      await echo.roundTrip();
      if (wants("cold")) (await client.acquire(`warm/${String(i).padStart(6, "0")}`, "write")).release();
    }
    for (let block = 0; block < blocks; block++) {
      const e: number[] = [];
      for (let i = 0; i < perBlock; i++) {
        const start = nowUs();
        await echo.roundTrip();
        e.push(nowUs() - start);
      }
      const c: number[] = [];
      if (wants("cold")) {
        for (let i = 0; i < perBlock; i++) {
          const start = nowUs();
          const handle = await client.acquire(`cold/${String(coldKey++).padStart(6, "0")}`, "write");
          c.push(nowUs() - start);
          handle.release();
        }
      }
      if (block === 0) continue; // warm-up
      echoSamples.push(...e);
      cold.push(...c);
    }
    echo.close();
    const echoP50 = percentile(echoSamples, 50);
    add({
      id: "floor-rtt",
      workload: "floor: echo round trip (bare Node length-prefixed echo)",
      cells: [{ system: "echo", value: `p50 ${fmtUs(echoP50)}, p99 ${fmtUs(percentile(echoSamples, 99))}`, p50Us: echoP50, p99Us: percentile(echoSamples, 99) }],
      ratios: [],
    });
    if (wants("cold")) {
      const coldP50 = percentile(cold, 50);
      add({
        id: "cold",
        workload: "cold grant (fresh key each time, one client)",
        cells: [{ system: "keylock", value: `p50 ${fmtUs(coldP50)}, p99 ${fmtUs(percentile(cold, 99))}`, p50Us: coldP50, p99Us: percentile(cold, 99) }],
        ratios: [{ name: "p50 / echo p50", value: coldP50 / echoP50, target: "≤ 1.3", met: coldP50 <= 1.3 * echoP50 }],
      });
    }

    if (wants("cached")) await guarded("cached", async () => {
      await client.acquire("cached/1", "write").then((h) => h.release());
      let cachedCount = 0;
      const begin = performance.now();
      const cachedEnd = begin + durationMs;
      while (performance.now() < cachedEnd) {
        for (let i = 0; i < 10_000; i++) (await client.acquire("cached/1", "write")).release();
        cachedCount += 10_000;
      }
      const cachedRate = cachedCount / ((performance.now() - begin) / 1000);
      const cells: Cell[] = [{ system: "keylock", value: fmtRate(cachedRate), rate: cachedRate }];
      for (const system of PEER_SYSTEMS) {
        const cell = await peerLoad(system, "hot", 1, 1, `${runId}-serial`);
        if (cell.rate !== undefined) cell.value = `${fmtRate(cell.rate)} (serial acquire+release; acquire p50 ${fmtUs(cell.p50Us)})`;
        cells.push(cell);
      }
      add({
        id: "cached",
        workload: "cached acquire+release (same key, same client; peers: serial acquire+release)",
        cells,
        ratios: [{ name: "rate / 2 M/s", value: cachedRate / 2e6, target: "≥ 1 (2,000,000/s)", met: cachedRate >= 2e6 }],
      });
    });
    await client.close();

    if (wants("handoff")) await guarded("handoff", async () => {
      const keylock = await runMeasured([0, 1].map(() => ({ kind: "handoff", servers, key: "handoff/1" })), durationMs, server.child!.pid!);
      const relay = await relayFloor((port) => [0, 1].map(() => ({ kind: "handoff", system: "relay", port })));
      const [handoff, floor] = [keylock.load, relay.load];
      add({
        id: "handoff",
        workload: "hand-off, two clients strictly alternating write on one key",
        cells: [
          { system: "keylock", value: `p50 ${fmtUs(handoff.p50Us)}, p99 ${fmtUs(handoff.p99Us)}`, p50Us: handoff.p50Us, p99Us: handoff.p99Us },
          { system: PROTOCOL_FLOOR, value: `p50 ${fmtUs(floor.p50Us)}, p99 ${fmtUs(floor.p99Us)}`, p50Us: floor.p50Us, p99Us: floor.p99Us },
        ],
        note: cpuNote(durationMs, [
          { system: "keylock", server: "member", measured: keylock },
          { system: "protocol floor", server: "relay", measured: relay },
        ]),
        ratios: [
          { name: "p50 / echo p50", value: handoff.p50Us / echoP50, target: "≤ 2.5", met: handoff.p50Us <= 2.5 * echoP50 },
          { name: "protocol floor p50 / echo p50", value: floor.p50Us / echoP50, target: "- (reported, no target)", met: true },
        ],
      });
    });

    if (wants("hot")) await guarded("hot", async () => {
      const keylock = await runMeasured(spread(8, 4).map((c) => ({ kind: "load", system: "keylock", shape: "hot", clients: c, servers, key: "hot/1" })), durationMs, server.child!.pid!);
      const relay = await relayFloor((port) => spread(8, 4).map((c) => ({ kind: "load", system: "relay", shape: "hot", clients: c, port })));
      const [hot, floor] = [keylock.load, relay.load];
      const cpu = cpuNote(durationMs, [
        { system: "keylock", server: "member", measured: keylock },
        { system: "protocol floor", server: "relay", measured: relay },
      ]);
      const cells: Cell[] = [loadCell("keylock", hot)];
      for (const system of PEER_SYSTEMS) cells.push(await peerLoad(system, "hot", 8, 4, runId));
      const redlock = cells[1]!;
      cells.push(loadCell(PROTOCOL_FLOOR, floor));
      const ratios: Row["ratios"] = [{ name: "fairness", value: hot.fairness, target: "≥ 0.9", met: hot.fairness >= 0.9 }];
      if (redlock.rate !== undefined) {
        ratios.unshift(
          { name: "rate / redlock", value: hot.rate / redlock.rate, target: "≥ 2", met: hot.rate >= 2 * redlock.rate },
          { name: "p99 / redlock p99", value: hot.p99Us / redlock.p99Us!, target: "≤ 0.1", met: hot.p99Us <= 0.1 * redlock.p99Us! },
        );
        ratios.push(
          { name: "protocol floor rate / redlock", value: floor.rate / redlock.rate, target: "- (reported, no target)", met: true },
          { name: "protocol floor p99 / redlock p99", value: floor.p99Us / redlock.p99Us!, target: "- (reported, no target)", met: true },
        );
      }
      add({ id: "hot", workload: "8 clients, one key (4 worker processes × 2)", cells, ratios, note: redlock.rate === undefined ? `redlock ratios not measured: redis unreachable; ${cpu}` : cpu });
    });

    if (wants("fresh")) await guarded("fresh", async () => {
      const echo = await runMeasured(spread(64, 4).map((c) => ({ kind: "echo", port: echoPort, connections: c })), durationMs, echoServer.pid!);
      const keylock = await runMeasured(
        spread(64, 4).map((c, w) => ({ kind: "load", system: "keylock", shape: "fresh", clients: c, servers, prefix: `fresh/${w}` })),
        durationMs,
        server.child!.pid!,
      );
      const [floor, fresh] = [echo.load, keylock.load];
      const cells: Cell[] = [loadCell("echo floor", floor), loadCell("keylock", fresh)];
      for (const system of PEER_SYSTEMS) cells.push(await peerLoad(system, "fresh", 64, 4, runId));
      const ratios: Row["ratios"] = [{ name: "rate / floor", value: fresh.rate / floor.rate, target: "≥ 0.6", met: fresh.rate >= 0.6 * floor.rate }];
      const redlock = cells[2]!;
      const pgCell = cells[4]!;
      if (redlock.rate !== undefined) ratios.push({ name: "rate / redlock", value: fresh.rate / redlock.rate, target: "≥ 2", met: fresh.rate >= 2 * redlock.rate });
      if (pgCell.rate !== undefined) ratios.push({ name: "rate / pg advisory", value: fresh.rate / pgCell.rate, target: "≥ 5", met: fresh.rate >= 5 * pgCell.rate });
      const note = cpuNote(durationMs, [
        { system: "keylock", server: "member", measured: keylock },
        { system: "echo floor", server: "echo server", measured: echo },
      ]);
      add({ id: "fresh", workload: "64 clients, fresh keys (4 worker processes × 16)", cells, ratios, note });
    });

    if (wants("liveness")) await guarded("liveness", async () => {
      const spinMs = quick ? 1000 : 2000;
      const [spinner, contender] = await runWorkers(
        [
          { kind: "spin", servers, key: "spin/1" },
          { kind: "contend", servers, key: "spin/1", afterMs: spinMs / 4 },
        ],
        spinMs,
      );
      const waitUs = contender!.maxUs;
      add({
        id: "liveness",
        workload: "a holder re-acquiring its cached lock in a loop; another client asks for it",
        cells: [{ system: "keylock", value: `granted after ${fmtUs(waitUs)} (the holder looped at ${fmtRate(spinner!.counts[0]! / (spinMs / 1000))})`, maxUs: waitUs }],
        ratios: [{ name: "wait / 50 ms", value: waitUs / 50_000, target: "≤ 1", met: waitUs <= 50_000 }],
      });
    });

    if (wants("clients")) await guarded("clients", async () => {
      const total = quick ? 200 : 1000;
      const workers = quick ? 2 : 10;
      // A server of its own, idle and settled before the clients connect: the RSS growth is then theirs, not
      // the collector's work on the garbage of earlier rows.
      const own = new KeylockUp(mkdtempSync(join(tmpdir(), "keylock-bench-clients-")), 20000 + Math.floor(Math.random() * 40000), options.serverFlags);
      await own.start();
      let load: Load;
      let rssBefore: number;
      let rssAfter = 0;
      try {
        await new Promise((r) => setTimeout(r, 1000));
        rssBefore = rssBytes(own.child!.pid!);
        load = summarise(
          await runWorkers(
            spread(total, workers).map((c, w) => ({ kind: "load", system: "keylock", shape: "fresh", clients: c, servers: [own.address], prefix: `many/${w}` })),
            durationMs,
            { beforeGo: () => void (rssAfter = rssBytes(own.child!.pid!)) },
          ),
          durationMs,
        );
      } finally {
        await own.stop("SIGTERM");
        rmSync(own.dir, { recursive: true, force: true });
      }
      const perClient = (rssAfter - rssBefore) / total;
      add({
        id: "clients",
        workload: `${total} connected clients on one member (${workers} worker processes), all acquiring fresh keys`,
        cells: [{ ...loadCell("keylock", load), value: `server RSS +${(perClient / 1024).toFixed(1)} KiB per client; ${loadCell("keylock", load).value}` }],
        ratios: [{ name: "grant p99 / echo p50", value: load.p99Us / echoP50, target: "- (reported, no target)", met: true }],
        note: "memory per client = RSS growth of an idle, settled server once all are connected, divided by their number (an upper bound: it includes the code V8 compiles for the first connections and the sockets' user-space buffers)",
      });
    });

    if (wants("entries")) await guarded("entries", async () => {
      const entries = quick ? 200_000 : 1_000_000;
      const core = JSON.parse(await firstLine(spawnNode(join(here, `core${ext}`), [String(entries)], ["--expose-gc"]), /^\{/)) as {
        bytesPerEntry: number;
      };
      add({
        id: "entries",
        workload: `${entries.toLocaleString("en")} granted entries in the server's lock table`,
        cells: [{ system: "keylock", value: `${core.bytesPerEntry.toFixed(0)} bytes per entry (keys included)` }],
        ratios: [{ name: "bytes / 300", value: core.bytesPerEntry / 300, target: "≤ 1 (300 B)", met: core.bytesPerEntry <= 300 }],
      });
    });

    if (wants("recovery")) await guarded("recovery", async () => {
      const processes = quick ? 10 : 100;
      const locksEach = 10_000;
      let restartedAtMs = 0;
      let killedAtMs = 0;
      let probeGrantedAtMs = 0;
      let hellos = { count: 0, maxMs: 0, p50Ms: 0 };
      let memberCpuSeconds = 0;
      const results = await runWorkers(
        Array.from({ length: processes }, (_, p) => ({ kind: "hold", servers, clients: 1, locks: locksEach, prefix: `held/${p}` })),
        60_000,
        {
          startWave: 10,
          afterGo: async () => {
            await new Promise((r) => setTimeout(r, 300));
            killedAtMs = Date.now();
            await server.stop("SIGKILL");
            restartedAtMs = await server.start();
            const cpuAtServing = cpuSeconds(server.child!.pid!);
            const prober = helloProber(server.address, 100);
            // A new client's first grant comes once recovery finished (requests queue meanwhile).
            const probe = await connect({ servers, name: "bench-probe" });
            (await probe.acquire("probe/after-recovery", "write")).release();
            probeGrantedAtMs = Date.now();
            memberCpuSeconds = cpuSeconds(server.child!.pid!) - cpuAtServing;
            hellos = prober.stop();
            void probe.close();
          },
        },
      );
      const lastRecovered = Math.max(...results.flatMap((r) => r.recoveredAtMs ?? []));
      const missing = results.flatMap((r) => r.recoveredAtMs ?? []).filter((t) => t === 0).length;
      const endMs = Math.max(lastRecovered, probeGrantedAtMs);
      const seconds = (endMs - restartedAtMs) / 1000;
      const total = processes * locksEach;
      add({
        id: "recovery",
        workload: `recovery of ${total.toLocaleString("en")} locks from ${processes} client processes after a server restart`,
        cells: [
          {
            system: "keylock",
            value: `${seconds.toFixed(2)} s from serving again to the first new grant (${((endMs - killedAtMs) / 1000).toFixed(2)} s from SIGKILL, process start included)${missing > 0 ? `; ${missing} clients never saw "recovered"` : ""}`,
          },
        ],
        ratios: [{ name: "seconds / 3 s", value: seconds / 3, target: "≤ 1", met: seconds <= 3 && missing === 0 }],
        note:
          `other connections kept being served during recovery: ${hellos.count} HELLOs on new connections (one per 100 ms), ` +
          `answered in p50 ${hellos.p50Ms.toFixed(1)} ms, max ${hellos.maxMs.toFixed(0)} ms; ` +
          `CPU from serving to the first new grant: member ${memberCpuSeconds.toFixed(2)} s, ` +
          `client processes ${results.reduce((sum, r) => sum + (r.cpuSeconds ?? 0), 0).toFixed(2)} s (kill to "recovered")`,
      });
    });

    if (wants("failover")) await guarded("failover", async () => {
      const failover = await runFailoverBench({ quick, print: () => undefined });
      const silentTarget = failover.heartbeatTimeoutMs + 1000;
      const silentMax = Math.max(...failover.silentMs);
      const gracefulMax = Math.max(...failover.gracefulMs);
      add({
        id: "failover",
        workload: `failover, 3 members on SQLite, heartbeat timeout ${failover.heartbeatTimeoutMs} ms`,
        cells: [
          { system: "silent (SIGKILL)", value: `p50 ${percentile(failover.silentMs, 50).toFixed(0)} ms, max ${silentMax.toFixed(0)} ms` },
          { system: "graceful (SIGTERM)", value: `p50 ${percentile(failover.gracefulMs, 50).toFixed(0)} ms, max ${gracefulMax.toFixed(0)} ms` },
        ],
        ratios: [
          { name: "silent / (hb + 1 s)", value: silentMax / silentTarget, target: "≤ 1", met: silentMax <= silentTarget },
          { name: `graceful / ${GRACEFUL_TARGET_MS} ms`, value: gracefulMax / GRACEFUL_TARGET_MS, target: "≤ 1", met: gracefulMax <= GRACEFUL_TARGET_MS },
        ],
      });
    });
  } finally {
    echoServer.kill("SIGKILL");
    await server.stop("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }

  console.log("\nsummary");
  for (const row of rows) for (const r of row.ratios) if (!r.target.startsWith("-")) console.log(`  ${(row.id + ": " + r.name).padEnd(36)} ${r.value.toFixed(3).padStart(8)}×  target ${r.target.padEnd(18)} ${r.met ? "met" : "NOT met"}`);
  writeFileSync(options.jsonFile, `${JSON.stringify(record, null, 2)}\n`);
  console.log(`\nrecord written to ${options.jsonFile}`);
  const svg = multiClientSvg(record);
  if (svg !== null) {
    writeFileSync(options.svgFile, svg);
    console.log(`chart of the multi-client rows written to ${options.svgFile}`);
  }
  if (options.compareFile !== null) compare(record, JSON.parse(readFileSync(options.compareFile, "utf8")) as BenchRecord, options.compareFile);
  return record;
}

/** Prints every ratio of `now` next to the same ratio in a saved record (a regression guard, not a timed test). */
export function compare(now: BenchRecord, saved: BenchRecord, file: string): void {
  console.log(`\ncompared with ${file} (${saved.date}, ${saved.machine.cores} cores${saved.quick ? ", quick" : ""})`);
  for (const row of now.rows) {
    const before = saved.rows.find((r) => r.id === row.id);
    for (const r of row.ratios) {
      const old = before?.ratios.find((x) => x.name === r.name);
      const change = old === undefined ? "(not in saved run)" : `was ${old.value.toFixed(3)}×  now/then ${(r.value / old.value).toFixed(2)}`;
      console.log(`  ${(row.id + ": " + r.name).padEnd(36)} ${r.value.toFixed(3).padStart(8)}×  ${change}`);
    }
  }
}

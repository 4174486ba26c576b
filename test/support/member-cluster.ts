/**
 * `MemberCluster`: real `keylock member` processes on 127.0.0.1, formatted on a fresh store, for the
 * member integration tests and the failover benchmark (bench/failover.ts). Also `freeMemberPort` (a port
 * free for both TCP and UDP) and `runKeylock` (the CLI run to completion).
 * Relies on: the CLI's ready lines (`keylock: member N up`, `keylock: serving on HOST:PORT`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import dgram from "node:dgram";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { AdminConnection } from "../../src/client/admin.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
const CLI = join(here, `../../src/cli/main${ext}`);
export const PROBE_INTERVAL_MS = 5;
export const MEMBER_READY_TIMEOUT_MS = 30_000;

function nodeArgs(): string[] {
  const args = [...process.execArgv.filter((a) => !a.startsWith("--test"))];
  if (ext === ".ts" && !args.some((a, i) => a === "tsx" && args[i - 1] === "--import") && !args.includes("--import=tsx")) {
    args.push("--import", "tsx");
  }
  return args;
}

/** A TCP port that is also free for UDP (a member binds both on its slot address). */
export async function freeMemberPort(host = "127.0.0.1"): Promise<number> {
  for (;;) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const udp = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
    const ok = await new Promise<boolean>((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, host, () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (ok) return port;
  }
}

/** Runs the keylock CLI to completion. */
export function runKeylock(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeArgs(), CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface MemberProcess {
  readonly slot: number;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every line, stdout as is and stderr prefixed "[stderr] ", with the time it arrived (performance.now). */
  readonly lines: { atMs: number; line: string }[];
  /** The member's rid as it logged it once up. */
  rid: string | null;
  readonly exited: Promise<number | null>;
  alive: boolean;
}

export interface ClusterOptions {
  /** Store URL; default a fresh SQLite file in a temporary directory. */
  store?: string;
  members: number;
  heartbeatTimeoutMs: number;
  /** Default: the built-in local agent. */
  fenceCommand?: string;
  extraArgs?: string[];
  /** A cluster secret file (owner-only): the store is formatted with it and every member is given it. */
  secretFile?: string;
  /** Called with every member output line (for verbose test output). */
  onLine?: (slot: number, line: string) => void;
}

export class MemberCluster {
  readonly procs = new Map<number, MemberProcess>();
  private readonly waiters = new Set<() => void>();

  private constructor(
    readonly store: string,
    readonly addresses: string[],
    private readonly options: ClusterOptions,
    private readonly dir: string | null,
  ) {}

  /** Picks free ports and formats the store with slots 0..members-1 on 127.0.0.1. */
  static async format(options: ClusterOptions): Promise<MemberCluster> {
    const dir = options.store === undefined ? mkdtempSync(join(tmpdir(), "keylock-cluster-")) : null;
    const store = options.store ?? `sqlite:${join(dir!, "keylock.db")}`;
    const addresses: string[] = [];
    while (addresses.length < options.members) {
      const address = `127.0.0.1:${await freeMemberPort()}`;
      if (!addresses.includes(address)) addresses.push(address);
    }
    const secret = options.secretFile === undefined ? [] : ["--secret-file", options.secretFile];
    const result = await runKeylock(["format", "--store", store, ...addresses.flatMap((a, i) => ["--slot", `${i}=${a}`]), ...secret]);
    if (result.code !== 0) throw new Error(`keylock format failed (${result.code}): ${result.stderr}`);
    return new MemberCluster(store, addresses, options, dir);
  }

  /** Starts the member of `slot` and waits for `keylock: member N up`. */
  async start(slot: number): Promise<MemberProcess> {
    const args = [
      "member",
      "--store",
      this.store,
      "--slot",
      String(slot),
      "--heartbeat-timeout-ms",
      String(this.options.heartbeatTimeoutMs),
      ...(this.options.fenceCommand === undefined ? [] : ["--fence-command", this.options.fenceCommand]),
      ...(this.options.secretFile === undefined ? [] : ["--secret-file", this.options.secretFile]),
      ...(this.options.extraArgs ?? []),
    ];
    const child = spawn(process.execPath, [...nodeArgs(), CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const proc: MemberProcess = {
      slot,
      child,
      pid: child.pid!,
      lines: [],
      rid: null,
      alive: true,
      exited: new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? -1 : null)))),
    };
    void proc.exited.then(() => {
      proc.alive = false;
      this.wake();
    });
    const onLine = (line: string): void => {
      proc.lines.push({ atMs: performance.now(), line });
      const rid = /member \d+ \(rid ([0-9a-f]{16})\) begins/.exec(line);
      if (rid) proc.rid = rid[1]!;
      this.options.onLine?.(slot, line);
      this.wake();
    };
    createInterface({ input: child.stdout }).on("line", onLine);
    createInterface({ input: child.stderr }).on("line", (line) => onLine(`[stderr] ${line}`));
    this.procs.set(slot, proc);
    await this.waitFor(() => proc.lines.some((l) => l.line === `keylock: member ${slot} up`), MEMBER_READY_TIMEOUT_MS, `member ${slot} up`, proc);
    return proc;
  }

  async startAll(): Promise<void> {
    await Promise.all(this.addresses.map((_, slot) => this.start(slot)));
  }

  /** Sends `signal` and waits for the process to exit. */
  async kill(slot: number, signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    const proc = this.procs.get(slot);
    if (proc === undefined) return null;
    if (proc.alive) proc.child.kill(signal);
    return proc.exited;
  }

  /** Serving lines seen so far: which slot printed `keylock: serving on` when. */
  servingLines(): { slot: number; atMs: number }[] {
    const out: { slot: number; atMs: number }[] = [];
    for (const proc of this.procs.values()) {
      for (const l of proc.lines) if (l.line.startsWith("keylock: serving on ")) out.push({ slot: proc.slot, atMs: l.atMs });
    }
    return out.sort((a, b) => a.atMs - b.atMs);
  }

  /** Waits for a `serving on` line printed after `sinceMs` by a running member; returns its slot. */
  async waitForServing(sinceMs: number, timeoutMs: number): Promise<{ slot: number; atMs: number }> {
    let found: { slot: number; atMs: number } | undefined;
    await this.waitFor(
      () => (found = this.servingLines().find((s) => s.atMs >= sinceMs && this.procs.get(s.slot)?.alive === true)) !== undefined,
      timeoutMs,
      "a member serving",
    );
    return found!;
  }

  /**
   * Greets every running member every PROBE_INTERVAL_MS until one answers as leader (not ENOTLEADER);
   * returns its slot and the time (performance.now) the answer arrived.
   */
  async probeLeader(timeoutMs: number, exclude: number | null = null): Promise<{ slot: number; atMs: number }> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const candidates = [...this.procs.values()].filter((p) => p.alive && p.slot !== exclude);
      const answers = await Promise.all(
        candidates.map(async (p) => {
          try {
            const admin = await AdminConnection.open(this.addresses[p.slot]!, { servers: [], timeoutMs: 1000 });
            const atMs = performance.now();
            admin.close();
            return { slot: p.slot, atMs };
          } catch {
            return null;
          }
        }),
      );
      const leader = answers.find((a) => a !== null);
      if (leader) return leader;
      if (performance.now() > deadline) throw new Error(`no member answered as leader within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS));
    }
  }

  output(slot: number): string {
    return (this.procs.get(slot)?.lines ?? []).map((l) => l.line).join("\n");
  }

  /** Kills every member (SIGKILL) and removes the temporary directory. */
  async close(): Promise<void> {
    await Promise.all([...this.procs.keys()].map((slot) => this.kill(slot, "SIGKILL")));
    if (this.dir !== null) rmSync(this.dir, { recursive: true, force: true });
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  private waitFor(condition: () => boolean, timeoutMs: number, what: string, proc?: MemberProcess): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (error?: Error): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (error) reject(error);
        else resolve();
      };
      const check = (): void => {
        if (condition()) done();
        else if (proc !== undefined && !proc.alive) done(new Error(`member ${proc.slot} exited while waiting for ${what}:\n${this.output(proc.slot)}`));
      };
      const timer = setTimeout(() => {
        const outputs = [...this.procs.keys()].map((s) => `--- member ${s}\n${this.output(s)}`).join("\n");
        done(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${outputs}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }
}

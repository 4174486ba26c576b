/**
 * Real processes for integration tests: `keylock up` servers, scripted client workers and clusters, all on
 * 127.0.0.1, each bounded in time and killed by the test (and, as a last resort, when the test process exits).
 * A thin layer on the one spawning harness, src/testing (what users get as `keylock/testing`): clusters are
 * `startCluster()`, every child process is `spawnNode()`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { READY_TIMEOUT_MS, spawnNode, type NodeProcess } from "../../src/testing/process.js";

export { freeMemberPort, runKeylock } from "../../src/testing/process.js";
export { startCluster, TestCluster } from "../../src/testing/cluster.js";

export const REPO = new URL("../../", import.meta.url).pathname;
export { READY_TIMEOUT_MS };

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `keylock-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A process of this repository (src/testing/process.ts): every line in `output`, stderr prefixed "[stderr] ". */
export type Proc = NodeProcess;

/** Runs a TypeScript script of this repository (through tsx) with a piped stdin. */
export function spawnTs(script: string, args: string[], env: Record<string, string> = {}): Proc {
  const proc = spawnNode(join(REPO, script), args, { cwd: REPO, env, stdin: true, label: script });
  if (process.env.KEYLOCK_TEST_VERBOSE) proc.onLine((line) => line.startsWith("[stderr] ") && console.log(`[${script} stderr] ${line.slice(9)}`));
  return proc;
}

export interface KeylockUp extends Proc {
  address: string;
}

/** Starts `keylock up` in `dir` on `port` and waits for its ready line. */
export async function startUp(dir: string, port: number, extra: string[] = []): Promise<KeylockUp> {
  const proc = spawnTs("src/cli/main.ts", ["up", "--dir", dir, "--port", String(port), ...extra]);
  const line = await proc.waitForLine(/^keylock: serving on /);
  return { ...proc, address: line.replace("keylock: serving on ", "").trim() };
}

/** A client process driven by JSON lines (test/integration/fixtures/client-worker.ts). */
export class Worker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: WorkerReply) => void; reject: (e: Error) => void }>();
  readonly events: Record<string, unknown>[] = [];
  readonly proc: Proc;

  constructor(env: Record<string, string> = {}) {
    this.proc = spawnTs("test/integration/fixtures/client-worker.ts", [], env);
    createInterface({ input: this.proc.child.stdout! }).on("line", (line) => {
      let message: WorkerReply;
      try {
        message = JSON.parse(line) as WorkerReply;
      } catch {
        return;
      }
      if (typeof message.id === "number") {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        waiter?.resolve(message);
      } else {
        this.events.push(message);
      }
    });
    void this.proc.exited.then(() => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`worker exited; output:\n${this.proc.output.join("\n")}`));
      this.pending.clear();
    });
  }

  call(op: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<WorkerReply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`worker op ${op} timed out after ${timeoutMs} ms; output:\n${this.proc.output.join("\n")}`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.child.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  /** Like call() but throws if the worker reported an error. */
  async ok(op: string, args: Record<string, unknown> = {}, timeoutMs?: number): Promise<WorkerReply> {
    const reply = await this.call(op, args, timeoutMs);
    if (reply.error) throw new Error(`worker ${op} failed: ${reply.code} ${reply.error}`);
    return reply;
  }

  async waitForEvent(predicate: (e: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(predicate);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`event not seen; events: ${JSON.stringify(this.events)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    return this.proc.kill(signal);
  }
}

export interface WorkerReply {
  id?: number;
  error?: string;
  code?: string;
  [field: string]: unknown;
}

/** Runs the CLI to completion and returns its exit code and output. */
export async function runCli(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawnTs("src/cli/main.ts", args);
  const timer = setTimeout(() => void proc.kill(), timeoutMs);
  const code = await proc.exited;
  clearTimeout(timer);
  const stdout = proc.output.filter((l) => !l.startsWith("[stderr] ")).join("\n");
  const stderr = proc.output.filter((l) => l.startsWith("[stderr] ")).map((l) => l.slice(9)).join("\n");
  return { code, stdout, stderr };
}

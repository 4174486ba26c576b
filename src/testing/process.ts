/**
 * Child processes for tests: the one spawning harness behind `startCluster()` (./cluster.ts) and this
 * repository's test support (test/support/processes.ts).
 *
 * Guarantees:
 * - `spawnNode` runs a script with the Node binary of this process: a `.ts` script through tsx (in this
 *   repository), a `.js` one (the published package) as is. Every stdout line, and every stderr line
 *   prefixed "[stderr] ", is kept in `output` with the time it arrived; every wait is bounded.
 * - A child still running when this process exits is sent SIGKILL (no member outlives a test run).
 * - `freeMemberPort` returns a port free for TCP and UDP on the host (a member binds both on its address).
 * Relies on: the CLI's ready lines (`keylock: member N up`, `keylock: serving on HOST:PORT`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";

export const READY_TIMEOUT_MS = 30_000;
export const CLI_TIMEOUT_MS = 30_000;

const here = fileURLToPath(new URL(".", import.meta.url));
const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
/** The keylock CLI next to this module: src/cli/main.ts in the repository, dist/src/cli/main.js when built. */
export const CLI_PATH = `${here}../cli/main${ext}`;

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Node flags for a child: this process's (minus the test runner's), and tsx for a TypeScript script. */
function nodeArgs(script: string): string[] {
  const args = process.execArgv.filter((a) => !a.startsWith("--test") && !a.startsWith("--experimental-test"));
  if (script.endsWith(".ts") && !args.some((a, i) => (a === "tsx" && args[i - 1] === "--import") || a === "--import=tsx")) {
    args.push("--import", "tsx");
  }
  return args;
}

export interface NodeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every line so far: stdout as is, stderr prefixed "[stderr] ". */
  readonly output: string[];
  /** The same lines with the time they arrived (performance.now()). */
  readonly lines: { atMs: number; line: string }[];
  /** Resolves with the exit code (-1 when killed by a signal). */
  readonly exited: Promise<number | null>;
  readonly alive: boolean;
  /** Resolves with the first line (seen or to come) matching `pattern`; rejects on timeout or exit. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Called with each new line. */
  onLine(listener: (line: string) => void): void;
  /** Sends `signal` (default SIGKILL) unless it has exited, and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Names the process in timeout messages. */
  label?: string;
  /** Pipe stdin (for scripted workers); default ignored. */
  stdin?: boolean;
}

export function spawnNode(script: string, args: string[], options: SpawnOptions = {}): NodeProcess {
  const child = spawn(process.execPath, [...nodeArgs(script), script, ...args], {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: { ...process.env, ...options.env },
    stdio: [options.stdin === true ? "pipe" : "ignore", "pipe", "pipe"],
  });
  live.add(child);
  const label = options.label ?? script;
  const output: string[] = [];
  const lines: { atMs: number; line: string }[] = [];
  const listeners = new Set<(line: string) => void>();
  let alive = true;
  const add = (line: string): void => {
    output.push(line);
    lines.push({ atMs: performance.now(), line });
    for (const listener of [...listeners]) listener(line);
  };
  createInterface({ input: child.stdout! }).on("line", add);
  createInterface({ input: child.stderr! }).on("line", (line) => add(`[stderr] ${line}`));
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code, signal) => {
      live.delete(child);
      alive = false;
      resolve(code ?? (signal ? -1 : null));
    }),
  );
  return {
    child,
    pid: child.pid ?? -1,
    output,
    lines,
    exited,
    get alive() {
      return alive;
    },
    onLine: (listener) => void listeners.add(listener),
    waitForLine(pattern, timeoutMs = READY_TIMEOUT_MS) {
      const seen = output.find((line) => pattern.test(line));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const done = (): void => {
          clearTimeout(timer);
          listeners.delete(listener);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} from ${label}; output:\n${output.join("\n")}`));
        }, timeoutMs);
        const listener = (line: string): void => {
          if (!pattern.test(line)) return;
          done();
          resolve(line);
        };
        listeners.add(listener);
        void exited.then(() => {
          if (!listeners.has(listener)) return;
          done();
          reject(new Error(`${label} exited while waiting for ${pattern}; output:\n${output.join("\n")}`));
        });
      });
    },
    async kill(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs the keylock CLI to completion (killed after `timeoutMs`). */
export async function runKeylock(args: string[], timeoutMs = CLI_TIMEOUT_MS): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawnNode(CLI_PATH, args, { label: `keylock ${args[0] ?? ""}` });
  const timer = setTimeout(() => void proc.kill(), timeoutMs);
  const code = await proc.exited;
  clearTimeout(timer);
  const stdout = proc.output.filter((l) => !l.startsWith("[stderr] "));
  const stderr = proc.output.filter((l) => l.startsWith("[stderr] ")).map((l) => l.slice(9));
  return { code, stdout: lines(stdout), stderr: lines(stderr) };
}

function lines(list: string[]): string {
  return list.length === 0 ? "" : `${list.join("\n")}\n`;
}

/** A port free for both TCP and UDP on `host` right now. */
export async function freeMemberPort(host = "127.0.0.1"): Promise<number> {
  for (;;) {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, host, resolve);
    });
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

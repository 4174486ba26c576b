/**
 * Fence agents (DESIGN §4, §6; reference §8): make sure a client or a previous leader can no longer act
 * before its state is reclaimed.
 *
 * Guarantees:
 * - `fence()` resolves only once the agent reported success; it rejects on failure or after
 *   `timeoutMs` (the command is then killed). Callers treat a rejection as fatal for the server
 *   (reference §8.4: another server will retry from the durable records).
 * - The command agent runs `/bin/sh -c CMD` with KEYLOCK_FENCE_RID (16 hex digits),
 *   KEYLOCK_FENCE_ADDRESS, KEYLOCK_FENCE_REASON and KEYLOCK_FENCE_PID (when known); exit status 0 = fenced.
 * - The `local` agent (the default for `keylock up`) fences a process on this machine by the pid it
 *   registered: SIGKILL, then waits until the pid is gone. A pid that is already gone is fenced.
 *   It refuses targets without a pid, and pids that are not ours to judge (pid ≤ 1, or our own).
 * Relies on: pids not being reused within the wait (the local agent is for one machine and tests).
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { ridToHex } from "../core/keys.js";

export const FENCE_TIMEOUT_MS = 30_000;
export const LOCAL_FENCE_POLL_MS = 20;

export type FenceReason = "client_recovery" | "client_reconnect" | "quorum_block_leader";

export interface FenceTarget {
  rid: bigint;
  address: string;
  reason: FenceReason;
  /** The process id the target registered (greeting pid, member pid), when known. */
  pid?: number;
}

export interface FenceAgent {
  readonly name: string;
  fence(target: FenceTarget, timeoutMs?: number): Promise<void>;
}

export class FenceError extends Error {
  constructor(
    readonly target: FenceTarget,
    message: string,
  ) {
    super(`fencing ${ridToHex(target.rid)} (${target.reason}, ${target.address}) failed: ${message}`);
    this.name = "FenceError";
  }
}

export function commandFenceAgent(command: string): FenceAgent {
  return {
    name: `command ${JSON.stringify(command)}`,
    fence(target, timeoutMs = FENCE_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        const child = spawn("/bin/sh", ["-c", command], {
          stdio: ["ignore", "ignore", "pipe"],
          detached: true, // its own process group, so a timeout kills everything the command started
          env: {
            ...process.env,
            KEYLOCK_FENCE_RID: ridToHex(target.rid),
            KEYLOCK_FENCE_ADDRESS: target.address,
            KEYLOCK_FENCE_REASON: target.reason,
            ...(target.pid === undefined ? {} : { KEYLOCK_FENCE_PID: String(target.pid) }),
          },
        });
        let stderr = "";
        child.stderr.on("data", (chunk: Buffer) => {
          if (stderr.length < 4096) stderr += chunk.toString();
        });
        const timer = setTimeout(() => {
          try {
            process.kill(-child.pid!, "SIGKILL");
          } catch {
            child.kill("SIGKILL");
          }
          reject(new FenceError(target, `the fence command did not finish within ${timeoutMs} ms`));
        }, timeoutMs);
        child.on("error", (error) => {
          clearTimeout(timer);
          reject(new FenceError(target, `could not run the fence command: ${error.message}`));
        });
        child.on("exit", (code, signal) => {
          clearTimeout(timer);
          if (code === 0) resolve();
          else {
            const why = signal ? `was killed by ${signal}` : `exited with status ${code}`;
            reject(new FenceError(target, `the fence command ${why}${stderr ? `: ${stderr.trim()}` : ""}`));
          }
        });
      });
    },
  };
}

export function localFenceAgent(): FenceAgent {
  return {
    name: "local",
    async fence(target, timeoutMs = FENCE_TIMEOUT_MS) {
      const pid = target.pid;
      if (pid === undefined || !Number.isInteger(pid) || pid <= 1) {
        throw new FenceError(target, "the local agent needs the pid the target registered");
      }
      if (pid === process.pid) throw new FenceError(target, "refusing to fence this process itself");
      if (!isLoopbackAddress(target.address)) {
        throw new FenceError(target, `the local agent only fences processes on this machine, not at ${target.address}; use --fence-command`);
      }
      if (!alive(pid)) return;
      try {
        process.kill(pid, "SIGKILL");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ESRCH") {
          throw new FenceError(target, `kill(${pid}) failed: ${(error as Error).message}`);
        }
      }
      const deadline = Date.now() + timeoutMs;
      while (alive(pid)) {
        if (Date.now() > deadline) throw new FenceError(target, `pid ${pid} still alive after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, LOCAL_FENCE_POLL_MS));
      }
    },
  };
}

/** Whether a pid exists on this machine (signal 0 probes without sending; EPERM means it exists). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !isZombie(pid);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A killed child that its parent has not reaped yet still answers kill(0); it can no longer act. */
function isZombie(pid: number): boolean {
  try {
    // /proc/<pid>/stat: "pid (comm) S ..." — state Z is a zombie. Not on every OS; absent → not a zombie.
    const stat = readProcStat(pid);
    return stat !== null && /\) Z /.test(stat);
  } catch {
    return false;
  }
}

function readProcStat(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
}

/** "127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000" and "unknown" (no address recorded) are local. */
export function isLoopbackAddress(address: string): boolean {
  const host = address.replace(/^\[/, "").replace(/\]?:\d+$/, "");
  return host === "unknown" || host === "::1" || /^(::ffff:)?127\./.test(host) || host === "localhost";
}

export function fenceAgentFor(command: string | undefined): FenceAgent {
  return command === undefined || command === "local" ? localFenceAgent() : commandFenceAgent(command);
}

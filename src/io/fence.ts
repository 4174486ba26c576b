/**
 * Fence agents (DESIGN §4, §6; reference §8): make sure a client or a previous leader can no longer act
 * before its state is reclaimed.
 *
 * Guarantees:
 * - `fence()` resolves only once the agent reported success; it rejects on failure or after
 *   `timeoutMs` (the command is then killed). Callers treat a rejection as fatal for the server
 *   (reference §8.4: another server will retry from the durable records).
 * - A target's pid is never one a peer named: it is the process a member found itself — the owner of
 *   the client's connection (io/peer-process.ts, recorded with its start token in the session and the
 *   client record) or the pid a member recorded for itself in its slot events.
 * - The command agent runs `/bin/sh -c CMD` with KEYLOCK_FENCE_RID (16 hex digits),
 *   KEYLOCK_FENCE_ADDRESS, KEYLOCK_FENCE_REASON and, when a process was found, KEYLOCK_FENCE_PID and
 *   KEYLOCK_FENCE_PID_START (its start token); exit status 0 = fenced.
 * - The `local` agent (the default for `keylock up`) kills only that found process: if the pid still
 *   belongs to the process with the recorded start token it is SIGKILLed and the agent waits until it is
 *   gone; a pid that is gone, reused by a later process, a zombie, or from before a reboot is already
 *   fenced. It refuses (FenceError) a target without a found process, one recorded on another machine,
 *   and pids that are not ours to judge (pid ≤ 1, or our own). `cannotFence` says so at the greeting, so
 *   such a client is refused then instead of stopping every server later.
 * Relies on: the pid not being reused between the start-token check and the kill (microseconds; pids are
 * handed out in increasing order and wrap only after the whole pid space).
 */
import { spawn } from "node:child_process";
import { ridToHex } from "../core/keys.js";
import { sameProcess, type PeerProcess } from "./peer-process.js";
import { FENCE_TIMEOUT_MS } from "../core/limits.js";
export { FENCE_TIMEOUT_MS };

export const LOCAL_FENCE_POLL_MS = 20;

export type FenceReason = "client_recovery" | "client_reconnect" | "quorum_block_leader";

export interface FenceTarget {
  rid: bigint;
  address: string;
  reason: FenceReason;
  /** The process a member found itself (the owner of the client's connection, a member's own pid), when known. */
  pid?: number;
  /** That process's start token (io/peer-process.ts), given with `pid`. */
  pidStart?: string;
}

export interface FenceAgent {
  readonly name: string;
  fence(target: FenceTarget, timeoutMs?: number): Promise<void>;
  /**
   * Asked when a client greets, before it is recorded: why this agent could never fence a client whose
   * connection the server attributed to `owner` (null: no process found, for `reason`), or undefined.
   * A client no agent run could fence is refused at once; recorded, it would stop every server in turn.
   */
  cannotFence?(owner: PeerProcess | null, reason?: string): string | undefined;
  /**
   * Whether the server must find the process behind each new client's connection (a /proc scan, tens of
   * milliseconds under load) for this agent. Only the `local` agent needs it; the command agent then gets
   * no KEYLOCK_FENCE_PID (a command fences by rid and address).
   */
  readonly needsPeerProcess?: boolean;
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
            ...(target.pidStart === undefined ? {} : { KEYLOCK_FENCE_PID_START: target.pidStart }),
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
    needsPeerProcess: true,
    cannotFence(owner, reason) {
      if (owner !== null) return undefined;
      return `the local fence agent kills only a process it found to own the connection, and found none (${reason ?? "unknown"}); use --fence-command to fence clients it cannot find`;
    },
    async fence(target, timeoutMs = FENCE_TIMEOUT_MS) {
      const { pid, pidStart } = target;
      if (pid === undefined || pidStart === undefined || !Number.isInteger(pid)) {
        throw new FenceError(target, "the local agent kills only a process a member found itself, and none was recorded for this target; use --fence-command");
      }
      if (pid <= 1) throw new FenceError(target, `refusing to fence pid ${pid}`);
      if (pid === process.pid) throw new FenceError(target, "refusing to fence this process itself");
      const state = sameProcess(pid, pidStart);
      if (state === "elsewhere") {
        throw new FenceError(target, `pid ${pid} was recorded on another machine (${pidStart}); the local agent fences only this one; use --fence-command`);
      }
      if (state === "gone") return;
      try {
        process.kill(pid, "SIGKILL");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ESRCH") {
          throw new FenceError(target, `kill(${pid}) failed: ${(error as Error).message}`);
        }
      }
      const deadline = Date.now() + timeoutMs;
      while (sameProcess(pid, pidStart) === "running") {
        if (Date.now() > deadline) throw new FenceError(target, `pid ${pid} still alive after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, LOCAL_FENCE_POLL_MS));
      }
    },
  };
}

/** "127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000" and "unknown" (no address recorded) are local. */
export function isLoopbackAddress(address: string): boolean {
  const host = address.replace(/^\[/, "").replace(/\]?:\d+$/, "");
  return host === "unknown" || host === "::1" || /^(::ffff:)?127\./.test(host) || host === "localhost";
}

export function fenceAgentFor(command: string | undefined): FenceAgent {
  return command === undefined || command === "local" ? localFenceAgent() : commandFenceAgent(command);
}

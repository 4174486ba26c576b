/**
 * What the hostile-peer fuzzer attacks: real keylock processes on 127.0.0.1.
 * - `UpTarget`: one `keylock up` (embedded one-member cluster on SQLite), for TCP cases.
 * - `ClusterTarget`: three `keylock member` processes on one SQLite store, for forged quorum datagrams
 *   (and TCP cases through whichever member leads).
 * Both fence with a command that kills nothing (`true`): a hostile greeting names any pid it likes, and
 * the fuzzer must not get processes of this machine killed while it looks for bugs.
 *
 * Guarantees: `exits()` lists every process that ended although nobody stopped it, with its output
 * tail; `close()` kills everything started and removes the temporary directories.
 * Relies on: test/support/processes.ts and src/testing/cluster.ts (startCluster).
 */
import { performance } from "node:perf_hooks";
import { startCluster, type TestCluster } from "../../src/testing/cluster.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";

/** Short timeouts so a vanished hostile client is fenced and reclaimed well within a case. */
export const RECONNECT_TIMEOUT_MS = 1500;
export const RECOVERY_TIMEOUT_MS = 3000;
export const HEARTBEAT_TIMEOUT_MS = 2500;
/** A connection that has not greeted by then must be closed by the member (issue item 6). */
export const GREETING_TIMEOUT_MS = 1000;
const SERVER_FLAGS = [
  "--greeting-timeout-ms",
  String(GREETING_TIMEOUT_MS),
  "--fence-command",
  "true",
  "--reconnect-timeout-ms",
  String(RECONNECT_TIMEOUT_MS),
  "--recovery-timeout-ms",
  String(RECOVERY_TIMEOUT_MS),
];
const TAIL_LINES = 16;

export interface Exit {
  readonly name: string;
  readonly code: number | null;
  readonly tail: string;
}

export interface Target {
  readonly kind: "up" | "cluster";
  /** Client addresses (TCP). */
  readonly servers: readonly string[];
  /** Quorum datagram addresses by slot (cluster only). */
  readonly quorum: readonly { slot: number; host: string; port: number }[];
  exits(): Exit[];
  /** Lines where a lock server failed and stopped (a leader knocked over), over the target's life. */
  serverFailures(): string[];
  /** The members' output lines matching `pattern`, over the target's life. */
  logLines(pattern: RegExp): string[];
  /** The cluster's current term, or null when no member answers. */
  term(): Promise<bigint | null>;
  /** The address of the member that serves, when known. */
  leader(): string;
  /**
   * Cluster only: stops the leader gracefully and waits for another member to serve within `boundMs`,
   * then starts the stopped member again. Returns null when that worked, else what went wrong.
   */
  failover?(boundMs: number): Promise<string | null>;
  close(): Promise<void>;
}

/** A lock server that stops on an error logs this (runtime/member.ts); a peer must never cause it. */
const SERVER_FAILED = /the server for term \d+ failed/;

function tail(lines: readonly string[]): string {
  return lines.slice(-TAIL_LINES).join("\n");
}

export class UpTarget implements Target {
  readonly kind = "up";
  readonly quorum = [];
  private stopping = false;

  private constructor(
    private proc: KeylockUp,
    private readonly dir: { path: string; remove(): void },
    private readonly port: number,
  ) {}

  static async start(): Promise<UpTarget> {
    const dir = tempDir("fuzz");
    const port = await freePort();
    const proc = await startUp(dir.path, port, SERVER_FLAGS);
    return new UpTarget(proc, dir, port);
  }

  /** SIGKILLs the server and starts it again on the same store and port (clients then recover their locks). */
  async restart(): Promise<void> {
    this.stopping = true;
    await this.proc.kill("SIGKILL");
    this.stopping = false;
    this.proc = await startUp(this.dir.path, this.port, SERVER_FLAGS);
  }

  get servers(): string[] {
    return [this.proc.address];
  }

  leader(): string {
    return this.proc.address;
  }

  exits(): Exit[] {
    const child = this.proc.child;
    if (this.stopping || (child.exitCode === null && child.signalCode === null)) return [];
    return [{ name: "keylock up", code: child.exitCode ?? -1, tail: tail(this.proc.output) }];
  }

  serverFailures(): string[] {
    return this.logLines(SERVER_FAILED);
  }

  logLines(pattern: RegExp): string[] {
    return this.proc.output.filter((l) => pattern.test(l));
  }

  async term(): Promise<bigint | null> {
    return statusTerm([this.proc.address]);
  }

  async close(): Promise<void> {
    this.stopping = true;
    await this.proc.kill("SIGKILL");
    this.dir.remove();
  }
}

export class ClusterTarget implements Target {
  readonly kind = "cluster";
  private stopping = false;
  private leaderAddress: string;
  /** Members stopped on purpose by failover(): their exit is not a finding. */
  private readonly stopped = new Set<number>();

  private constructor(
    private readonly cluster: TestCluster,
    leader: number,
  ) {
    this.leaderAddress = cluster.servers[leader]!;
  }

  static async start(): Promise<ClusterTarget> {
    // Members still running when this process exits (Ctrl-C of a long run) are killed by the harness.
    const cluster = await startCluster({
      members: 3,
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      fenceCommand: "true",
      memberArgs: SERVER_FLAGS.filter((_, i) => SERVER_FLAGS[i] !== "--fence-command" && SERVER_FLAGS[i - 1] !== "--fence-command"),
      ...(process.env.KEYLOCK_FUZZ_VERBOSE ? { onLine: (slot: number, line: string) => console.log(`[member ${slot}] ${line}`) } : {}),
    });
    try {
      const leader = await cluster.leader({ timeoutMs: 30_000 });
      return new ClusterTarget(cluster, leader.slot);
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  get servers(): string[] {
    return this.cluster.servers;
  }

  get quorum(): { slot: number; host: string; port: number }[] {
    return this.cluster.servers.map((address, slot) => {
      const at = address.lastIndexOf(":");
      return { slot, host: address.slice(0, at), port: Number(address.slice(at + 1)) };
    });
  }

  leader(): string {
    return this.leaderAddress;
  }

  exits(): Exit[] {
    if (this.stopping) return [];
    const out: Exit[] = [];
    for (const member of this.cluster.allMembers()) {
      if (member.alive || this.stopped.has(member.pid)) continue;
      out.push({
        name: `member ${member.slot}`,
        code: member.process.child.exitCode ?? -1,
        tail: tail([...member.process.output]),
      });
    }
    return out;
  }

  serverFailures(): string[] {
    return this.logLines(SERVER_FAILED);
  }

  logLines(pattern: RegExp): string[] {
    return this.cluster.allMembers().flatMap((m) => m.process.output.map((line) => `member ${m.slot}: ${line}`).filter((l) => pattern.test(l)));
  }

  async term(): Promise<bigint | null> {
    try {
      const probed = await this.cluster.leader({ timeoutMs: 5000 });
      this.leaderAddress = this.cluster.servers[probed.slot]!;
    } catch {
      return null;
    }
    return statusTerm([this.leaderAddress]);
  }

  async failover(boundMs: number): Promise<string | null> {
    const slot = this.cluster.servers.indexOf(this.leaderAddress);
    if (slot < 0) return "no leader known";
    const since = performance.now();
    const pid = this.cluster.member(slot)?.pid;
    if (pid !== undefined) this.stopped.add(pid);
    const code = await this.cluster.kill(slot, "SIGTERM");
    if (code !== 0) return `the leader (member ${slot}) exited with code ${code} on SIGTERM:\n${tail(this.cluster.output(slot).split("\n"))}`;
    try {
      const next = await this.cluster.waitForServing(since, boundMs);
      this.leaderAddress = this.cluster.servers[next.slot]!;
    } catch {
      return `no member took over within ${boundMs} ms after the leader (member ${slot}) resigned`;
    }
    try {
      await this.cluster.restart(slot);
    } catch (error) {
      return `member ${slot} could not rejoin: ${(error as Error).message.split("\n").slice(0, TAIL_LINES).join("\n")}`;
    }
    return null;
  }

  async close(): Promise<void> {
    this.stopping = true;
    await this.cluster.stop();
  }
}

async function statusTerm(servers: string[]): Promise<bigint | null> {
  try {
    const status = (await adminQuery({ servers, timeoutMs: 3000 }, Command.ADMIN_STATUS)) as {
      term: bigint | number;
    };
    return BigInt(status.term);
  } catch {
    return null;
  }
}

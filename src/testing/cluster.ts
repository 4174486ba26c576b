/**
 * `startCluster()` (DESIGN §6, `keylock/testing`): a real keylock cluster for a test suite — `keylock
 * member` child processes on 127.0.0.1, formatted on a fresh store, stopped and cleaned up by `stop()`.
 *
 * Guarantees:
 * - Every member listens on 127.0.0.1 on ports that were free (TCP and UDP) when the cluster was formatted;
 *   with `httpPorts`, each member also serves its status page and metrics on a port that was free, and
 *   `restart(slot)` (so `startCluster()` too) resolves only once that member logged it serves `httpUrl(slot)`.
 * - The store is fresh: by default an SQLite file in a new temporary directory; given a `postgres://` URL,
 *   a new database `keylock_cluster_<hex>` created through that URL (its user needs CREATEDB) and dropped by
 *   `stop()`. A `sqlite:PATH` store is used as given and left in place.
 * - `startCluster()` resolves once every member is up and one of them printed that it serves locks;
 *   `leader()` resolves with the member that answers a greeting as leader now (not merely one that once
 *   printed that it serves; a plaintext greeting: with TLS members use `waitForServing`).
 * - Every wait is bounded (`readyTimeoutMs`, default 30000) and fails with the members' output; members
 *   still running when the test process exits are sent SIGKILL.
 * Relies on: the keylock CLI next to this module (./process.ts), and `pg` for a PostgreSQL store.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { AdminConnection } from "../client/admin.js";
import { CLI_PATH, READY_TIMEOUT_MS, freeMemberPort, runKeylock, spawnNode, type NodeProcess } from "./process.js";

export const LEADER_PROBE_INTERVAL_MS = 5;
export const CLUSTER_HEARTBEAT_TIMEOUT_MS_DEFAULT = 2000;

export interface StartClusterOptions {
  /** Number of members (slots 0..members-1), 1..15; default 3. */
  members?: number;
  /** "sqlite" (default: a file in a temporary directory), "sqlite:PATH", or a postgres:// URL. */
  store?: string;
  /** `--heartbeat-timeout-ms` of every member: 2000 (the default here, for short failovers) to 60000. */
  heartbeatTimeoutMs?: number;
  /** A cluster secret: the store is formatted with it and every member is given it. */
  secret?: string;
  /** Give each member an HTTP port (status page, /metrics); see `httpUrl(slot)`. */
  httpPorts?: boolean;
  /** `--fence-command` of every member (default: the built-in local agent). */
  fenceCommand?: string;
  /** More flags for every member (e.g. TLS or limit flags). */
  memberArgs?: string[];
  /** Bound on each wait: a member up, a leader serving (default 30000). */
  readyTimeoutMs?: number;
  /** Called with every output line of every member (stderr lines prefixed "[stderr] "). */
  onLine?: (slot: number, line: string) => void;
}

/** One member process, for tests that look closer. */
export interface ClusterMember {
  readonly slot: number;
  readonly pid: number;
  readonly alive: boolean;
  /** The member's rid (16 hex digits) once it has logged it. */
  readonly rid: string | null;
  readonly process: NodeProcess;
}

export interface LeaderInfo {
  slot: number;
  address: string;
}

/** Starts a cluster and waits until one member serves locks. */
export async function startCluster(options: StartClusterOptions = {}): Promise<TestCluster> {
  const cluster = await TestCluster.format(options);
  try {
    await Promise.all(cluster.servers.map((_, slot) => cluster.restart(slot)));
    await cluster.waitForServing(0);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

export class TestCluster {
  readonly #members = new Map<number, ClusterMember & { rid: string | null }>();
  readonly #waiters = new Set<() => void>();
  #stopped = false;
  readonly #httpPortsBySlot: number[] | null;
  readonly #options: StartClusterOptions;
  readonly #cleanup: () => Promise<void>;
  readonly #secretFile: string | null;
  /** The members' service addresses by slot: pass them to `connect({ servers })`. */
  readonly servers: string[];
  /** The store URL the cluster was formatted in (for tests that open it). */
  readonly store: string;

  /** Its state is in #private fields (issue 10): properties assigned on a cluster cannot break it. */
  private constructor(servers: string[], store: string, httpPortsBySlot: number[] | null, options: StartClusterOptions, cleanup: () => Promise<void>, secretFile: string | null) {
    this.servers = servers;
    this.store = store;
    this.#httpPortsBySlot = httpPortsBySlot;
    this.#options = options;
    this.#cleanup = cleanup;
    this.#secretFile = secretFile;
  }

  /** Formats a fresh store for the cluster; no member runs yet (`restart(slot)` starts each). */
  static async format(options: StartClusterOptions = {}): Promise<TestCluster> {
    const count = options.members ?? 3;
    if (!Number.isInteger(count) || count < 1 || count > 15) throw new RangeError(`members must be 1..15, not ${count}`);
    const dir = mkdtempSync(join(tmpdir(), "keylock-cluster-"));
    const cleanups: (() => Promise<void>)[] = [
      () => {
        rmSync(dir, { recursive: true, force: true });
        return Promise.resolve();
      },
    ];
    const cleanup = async (): Promise<void> => {
      for (const step of cleanups.reverse()) await step().catch(() => undefined);
    };
    try {
      const store = await freshStore(options.store ?? "sqlite", dir, cleanups);
      const secretFile = options.secret === undefined ? null : join(dir, "secret");
      if (secretFile !== null) writeFileSync(secretFile, `${options.secret}\n`, { mode: 0o600 });
      const ports: number[] = [];
      while (ports.length < count * (options.httpPorts ? 2 : 1)) {
        const port = await freeMemberPort();
        if (!ports.includes(port)) ports.push(port);
      }
      const servers = ports.slice(0, count).map((port) => `127.0.0.1:${port}`);
      const result = await runKeylock([
        "format",
        "--store",
        store,
        ...servers.flatMap((address, slot) => ["--slot", `${slot}=${address}`]),
        ...(secretFile === null ? [] : ["--secret-file", secretFile]),
      ]);
      if (result.code !== 0) throw new Error(`keylock format failed (exit ${result.code}): ${result.stderr.trim()}`);
      return new TestCluster(servers, store, options.httpPorts ? ports.slice(count) : null, options, cleanup, secretFile);
    } catch (error) {
      await cleanup();
      throw error;
    }
  }

  /** That member's status page (with `httpPorts`), e.g. "http://127.0.0.1:PORT/". */
  httpUrl(slot: number): string {
    const port = this.#httpPortsBySlot?.[slot];
    if (port === undefined) throw new Error(this.#httpPortsBySlot === null ? "start the cluster with httpPorts: true" : `no slot ${slot}`);
    return `http://127.0.0.1:${port}/`;
  }

  /**
   * The member that serves locks now: greets every running member (as an admin: nothing is recorded)
   * every few milliseconds until one answers as leader. `exclude` skips a slot (a leader being replaced).
   */
  async leader(options: { timeoutMs?: number; exclude?: number } = {}): Promise<LeaderInfo> {
    const { slot } = await this.probeLeader(options.timeoutMs ?? this.#readyTimeoutMs, options.exclude ?? null);
    return { slot, address: this.servers[slot]! };
  }

  /** Like `leader()`, with the time (performance.now()) the leader answered. */
  async probeLeader(timeoutMs: number, exclude: number | null = null): Promise<{ slot: number; atMs: number }> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const candidates = [...this.#members.values()].filter((m) => m.alive && m.slot !== exclude);
      const answers = await Promise.all(
        candidates.map(async (m) => {
          try {
            const admin = await AdminConnection.open(this.servers[m.slot]!, {
              servers: [],
              timeoutMs: 1000,
              ...(this.#options.secret === undefined ? {} : { secret: this.#options.secret }),
            });
            const atMs = performance.now();
            admin.close();
            return { slot: m.slot, atMs };
          } catch {
            return null;
          }
        }),
      );
      const found = answers.find((a) => a !== null);
      if (found) return found;
      if (performance.now() > deadline) {
        throw new Error(`no member answered as leader within ${timeoutMs} ms; output:\n${this.#describe()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, LEADER_PROBE_INTERVAL_MS));
    }
  }

  /** Sends `signal` to the member of `slot` and resolves with its exit code (-1 for a signal) once it exited. */
  async kill(slot: number, signal: "SIGKILL" | "SIGTERM" | NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    const member = this.#members.get(slot);
    if (member === undefined) return null;
    return member.process.kill(signal);
  }

  /**
   * Starts the member of `slot` (again) and resolves once it takes part in elections (`keylock: member N up`)
   * and, with `httpPorts`, serves its status page at `httpUrl(slot)` (it logs that after it is up).
   */
  async restart(slot: number): Promise<ClusterMember> {
    if (this.#stopped) throw new Error("the cluster was stopped");
    if (slot < 0 || slot >= this.servers.length) throw new RangeError(`no slot ${slot} in a ${this.servers.length}-member cluster`);
    if (this.#members.get(slot)?.alive) throw new Error(`member ${slot} is running; kill it first`);
    const httpPort = this.#httpPortsBySlot?.[slot];
    const args = [
      "member",
      "--store",
      this.store,
      "--slot",
      String(slot),
      "--heartbeat-timeout-ms",
      String(this.#options.heartbeatTimeoutMs ?? CLUSTER_HEARTBEAT_TIMEOUT_MS_DEFAULT),
      ...(this.#options.fenceCommand === undefined ? [] : ["--fence-command", this.#options.fenceCommand]),
      ...(this.#secretFile === null ? [] : ["--secret-file", this.#secretFile]),
      ...(httpPort === undefined ? [] : ["--http-port", String(httpPort)]),
      ...(this.#options.memberArgs ?? []),
    ];
    const proc = spawnNode(CLI_PATH, args, { label: `member ${slot}` });
    const member = {
      slot,
      pid: proc.pid,
      rid: null as string | null,
      process: proc,
      get alive() {
        return proc.alive;
      },
    };
    proc.onLine((line) => {
      const rid = /member \d+ \(rid ([0-9a-f]{16})\) begins/.exec(line);
      if (rid) member.rid = rid[1]!;
      this.#options.onLine?.(slot, line);
      this.#wake();
    });
    void proc.exited.then(() => this.#wake());
    this.#members.set(slot, member);
    await proc.waitForLine(new RegExp(`^keylock: member ${slot} up$`), this.#readyTimeoutMs);
    if (httpPort !== undefined) await proc.waitForLine(new RegExp(`status page on ${escapeRegExp(this.httpUrl(slot))} `), this.#readyTimeoutMs);
    return member;
  }

  /** The member process of `slot` (the latest one started), or undefined if never started. */
  member(slot: number): ClusterMember | undefined {
    return this.#members.get(slot);
  }

  /** Every member process started (the latest one of each slot), in slot order. */
  allMembers(): ClusterMember[] {
    return [...this.#members.values()].sort((a, b) => a.slot - b.slot);
  }

  /** Every output line of the member of `slot` (its latest process), newline-separated. */
  output(slot: number): string {
    return (this.#members.get(slot)?.process.output ?? []).join("\n");
  }

  /** `keylock: serving on` lines seen from the current processes: which slot printed one when (performance.now()). */
  servingLines(): { slot: number; atMs: number }[] {
    const out: { slot: number; atMs: number }[] = [];
    for (const member of this.#members.values()) {
      for (const l of member.process.lines) if (l.line.startsWith("keylock: serving on ")) out.push({ slot: member.slot, atMs: l.atMs });
    }
    return out.sort((a, b) => a.atMs - b.atMs);
  }

  /** Waits for a `serving on` line printed at or after `sinceMs` (performance.now()) by a running member. */
  waitForServing(sinceMs: number, timeoutMs = this.#readyTimeoutMs): Promise<{ slot: number; atMs: number }> {
    const find = (): { slot: number; atMs: number } | undefined =>
      this.servingLines().find((s) => s.atMs >= sinceMs && this.#members.get(s.slot)?.alive === true);
    const now = find();
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`no member started serving within ${timeoutMs} ms; output:\n${this.#describe()}`));
      }, timeoutMs);
      const check = (): void => {
        const found = find();
        if (!found) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(found);
      };
      this.#waiters.add(check);
    });
  }

  /** Kills every member (SIGKILL) and removes the temporary directory (and a PostgreSQL database it created). Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await Promise.all([...this.#members.values()].map((m) => m.process.kill("SIGKILL")));
    await this.#cleanup();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  get #readyTimeoutMs(): number {
    return this.#options.readyTimeoutMs ?? READY_TIMEOUT_MS;
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  #describe(): string {
    return [...this.#members.values()].map((m) => m.process.output.map((l) => `[member ${m.slot}] ${l}`).join("\n")).join("\n");
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The store URL for a new cluster; what it creates is undone by the pushed cleanups. */
async function freshStore(store: string, dir: string, cleanups: (() => Promise<void>)[]): Promise<string> {
  if (store === "sqlite") return `sqlite:${join(dir, "keylock.db")}`;
  if (store.startsWith("sqlite:")) return store;
  if (!/^postgres(ql)?:\/\//.test(store)) throw new Error(`store must be "sqlite", "sqlite:PATH" or a postgres:// URL, not ${JSON.stringify(store)}`);
  const { default: pg } = await import("pg");
  const name = `keylock_cluster_${randomBytes(6).toString("hex")}`;
  const admin = async (sql: string, params: unknown[] = []): Promise<void> => {
    const client = new pg.Client({ connectionString: store, connectionTimeoutMillis: 5000 });
    client.on("error", () => undefined);
    await client.connect();
    try {
      await client.query(sql, params);
    } finally {
      await client.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  cleanups.push(async () => {
    await admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [name]);
    await admin(`DROP DATABASE IF EXISTS ${name}`);
  });
  const url = new URL(store);
  url.pathname = `/${name}`;
  return url.toString();
}

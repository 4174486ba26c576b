// Members in-process (the real Member driver, election, lock server and client library) over a shared
// store wrapped so each member's view of it can be slowed or cut (test/support/faulty-store.ts):
// - heartbeats never wait behind slow slot-event writes (B40 class, issue 8);
// - store outages (DESIGN §9): the leader whose store is cut resigns, another member serves, the cut
//   member keeps running as a follower and leads again later; clients on a guarded-counter workload lose
//   no lock, see no reused token, and keep going. On SQLite, and on PostgreSQL through a TCP proxy that
//   black-holes the leader's connections (skipped with the reason when 127.0.0.1:5432 is unreachable,
//   a failure when CI=true). KEYLOCK_TEST_VERBOSE=1 prints every member line.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { connect, type LockClient, type LockHandle } from "../../src/index.js";
import { KeylockError } from "../../src/core/errors.js";
import { openStore } from "../../src/store/open.js";
import type { ClusterConfig, Store } from "../../src/store/store.js";
import { Member } from "../../src/runtime/member.js";
import type { FenceAgent, FenceTarget } from "../../src/io/fence.js";
import { FaultyStore } from "../support/faulty-store.js";
import { freePort, tempDir } from "../support/processes.js";
import { reportUnreachable, scratchDatabase } from "../support/postgres.js";
import { CuttingProxy } from "../support/proxy.js";

const HEARTBEAT_TIMEOUT_MS = 2000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(what: string, check: () => T | null | undefined | false, timeoutMs: number): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== null && value !== undefined && value !== false) return value;
    if (performance.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A port free for both TCP and UDP on 127.0.0.1 (a slot's address serves both). */
async function freeSlotPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    const { createSocket } = await import("node:dgram");
    const udp = createSocket("udp4");
    const ok = await new Promise<boolean>((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (ok) return port;
  }
}

interface Slot {
  readonly slot: number;
  readonly faulty: FaultyStore;
  member: Member | null;
  readonly logs: string[];
}

class Cluster {
  readonly fenced: FenceTarget[] = [];
  readonly addresses: string[];
  private constructor(
    readonly slots: Slot[],
    readonly config: ClusterConfig,
    private readonly options: { writeSeqBlock: bigint; storeUnreachableMs: number },
  ) {
    this.addresses = config.slots.map((s) => `127.0.0.1:${s.port}`);
  }

  /** Formats a cluster of `count` slots; `openSlotStore(slot)` gives each member its own connection to the store. */
  static async format(
    count: number,
    openSlotStore: (slot: number) => Promise<Store>,
    options: { writeSeqBlock: bigint; storeUnreachableMs: number },
  ): Promise<Cluster> {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) ports.push(await freeSlotPort());
    const config: ClusterConfig = {
      clusterId: `outage-${process.pid}-${ports[0]}`,
      slots: ports.map((port, slot) => ({ slot, host: "127.0.0.1", port })),
      secretDigest: null,
      formattedAtMs: Date.now(),
    };
    const slots: Slot[] = [];
    for (let slot = 0; slot < count; slot++) slots.push({ slot, faulty: new FaultyStore(await openSlotStore(slot)), member: null, logs: [] });
    await slots[0]!.faulty.inner.format(config);
    return new Cluster(slots, config, options);
  }

  async start(slot: number): Promise<void> {
    const s = this.slots[slot]!;
    const agent: FenceAgent = {
      name: "test",
      fence: (target) => {
        this.fenced.push(target);
        return Promise.resolve();
      },
    };
    const log = (line: string): void => {
      s.logs.push(`${Math.round(performance.now())} ${line}`);
      if (process.env.KEYLOCK_TEST_VERBOSE) console.log(`[member ${slot}] ${line}`);
    };
    s.member = await Member.start({
      store: s.faulty.store,
      slot,
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      reconnectTimeoutMs: 20_000,
      recoveryTimeoutMs: 15_000,
      fenceAgent: agent,
      log,
      announce: log,
      writeSeqBlock: this.options.writeSeqBlock,
      limits: { storeUnreachableMs: this.options.storeUnreachableMs },
    });
  }

  async startAll(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.start(s.slot)));
  }

  serving(): number | null {
    const leaders = this.slots.filter((s) => s.member?.isServing === true);
    assert.ok(leaders.length <= 1, `two members serve at once: ${leaders.map((s) => s.slot).join(", ")}`);
    return leaders[0]?.slot ?? null;
  }

  terms(): bigint[] {
    return this.slots.map((s) => s.member?.status().term ?? -1n);
  }

  dumpLogs(): string {
    return this.slots.map((s) => `--- member ${s.slot}\n${s.logs.slice(-60).join("\n")}`).join("\n");
  }

  async stop(): Promise<void> {
    for (const s of this.slots) s.faulty.restore();
    await Promise.all(this.slots.map((s) => (s.member === null ? Promise.resolve() : s.member.stop().catch(() => undefined))));
    for (const s of this.slots) await s.faulty.inner.close().catch(() => undefined);
  }
}

/** Whether a member's `ended` has resolved (it should not have, for a member that must keep running). */
async function hasEnded(member: Member): Promise<boolean> {
  return Promise.race([member.ended.then(() => true), sleep(0).then(() => false)]);
}

// ---------------------------------------------------------------------------------------------------
// Heartbeats never wait on persistence

test("member - heartbeats go out while slow ELECT and FENCE writes hold the effect queue (B40 class)", async () => {
  const dir = tempDir("slow-slot-writes");
  const path = join(dir.path, "keylock.db");
  const cluster = await Cluster.format(3, () => openStore(`sqlite:${path}`), { writeSeqBlock: 1000n, storeUnreachableMs: 15_000 });
  const SLOW_MS = HEARTBEAT_TIMEOUT_MS + 1500;
  for (const s of cluster.slots) {
    s.faulty.slow = (method, args) => (method === "writeElect" || (method === "writeSlotEvent" && args[1] === "FENCE") ? SLOW_MS : 0);
  }
  try {
    await cluster.startAll();
    const leader = await until("a member serving", () => cluster.serving() ?? false, 30_000).catch((error: unknown) => {
      console.log(cluster.dumpLogs());
      throw error;
    });
    const term = cluster.slots[leader]!.member!.status().term;
    // Each serve needed an ELECT and a FENCE write slower than the heartbeat timeout: followers must
    // have kept hearing the leader throughout, so the first leader serves in the term it won.
    assert.ok(
      !cluster.slots.some((s) => s.logs.some((l) => /no longer leader/.test(l))),
      `a leader was deposed while its slot writes were slow\n${cluster.dumpLogs()}`,
    );
    await sleep(2 * HEARTBEAT_TIMEOUT_MS + 500);
    assert.equal(cluster.serving(), leader, "the same member still serves");
    assert.deepEqual(cluster.terms(), [term, term, term], `no election since the leader serves\n${cluster.dumpLogs()}`);
    for (const s of cluster.slots) assert.equal(await hasEnded(s.member!), false);
  } finally {
    await cluster.stop();
    dir.remove();
  }
});

// ---------------------------------------------------------------------------------------------------
// Store outages: the leader's store is cut

/**
 * A guarded-counter workload: clients take `write` on a few hot keys, check nobody else holds the key,
 * read-yield-write a counter under it, and check fencing tokens: per key they never go down, equal only
 * for the same client's cached grant, and no token is ever handed to two different (client, key) grants.
 */
class Workload {
  readonly counters = new Map<string, number>();
  sections = 0;
  readonly violations: string[] = [];
  readonly errors: string[] = [];
  private readonly holders = new Map<string, string>();
  private readonly lastToken = new Map<string, { token: bigint; client: string }>();
  private readonly tokenOwner = new Map<bigint, string>();
  private running = true;
  private readonly loops: Promise<void>[] = [];

  start(client: LockClient, name: string, keys: number): void {
    this.loops.push(this.loop(client, name, keys));
  }

  /** Checks one grant's token and returns it (also used for the lock held across the outage). */
  checkToken(key: string, name: string, token: bigint): void {
    const last = this.lastToken.get(key);
    if (last !== undefined && (token < last.token || (token === last.token && last.client !== name))) {
      this.violations.push(`${name} got token ${token} on ${key} after ${last.client} had ${last.token}`);
    }
    const owner = this.tokenOwner.get(token);
    if (owner !== undefined && owner !== `${name} ${key}`) this.violations.push(`token ${token} reused: ${owner} and ${name} ${key}`);
    this.tokenOwner.set(token, `${name} ${key}`);
    this.lastToken.set(key, { token, client: name });
  }

  get maxToken(): bigint {
    let max = 0n;
    for (const token of this.tokenOwner.keys()) if (token > max) max = token;
    return max;
  }

  private async loop(client: LockClient, name: string, keys: number): Promise<void> {
    let i = 0;
    while (this.running) {
      const key = `g/${(i++ * 7 + name.length) % keys}`;
      let handle: LockHandle;
      try {
        handle = await client.acquire(key, "write", { signal: AbortSignal.timeout(60_000) });
      } catch (error) {
        if (!this.running) return;
        this.errors.push(`${name} acquire ${key}: ${(error as Error).message}`);
        await sleep(50);
        continue;
      }
      try {
        const holder = this.holders.get(key);
        if (holder !== undefined) this.violations.push(`${name} and ${holder} hold ${key} at once`);
        this.holders.set(key, name);
        this.checkToken(key, name, handle.writeSeq);
        const value = this.counters.get(key) ?? 0;
        await sleep(Math.random() < 0.5 ? 0 : 2);
        this.counters.set(key, value + 1);
        this.sections++;
        this.holders.delete(key);
      } finally {
        handle.release();
      }
      await sleep(1);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  get counted(): number {
    let total = 0;
    for (const value of this.counters.values()) total += value;
    return total;
  }
}

interface OutageScenario {
  name: string;
  /** Each member's own connection to the store (separately cuttable). */
  openSlotStore: (slot: number) => Promise<Store>;
  cut: (cluster: Cluster, slot: number) => void;
  restore: (cluster: Cluster, slot: number) => void;
}

/**
 * Rounds of: the serving member's store is cut for longer than storeUnreachableMs while clients work;
 * it resigns (its server stops, it keeps running), another member serves, clients recover their locks
 * and carry on; its store comes back and it follows. Runs until the first leader has led again.
 */
async function leaderOutageScenario(scenario: OutageScenario): Promise<void> {
  const cluster = await Cluster.format(3, scenario.openSlotStore, { writeSeqBlock: 4n, storeUnreachableMs: 1000 });
  const workload = new Workload();
  const clients: LockClient[] = [];
  const leaders: number[] = [];
  try {
    await cluster.startAll();
    leaders.push(await until("a first leader", () => cluster.serving() ?? false, 20_000));
    for (let c = 0; c < 3; c++) {
      const client = await connect({ servers: cluster.addresses, connectTimeoutMs: 30_000, name: `worker-${c}` });
      clients.push(client);
      workload.start(client, `worker-${c}`, 2);
    }
    // A lock held across every outage: it must survive each failover (recovered, not lost or re-granted).
    const keeper = await connect({ servers: cluster.addresses, connectTimeoutMs: 30_000, name: "keeper" });
    clients.push(keeper);
    const held = await keeper.acquire("held/1", "write");
    workload.checkToken("held/1", "keeper", held.writeSeq);
    const other = await connect({ servers: cluster.addresses, connectTimeoutMs: 30_000, name: "other" });
    clients.push(other);

    for (let round = 0; round < 4 && (round === 0 || leaders[leaders.length - 1] !== leaders[0]); round++) {
      const leader = leaders[leaders.length - 1]!;
      const warm = workload.sections;
      await until(`work before round ${round}`, () => workload.sections >= warm + 10, 30_000);
      const tokensBefore = workload.maxToken;
      const cutAt = performance.now();
      scenario.cut(cluster, leader);
      // The leader's server stops (its reservations fail or hang past the bound) and another member serves.
      const next = await until(`a new leader after cutting slot ${leader}'s store`, () => {
        const serving = cluster.serving();
        return serving !== null && serving !== leader ? serving : null;
      }, 30_000);
      leaders.push(next);
      console.log(`${scenario.name}: round ${round}: slot ${leader}'s store cut -> slot ${next} serves after ${Math.round(performance.now() - cutAt)} ms`);
      const cutMember = cluster.slots[leader]!.member!;
      assert.equal(await hasEnded(cutMember), false, `the cut member keeps running\n${cluster.dumpLogs()}`);
      assert.equal(cutMember.isServing, false);
      assert.ok(
        cluster.slots[leader]!.logs.some((l) => /store is unreachable|has not taken our slot's writes/.test(l)),
        `the cut leader says why it stopped\n${cluster.dumpLogs()}`,
      );
      // Service resumes on the new leader: workers make progress with tokens above all before.
      const resumed = workload.sections;
      await until(`work after round ${round}`, () => workload.sections >= resumed + 10, 30_000);
      assert.ok(workload.maxToken > tokensBefore);
      scenario.restore(cluster, leader);
      // The restored member catches up (its STOP lands) and follows the new leader's term.
      await until(`slot ${leader} following term ${cluster.slots[next]!.member!.status().term}`, () => {
        const status = cutMember.status();
        return status.role === "follower" && status.term === cluster.slots[next]!.member!.status().term && status.leader === next;
      }, 15_000);
      assert.equal(cluster.serving(), next, "the restored member did not depose the new leader");
    }
    assert.equal(leaders[leaders.length - 1], leaders[0], `the first leader led again: ${leaders.join(" -> ")}\n${cluster.dumpLogs()}`);

    // The lock held throughout is still held: another client cannot take it; after release it gets a newer token.
    const trylock = await other.acquire("held/1", "write", { nonblock: true }).then(
      () => "granted",
      (e: unknown) => (e instanceof KeylockError ? e.code : String(e)),
    );
    assert.equal(trylock, "EAGAIN", "the lock held across the outages was not lost");
    assert.equal(held.isValid, true);
    held.release();
    const taken = await other.acquire("held/1", "write");
    workload.checkToken("held/1", "other", taken.writeSeq);
    assert.ok(taken.writeSeq > held.writeSeq);
    taken.release();

    await workload.stop();
    assert.deepEqual(workload.violations, [], "safety held throughout");
    assert.equal(workload.counted, workload.sections, "the guarded counters are exact");
    assert.deepEqual(workload.errors, [], "no client call failed");
    for (const s of cluster.slots) assert.equal(await hasEnded(s.member!), false, `member ${s.slot} keeps running`);
    console.log(`${scenario.name}: ${workload.sections} guarded sections, leaders ${leaders.join(" -> ")}, last token ${workload.maxToken}`);
  } catch (error) {
    console.log(cluster.dumpLogs());
    throw error;
  } finally {
    await workload.stop();
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await cluster.stop();
  }
}

test("store outage - SQLite: the leader whose store is cut resigns, others serve, no lock lost, no token reused, it leads again later", async () => {
  const dir = tempDir("store-cut");
  const path = join(dir.path, "keylock.db");
  try {
    await leaderOutageScenario({
      name: "sqlite",
      openSlotStore: () => openStore(`sqlite:${path}`),
      cut: (cluster, slot) => cluster.slots[slot]!.faulty.cut("fail"),
      restore: (cluster, slot) => cluster.slots[slot]!.faulty.restore(),
    });
  } finally {
    dir.remove();
  }
});

const pgScratch = await scratchDatabase("outage");
if ("unreachable" in pgScratch) {
  reportUnreachable(pgScratch.unreachable, "store outage - PostgreSQL through a proxy that black-holes the leader's connections");
} else {
  after(() => pgScratch.drop());
  test("store outage - PostgreSQL: the leader's connections black-holed by a proxy; it resigns, others serve, no lock lost, no token reused", async () => {
    const proxies: CuttingProxy[] = [];
    try {
      await leaderOutageScenario({
        name: "postgres",
        openSlotStore: async (slot) => {
          const proxy = await CuttingProxy.start("127.0.0.1", 5432);
          proxies[slot] = proxy;
          return openStore(`postgres://postgres@${proxy.address}/${pgScratch.name}`);
        },
        cut: (_cluster, slot) => proxies[slot]!.block(),
        restore: (_cluster, slot) => proxies[slot]!.unblock(),
      });
    } finally {
      await Promise.all(proxies.map((p) => p.close()));
    }
  });
}

test("store outage - a lone member whose store is cut stops serving, keeps running, and serves again when it returns", async () => {
  const dir = tempDir("lone-cut");
  const path = join(dir.path, "keylock.db");
  const cluster = await Cluster.format(1, () => openStore(`sqlite:${path}`), { writeSeqBlock: 2n, storeUnreachableMs: 1000 });
  let client: LockClient | null = null;
  try {
    await cluster.startAll();
    await until("serving", () => cluster.serving() === 0, 10_000);
    client = await connect({ servers: cluster.addresses, connectTimeoutMs: 30_000 });
    const first = await client.acquire("a", "write");
    first.release();
    cluster.slots[0]!.faulty.cut("fail");
    const waiting = client.acquire("b", "write"); // needs a token beyond the block: waits, then the server stops
    waiting.catch(() => undefined);
    await until("the server stopped", () => cluster.serving() === null, 10_000);
    await sleep(1500);
    assert.equal(await hasEnded(cluster.slots[0]!.member!), false, "the member keeps running");
    cluster.slots[0]!.faulty.restore();
    await until("serving again", () => cluster.serving() === 0, 15_000);
    const granted = await waiting;
    assert.ok(granted.writeSeq > first.writeSeq, "the waiting request is granted by the next server, with a newer token");
    granted.release();
    assert.ok(cluster.slots[0]!.member!.status().term >= 2n);
  } catch (error) {
    console.log(cluster.dumpLogs());
    throw error;
  } finally {
    await client?.close().catch(() => undefined);
    await cluster.stop();
    dir.remove();
  }
});

test("store outage - stop() while the store is cut ends the member with the store's error instead of hanging", async () => {
  const dir = tempDir("stop-cut");
  const path = join(dir.path, "keylock.db");
  const cluster = await Cluster.format(1, () => openStore(`sqlite:${path}`), { writeSeqBlock: 1000n, storeUnreachableMs: 1000 });
  try {
    await cluster.startAll();
    await until("serving", () => cluster.serving() === 0, 10_000);
    cluster.slots[0]!.faulty.cut("fail");
    const started = performance.now();
    const outcome = await cluster.slots[0]!.member!.stop().then(
      () => "stopped",
      (error: Error) => error.message,
    );
    assert.match(outcome, /EIO/);
    assert.ok(performance.now() - started < 10_000);
  } finally {
    await cluster.stop();
    dir.remove();
  }
});

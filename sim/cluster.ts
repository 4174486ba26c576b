/**
 * The cluster simulator (issue 5 §7; DESIGN §8; reference §7, §8): members AND clients in one world.
 *
 * Built from the two simulators, imported rather than copied:
 * - Members run the real election machine (src/core/election.ts) and the real slot-record rules
 *   (greatestTerm, liveLeaderRecorded, leadersToFence, electOutcome), driven as runtime/member.ts drives
 *   them (effects one at a time, persists awaited), on the lock simulator's virtual clock. Each member
 *   has its own clock rate (skew 0.95..1.05), so its timeouts run shorter or longer.
 * - The leader's lock server is the lock simulator's `ServerNode` (sim/server-node.ts, the real
 *   LockServer, RecoveryTracker, FenceTracker, ReliableSession), one per slot, started by the member for
 *   its term only after `leadersToFence` named no one or every named previous leader was fenced. Fencing
 *   a previous leader is the local agent: after a delay the target member instance is killed (wherever
 *   it is, out of band), its lock server with it, so it can never grant again. The member accepts
 *   clients only after `serve` (FENCE durable); until then, and on every non-leader, a greeting is
 *   refused (modelled as a failed connect, ENOTLEADER) and the client tries the next member.
 * - Clients are the lock simulator's `ClientNode`s (the real ClientLocks and ReliableSession) with the
 *   one change a multi-member client needs: `connect` picks the member to try (in turn, moving on after
 *   a failed connect or an ENOTLEADER refusal). The store (client records, write-seq high-water mark) is
 *   shared by every member (one database).
 * - The lock simulator's Workload, Faults (connection resets, client crashes, lock-server failures
 *   while the member lives (B39), fence agent failures) and Checkers (safety, write-seq across servers,
 *   coherence, liveness at quiet) run unchanged; `world.server` is the one lock server running.
 *
 * Cluster faults (faulty phase only): member crashes and restarts (new rid, terms from the store),
 * election datagram loss and delay, partitions between members (symmetric and one-way), THE isolated
 * old leader (cut off from every other member, still reachable by clients: it keeps serving until the
 * new leader's fence kills it), and client↔member cuts (the client's sockets to that member reset).
 *
 * Checkers added here (ClusterViolation):
 * - one-leader-per-term: with ≥3 slots at most one instance becomes leader per term; with any number at
 *   most one instance starts a server per term.
 * - one-serving (as seen by grants). The precise rule: when any lock server DECIDES a grant (the moment
 *   the real LockServer emits it and the checkers' downSent sees it), (a) no other member's lock server
 *   is running (starting or up), and (b) its term is ≥ the term of every grant decided before. A grant
 *   decided by a server before it was fenced may still be DELIVERED after a newer server's grants (bytes
 *   in flight, late delivery at an abrupt end): that is counted (`lateOldTermGrants`), not a violation,
 *   because the fence (kill) happened before the newer server started, so the decision order is right.
 * - write-seq strictly increasing across failovers, no incompatible holders, coherence: the lock
 *   simulator's Checkers, whose write-seq high-water spans every server of the run.
 * - liveness after healing: within the phase bound a leader serves, every running member follows it
 *   in its term, and then the lock simulator's quiet checks (recovery over, every live client connected
 *   and recovered, every waiter granted or failed for a stated reason, table and store consistent).
 *
 * Guarantees: a run is a pure function of (seed, options); nothing reads a real clock or Math.random.
 * Relies on: world.ts / server-node.ts / client-node.ts public surface (ServerNode.start may be called by
 * its own restart timer: the subclass ignores starts the member did not ask for).
 */
import {
  Election,
  electOutcome,
  greatestTerm,
  leadersToFence,
  liveLeaderRecorded,
  type ElectionEffect,
  type QuorumMessage,
  type RecordedSlot,
  type SlotEventKind,
} from "../src/core/election.js";
import type { Rid } from "../src/core/lock-messages.js";
import { Checkers, Violation, type Coverage, type Notes } from "./legacy-cluster/checkers.js";
import type { ClientConfig } from "./legacy-cluster/client-node.js";
import { Faults } from "./legacy-cluster/faults.js";
import type { DownPacket, Socket } from "./legacy-cluster/network.js";
import { Prng } from "./prng.js";
import { describeFailure, drawConfig, type SimConfig } from "./legacy-cluster/run.js";
import { SimStore } from "./legacy-cluster/server-node.js";
import { ClientNode, MachineThrew, ServerNode, World, type DownMessage, type WorldConfig } from "./legacy-cluster/world.js";
import { Workload, hotKeys, shrinkThenFarewell } from "./legacy-cluster/workload.js";

export const CLUSTER_MUTATIONS = ["none", "skip-fence"] as const;
export type ClusterMutation = (typeof CLUSTER_MUTATIONS)[number];

export interface ClusterOptions {
  /** Members (slots): drawn from {1, 2, 3, 3, 3, 5} when absent. */
  readonly members?: number;
  readonly clients?: number;
  /** `skip-fence`: a new leader starts its lock server without fencing previous leaders. */
  readonly mutation?: ClusterMutation;
  /** Force the isolated-old-leader fault (and a faulty seed). */
  readonly isolateLeader?: boolean;
  readonly keepTrace?: boolean;
  readonly phaseEventsMax?: number;
}

export type ClusterCheckerName = "one-leader-per-term" | "one-serving" | "cluster-liveness";

export class ClusterViolation extends Error {
  constructor(
    readonly checker: ClusterCheckerName,
    readonly detail: string,
  ) {
    super(`${checker}: ${detail}`);
  }
}

export interface ClusterConfig {
  readonly slots: readonly number[];
  readonly heartbeatTimeoutMs: number;
  readonly lossRate: number;
  readonly delayMaxMs: number;
  readonly memberCrashes: number;
  readonly memberPartitions: number;
  readonly isolations: number;
  readonly clientCuts: number;
  readonly memberFenceFailRate: number;
  readonly lock: SimConfig;
}

export interface ClusterRunResult {
  readonly seed: number;
  readonly config: ClusterConfig;
  readonly violation?: { checker: string; detail: string; atUs: number; phase: string; tail: string[] };
  readonly events: number;
  readonly virtualUs: number;
  readonly traceHash: string;
  readonly trace?: readonly string[];
  readonly cluster: Record<string, number>;
  readonly coverage: Coverage;
  readonly notes: Notes;
}

const PHASE_EVENTS_MAX = 3_000_000;

export function drawClusterConfig(seed: number, options: ClusterOptions = {}): ClusterConfig {
  const p = new Prng(seed).fork("cluster");
  const count = options.members ?? p.pick([1, 2, 3, 3, 3, 5]);
  const base = drawConfig(seed, { clients: options.clients });
  const faulty = options.isolateLeader === true || base.faults.enabled;
  const windowUs = p.pick([3_000_000, 6_000_000, 10_000_000]);
  const lock: SimConfig = {
    ...base,
    // A failover takes seconds (heartbeat timeout), so the workload thinks and holds longer to span it.
    workload: {
      ...base.workload,
      thinkMaxUs: p.pick([20_000, 200_000, 600_000]),
      holdMaxUs: p.pick([2_000, 50_000, 200_000]),
    },
    server: {
      ...base.server,
      // Clients try members in turn (100 ms apart): recovery waits long enough for a tour of 5 members.
      recoveryTimeoutUs: p.pick([1_000_000, 2_000_000]),
      reconnectTimeoutUs: p.pick([300_000, 1_000_000, 4_000_000]),
    },
    faults: {
      ...base.faults,
      enabled: faulty,
      windowUs,
      serverCrashes: faulty ? p.pick([0, 0, 1]) : 0,
      resets: faulty ? p.pick([0, 1, 3]) : 0,
    },
  };
  return {
    slots: Array.from({ length: count }, (_, i) => i),
    heartbeatTimeoutMs: p.pick([2000, 2000, 3000]),
    lossRate: p.pick([0, 0.01, 0.05]),
    delayMaxMs: p.pick([1, 2, 5]),
    memberCrashes: faulty ? p.pick([0, 1, 1, 2]) : 0,
    memberPartitions: faulty ? p.pick([0, 1, 2]) : 0,
    isolations: options.isolateLeader === true ? 2 : faulty ? p.pick([0, 1, 1]) : 0,
    clientCuts: faulty ? p.pick([0, 1, 3]) : 0,
    memberFenceFailRate: p.pick([0, 0, 0.2]),
    lock,
  };
}

// ---------------------------------------------------------------------------------------------------
// Nodes: the lock simulator's server and client, adapted to many members

/** A member's lock server: the lock simulator's ServerNode, started only for the term the member asks. */
class MemberServer extends ServerNode {
  #want: bigint | null = null;
  readonly #world: ClusterWorld;

  constructor(
    world: ClusterWorld,
    readonly slot: number,
    store: SimStore,
    prng: Prng,
  ) {
    super(world, world.lockConfig.server, prng);
    this.#world = world;
    Object.defineProperty(this, "store", { value: store });
  }

  startForTerm(term: bigint): void {
    this.#want = term;
    this.start();
  }

  /** ServerNode restarts itself after a crash or stop: in a cluster only the member starts servers. */
  override start(): void {
    const term = this.#want;
    this.#want = null;
    if (term === null || this.status !== "down") return;
    this.store.lastTerm = term - 1n; // ServerNode takes lastTerm + 1: the election's term
    // Incarnations must be unique across the members' servers (the checkers tell servers apart by them).
    this.incarnation = (this.#world.incarnations += 1_000_000);
    super.start();
  }
}

/** A client that tries the members in turn (connection.ts with several addresses). */
class ClusterClient extends ClientNode {
  cursor = 0;
  readonly #cw: ClusterWorld;

  constructor(world: ClusterWorld, index: number, rid: Rid, config: ClientConfig, prng: Prng) {
    super(world, index, rid, config, prng);
    this.#cw = world;
    this.cursor = index;
  }

  override connect(): void {
    const cw = this.#cw;
    const idle = this.alive && this.socket === null && this.connecting === null;
    const slot = cw.slots[this.cursor % cw.slots.length]!;
    if (idle) cw.connectTarget = cw.targetFor(this, slot);
    try {
      super.connect();
    } finally {
      cw.connectTarget = null;
    }
    if (this.connecting !== null && idle) cw.socketSlot.set(this.connecting, slot);
    else if (idle) this.cursor++;
  }

  override receive(socket: Socket, packet: DownPacket): void {
    if (packet.kind === "greeting-refused" && packet.code === "ENOTLEADER" && socket === this.connecting) this.cursor++;
    super.receive(socket, packet);
  }
}

class ClusterWorld extends World {
  readonly slots: readonly number[];
  readonly nodes = new Map<number, MemberServer>();
  readonly dummy: MemberServer;
  readonly socketSlot = new Map<Socket, number>();
  /** Client↔member cuts: "client>slot". */
  readonly cuts = new Set<string>();
  connectTarget: ServerNode | null = null;
  lastStarted: ServerNode | null = null;
  incarnations = 0;
  /** Set by the cluster: whether slot's member serves (FENCE durable, `serve` carried out). */
  serving: (slot: number) => boolean = () => false;
  onNodeUp: () => void = () => {};

  constructor(
    config: WorldConfig,
    readonly lockConfig: SimConfig,
    slots: readonly number[],
    prng: Prng,
    makeCheckers: (world: World) => Checkers,
  ) {
    super(config, prng, makeCheckers);
    this.slots = slots;
    const clientConfig: ClientConfig = {
      idleLockLimit: config.idleLockLimit,
      callback: config.callback,
      recoverBatchMax: config.recoverBatchMax,
    };
    for (let i = 0; i < this.clients.length; i++) {
      const old = this.clients[i]!;
      this.clients[i] = new ClusterClient(this, i, old.rid, clientConfig, prng.fork(`cluster-callbacks.${i}`));
    }
    const store = new SimStore();
    for (const slot of slots) this.nodes.set(slot, new MemberServer(this, slot, store, prng.fork(`server.${slot}`)));
    this.dummy = new MemberServer(this, -1, new SimStore(), prng.fork("dummy"));
    Object.defineProperty(this, "server", { get: () => this.currentServer() });
    this.network.deliverUp = (socket, packet) => {
      const node = this.nodeOf(socket);
      if (packet.kind === "greeting") node.receiveGreeting(socket, packet.greeting);
      else node.receiveMessage(socket, packet.message);
    };
    this.network.noticeClosed = (socket, side) => {
      if (side === "client") this.clients[socket.client]!.socketClosed(socket);
      else this.nodeOf(socket).socketClosed(socket);
    };
  }

  nodeOf(socket: Socket): ServerNode {
    const slot = this.socketSlot.get(socket);
    return slot === undefined ? this.dummy : this.nodes.get(slot)!;
  }

  running(): MemberServer[] {
    return [...this.nodes.values()].filter((n) => n.status !== "down");
  }

  /** The one lock server running (what the lock checkers and faults call `world.server`). */
  currentServer(): ServerNode {
    if (this.connectTarget !== null) return this.connectTarget;
    return this.running()[0] ?? this.lastStarted ?? this.dummy;
  }

  targetFor(client: ClientNode, slot: number): ServerNode {
    const node = this.nodes.get(slot)!;
    if (this.cuts.has(`${client.index}>${slot}`)) {
      this.trace.add(`${client.name} -> m${slot}: unreachable (cut)`);
      return this.dummy;
    }
    if (!node.up || !this.serving(slot)) {
      this.trace.add(`${client.name} -> m${slot}: ENOTLEADER (not serving)`);
      return this.dummy;
    }
    return node;
  }

  override serverUp(): void {
    super.serverUp();
    this.onNodeUp();
  }

  /** Cuts client↔member both ways: their sockets end abruptly, new connects fail until `uncut`. */
  cut(client: ClientNode, slot: number, lateChance: number, prng: Prng): void {
    this.cuts.add(`${client.index}>${slot}`);
    this.trace.add(`fault: ${client.name} cut off from m${slot}`);
    for (const socket of [client.socket, client.connecting]) {
      if (socket === null || this.socketSlot.get(socket) !== slot) continue;
      this.network.close(socket, {
        graceful: false,
        lateChance,
        clientNoticeUs: prng.int(0, 20_000),
        serverNoticeUs: prng.int(0, 20_000),
      });
    }
  }
}

/** The lock checkers plus the cluster's grant rule (see the module contract). */
class ClusterCheckers extends Checkers {
  world: ClusterWorld | null = null;
  maxGrantTerm = 0n;
  maxDeliveredTerm = 0n;
  lateOldTermGrants = 0;
  grantsByTerm = new Map<bigint, number>();
  /** Grants decided by a leader cut off from every other member (the interesting case: must be fenced). */
  isolatedGrants = 0;
  isolatedSlot: () => number | null = () => null;

  override downSent(client: number, message: DownMessage): void {
    const world = this.world;
    if (message.kind === "grant" && world !== null) {
      const running = world.running();
      if (running.length > 1) {
        throw new ClusterViolation(
          "one-serving",
          `a grant to c${client} on ${message.grant.key} is decided while ${running.length} lock servers run: ` +
            running.map((n) => `m${n.slot} term ${n.term} (${n.status})`).join(", "),
        );
      }
      const term = running[0]?.term ?? 0n;
      if (term < this.maxGrantTerm) {
        throw new ClusterViolation(
          "one-serving",
          `the term ${term} server decides a grant to c${client} after a term ${this.maxGrantTerm} server decided grants`,
        );
      }
      this.maxGrantTerm = term;
      if (running[0] !== undefined && running[0].slot === this.isolatedSlot()) this.isolatedGrants++;
      this.grantsByTerm.set(term, (this.grantsByTerm.get(term) ?? 0) + 1);
    }
    super.downSent(client, message);
  }

  override downDelivered(client: number, message: DownMessage): void {
    const world = this.world;
    if (message.kind === "grant" && world !== null) {
      const term = world.clients[client]!.serverTerm;
      if (term < this.maxDeliveredTerm) this.lateOldTermGrants++;
      else this.maxDeliveredTerm = term;
    }
    super.downDelivered(client, message);
  }
}

// ---------------------------------------------------------------------------------------------------
// Members: the real election machine, driven like runtime/member.ts

interface ServerTask {
  readonly term: bigint;
  phase: "fencing" | "starting" | "up" | "serving" | "done";
}

interface Instance {
  readonly slot: number;
  readonly incarnation: number;
  readonly rid: bigint;
  readonly rate: number;
  machine: Election | null;
  alive: boolean;
  queue: ElectionEffect[];
  waiting: boolean;
  timerGen: number;
  task: ServerTask | null;
  inFlight: Set<() => void>;
}

class Cluster {
  readonly current = new Map<number, Instance>();
  readonly store = new Map<number, Map<SlotEventKind, { term: bigint; rid: bigint }>>();
  /** Election-side events still queued on the clock (so "quiet" can ignore heartbeats). */
  pending = 0;
  healed = false;
  readonly blocked = new Set<string>();
  readonly stats: Record<string, number> = {
    elections: 0,
    serves: 0,
    memberFences: 0,
    memberFenceFailures: 0,
    memberCrashes: 0,
    isolations: 0,
    isolatedLeaderGrants: 0,
    partitions: 0,
    clientCuts: 0,
    stopsOnDemotion: 0,
    serverFailuresSeen: 0,
    lateOldTermGrants: 0,
    maxTerm: 0,
  };
  readonly #leaderOfTerm = new Map<bigint, bigint>();
  readonly #serverOfTerm = new Map<bigint, bigint>();
  #incarnations = 0;
  /** The slot isolated from the other members right now (for coverage of its grants). */
  isolated: number | null = null;

  constructor(
    readonly world: ClusterWorld,
    readonly config: ClusterConfig,
    readonly prng: Prng,
    readonly mutation: ClusterMutation,
  ) {
    for (const slot of config.slots) this.store.set(slot, new Map());
    world.serving = (slot) => this.current.get(slot)?.task?.phase === "serving";
    world.onNodeUp = () => this.#nodesUp();
  }

  log(line: string): void {
    this.world.trace.add(line);
  }

  who(inst: Instance): string {
    return `m${inst.slot}#${inst.incarnation}`;
  }

  schedule(delayUs: number, run: () => void): void {
    this.pending++;
    this.world.clock.schedule(Math.max(0, delayUs), () => {
      this.pending--;
      run();
    });
  }

  // --- store ---------------------------------------------------------------------------------------

  #storeOp<T>(inst: Instance, apply: () => T, done: (result: T) => void, write: boolean): void {
    let settled = false;
    const onCrash = (): void => {
      if (!settled && write && this.prng.chance(0.5)) apply();
      settled = true;
    };
    inst.inFlight.add(onCrash);
    const spike = !this.healed && this.prng.chance(0.02) ? this.prng.int(50_000, 400_000) : 0;
    this.schedule(this.prng.int(500, 4_000) + spike, () => {
      if (settled) return;
      settled = true;
      inst.inFlight.delete(onCrash);
      const result = apply();
      if (inst.alive) done(result);
    });
  }

  readSlots(): RecordedSlot[] {
    return [...this.store.entries()].map(([slot, events]) => ({
      slot,
      events: Object.fromEntries([...events.entries()].map(([k, e]) => [k, { term: e.term, rid: e.rid }])),
    }));
  }

  // --- members -------------------------------------------------------------------------------------

  startInstance(slot: number): void {
    const inst: Instance = {
      slot,
      incarnation: ++this.#incarnations,
      rid: this.prng.u64NonZero(),
      rate: 0.95 + this.prng.float() * 0.1,
      machine: null,
      alive: true,
      queue: [],
      waiting: false,
      timerGen: 0,
      task: null,
      inFlight: new Set(),
    };
    this.current.set(slot, inst);
    this.log(`${this.who(inst)} starts (rid ${inst.rid.toString(16)}, clock rate ${inst.rate.toFixed(3)})`);
    this.#storeOp(
      inst,
      () => this.readSlots(),
      (records) => {
        const random = this.prng.fork(`member ${inst.incarnation}`);
        inst.machine = new Election({
          slot,
          slots: this.config.slots,
          heartbeatTimeoutMs: this.config.heartbeatTimeoutMs,
          startTerm: greatestTerm(records),
          liveLeaderRecorded: liveLeaderRecorded(records, slot),
          random: () => random.float(),
        });
        this.feed(inst, (now) => inst.machine!.begin(now));
      },
      false,
    );
  }

  #local(inst: Instance): number {
    return (this.world.clock.nowUs / 1000) * inst.rate;
  }

  feed(inst: Instance, step: (nowMs: number) => ElectionEffect[]): void {
    if (!inst.alive || inst.machine === null) return;
    let effects: ElectionEffect[];
    try {
      effects = step(this.#local(inst));
    } catch (error) {
      throw new MachineThrew(`election of ${this.who(inst)}`, error);
    }
    inst.queue.push(...effects);
    this.#arm(inst);
    this.#pump(inst);
  }

  #arm(inst: Instance): void {
    const gen = ++inst.timerGen;
    const deadline = inst.machine?.deadlineMs ?? null;
    if (deadline === null) return;
    let t = Math.max(this.world.clock.nowUs, Math.ceil((deadline * 1000) / inst.rate));
    while ((t / 1000) * inst.rate < deadline) t++;
    this.schedule(t - this.world.clock.nowUs, () => {
      if (inst.alive && inst.timerGen === gen) this.feed(inst, (now) => inst.machine!.tick(now));
    });
  }

  #pump(inst: Instance): void {
    while (inst.alive && !inst.waiting && inst.queue.length > 0) this.#carryOut(inst, inst.queue.shift()!);
  }

  #resume(inst: Instance): void {
    inst.waiting = false;
    this.#pump(inst);
  }

  #carryOut(inst: Instance, effect: ElectionEffect): void {
    switch (effect.type) {
      case "persist":
        inst.waiting = true;
        this.#storeOp(
          inst,
          () => this.store.get(inst.slot)!.set(effect.kind, { term: effect.term, rid: inst.rid }),
          () => this.#resume(inst),
          true,
        );
        return;
      case "persist-elect": {
        inst.waiting = true;
        const term = effect.term;
        this.#storeOp(
          inst,
          () => {
            for (const events of this.store.values()) for (const e of events.values()) if (e.term > term) return false;
            this.store.get(inst.slot)!.set("ELECT", { term, rid: inst.rid });
            return true;
          },
          (written) =>
            this.#storeOp(
              inst,
              () => this.readSlots(),
              (records) => {
                const outcome = electOutcome(written, records, { slot: inst.slot, term, rid: inst.rid });
                this.log(`${this.who(inst)} ELECT ${term}: ${outcome.ok ? "ok" : outcome.reason}`);
                this.feed(inst, (now) => inst.machine!.electWritten(term, outcome, now));
                this.#resume(inst);
              },
              false,
            ),
          true,
        );
        return;
      }
      case "send":
        this.#send(inst, effect.to, effect.message);
        return;
      case "broadcast":
        for (const slot of this.config.slots) if (slot !== inst.slot) this.#send(inst, slot, effect.message);
        return;
      case "start-server":
        this.#startServer(inst, effect.term);
        return;
      case "serve":
        this.#serve(inst, effect.term);
        return;
      case "stop-server":
        this.#stopServer(inst, effect.term);
        return;
      case "status": {
        const s = effect.status;
        if (s.role === "candidate") this.stats.elections!++;
        if (s.role === "leader") this.#checkLeader(inst, s.term);
        if (Number(s.term) > this.stats.maxTerm!) this.stats.maxTerm = Number(s.term);
        this.log(`${this.who(inst)} ${s.role} term ${s.term} leader ${s.leader ?? "-"} server ${s.serverStatus}`);
        return;
      }
      case "log":
        this.log(`${this.who(inst)} log: ${effect.message}`);
        return;
      case "exit":
        this.crash(inst, "exited");
        return;
    }
  }

  #send(from: Instance, to: number, message: QuorumMessage): void {
    if (this.blocked.has(`${from.slot}>${to}`)) return;
    if (!this.healed && this.prng.chance(this.config.lossRate)) return;
    const delayUs = this.prng.int(0, this.config.delayMaxMs * 1000);
    this.schedule(delayUs, () => {
      const target = this.current.get(to);
      if (target === undefined || !target.alive || target.machine === null) return;
      this.feed(target, (now) => target.machine!.receive(message, now));
    });
  }

  // --- the lock server of a term (runtime/member.ts startServer / serve / stopServer) ---------------

  #startServer(inst: Instance, term: bigint): void {
    const task: ServerTask = { term, phase: "fencing" };
    inst.task = task;
    const prior = this.#serverOfTerm.get(term);
    if (prior !== undefined && prior !== inst.rid) {
      throw new ClusterViolation("one-leader-per-term", `${this.who(inst)} starts a server for term ${term}, already started by another instance`);
    }
    this.#serverOfTerm.set(term, inst.rid);
    const down = (why: string): void => {
      if (inst.task !== task || task.phase === "done") return;
      task.phase = "done";
      inst.task = null;
      this.log(`${this.who(inst)} server ${term} DOWN (${why})`);
      this.feed(inst, (now) => inst.machine!.serverStatus("DOWN", now));
    };
    const begin = (): void => {
      if (inst.task !== task || !inst.alive) return;
      task.phase = "starting";
      const node = this.world.nodes.get(inst.slot)!;
      if (node.status !== "down") node.crash(0, 0); // a leftover of this slot (cannot happen: its instance died)
      this.log(`${this.who(inst)} starts its lock server for term ${term}`);
      this.world.lastStarted = node;
      node.startForTerm(term);
    };
    this.#storeOp(
      inst,
      () => this.readSlots(),
      (records) => {
        if (inst.task !== task) return;
        let targets = leadersToFence(records, { slot: inst.slot, term, rid: inst.rid }).filter((t) => !t.ownSlot);
        if (this.mutation === "skip-fence") {
          if (targets.length > 0) this.log(`${this.who(inst)} mutation: skip fencing ${targets.length} previous leader(s)`);
          targets = [];
        }
        if (targets.length === 0) {
          begin();
          return;
        }
        let pending = targets.length;
        let failed = false;
        for (const target of targets) {
          this.log(`${this.who(inst)} fences leader rid ${target.rid.toString(16)} (slot ${target.slot}, ${target.event} ${target.term})`);
          this.schedule(this.prng.int(1_000, 50_000), () => {
            if (!inst.alive) return;
            if (!this.healed && this.prng.chance(this.config.memberFenceFailRate)) {
              failed = true;
              this.stats.memberFenceFailures!++;
              this.log(`fence agent: fencing rid ${target.rid.toString(16)} failed`);
            } else this.#fenceKill(inst, target.rid);
            if (--pending > 0) return;
            if (failed) down("fencing a previous leader failed");
            else begin();
          });
        }
      },
      false,
    );
  }

  /** The local fence agent: the instance with `rid` is killed, its lock server with it. */
  #fenceKill(by: Instance, rid: bigint): void {
    for (const inst of this.current.values()) {
      if (inst.rid !== rid || !inst.alive) continue;
      this.stats.memberFences!++;
      this.log(`fence agent: ${this.who(by)} kills ${this.who(inst)}`);
      this.crash(inst, "fenced");
      return;
    }
    this.log(`fence agent: rid ${rid.toString(16)} already gone`);
  }

  /** A lock server reported up (ServerNode → world.serverUp): tell its member (UP). */
  #nodesUp(): void {
    for (const inst of this.current.values()) {
      const task = inst.task;
      if (!inst.alive || task === null || task.phase !== "starting") continue;
      const node = this.world.nodes.get(inst.slot)!;
      if (!node.up || node.term !== task.term) continue;
      task.phase = "up";
      this.feed(inst, (now) => inst.machine!.serverStatus("UP", now));
    }
  }

  #serve(inst: Instance, term: bigint): void {
    if (inst.task?.term !== term || inst.task.phase !== "up") return;
    inst.task.phase = "serving";
    this.stats.serves!++;
    this.log(`${this.who(inst)} SERVES term ${term}`);
  }

  #stopServer(inst: Instance, term: bigint): void {
    const task = inst.task;
    if (task === null || task.term !== term || task.phase === "done") return;
    this.stats.stopsOnDemotion!++;
    const node = this.world.nodes.get(inst.slot)!;
    if (node.status !== "down" && node.term === term) {
      this.log(`${this.who(inst)} stops its lock server (term ${term})`);
      node.crash(0, 0);
    }
    task.phase = "done";
    this.schedule(this.prng.int(1_000, 5_000), () => {
      if (!inst.alive || inst.task !== task) return;
      inst.task = null;
      this.feed(inst, (now) => inst.machine!.serverStatus("DOWN", now));
    });
  }

  /** After every event: a lock server that stopped by itself (fence error, crash fault: B39) is DOWN. */
  afterEvent(): void {
    for (const inst of this.current.values()) {
      const task = inst.task;
      if (!inst.alive || task === null || task.phase === "fencing" || task.phase === "done") continue;
      const node = this.world.nodes.get(inst.slot)!;
      if (node.status === "down" || node.term !== task.term) {
        this.stats.serverFailuresSeen!++;
        task.phase = "done";
        inst.task = null;
        this.log(`${this.who(inst)} its lock server (term ${task.term}) went down by itself`);
        this.feed(inst, (now) => inst.machine!.serverStatus("DOWN", now));
      }
    }
  }

  #checkLeader(inst: Instance, term: bigint): void {
    if (this.config.slots.length < 3) return;
    const prior = this.#leaderOfTerm.get(term);
    if (prior !== undefined && prior !== inst.rid) {
      throw new ClusterViolation("one-leader-per-term", `${this.who(inst)} leads term ${term}, which another instance already leads`);
    }
    this.#leaderOfTerm.set(term, inst.rid);
  }

  // --- faults --------------------------------------------------------------------------------------

  crash(inst: Instance, why: string): void {
    if (!inst.alive) return;
    inst.alive = false;
    for (const onCrash of [...inst.inFlight]) onCrash();
    inst.inFlight.clear();
    inst.task = null;
    this.log(`${this.who(inst)} dies (${why})`);
    const node = this.world.nodes.get(inst.slot)!;
    const faults = this.config.lock.faults;
    if (node.status !== "down") node.crash(faults.detectMaxUs, faults.lateChance);
    if (why !== "fenced") this.stats.memberCrashes!++;
    this.schedule(this.prng.int(200_000, 3_000_000), () => {
      if (this.current.get(inst.slot) === inst) this.startInstance(inst.slot);
    });
  }

  leader(): Instance | null {
    for (const inst of this.current.values()) if (inst.alive && inst.task?.phase === "serving") return inst;
    return null;
  }

  scheduleFaults(): void {
    const cfg = this.config;
    const windowUs = cfg.lock.faults.windowUs;
    const at = (): number => this.prng.int(0, windowUs);
    const slots = cfg.slots;
    for (let i = 0; i < cfg.memberCrashes; i++) {
      this.schedule(at(), () => {
        if (this.healed) return;
        const inst = this.current.get(this.prng.pick(slots));
        if (inst !== undefined) this.crash(inst, "crash fault");
      });
    }
    for (let i = 0; i < cfg.isolations; i++) {
      // The important one: the serving leader loses the other members but keeps its clients.
      this.schedule(i === 0 && cfg.isolations > 1 ? this.prng.int(300_000, 800_000) : at(), () => {
        const leader = this.leader();
        if (this.healed || leader === null || slots.length < 2) return;
        const forced = i === 0 && cfg.isolations > 1;
        const oneWay = !forced && this.prng.chance(0.3);
        const hbUs = cfg.heartbeatTimeoutMs * 1000;
        const forUs = forced ? this.prng.int(3 * hbUs, 4 * hbUs) : this.prng.int(hbUs, 3 * hbUs);
        this.stats.isolations!++;
        this.isolated = leader.slot;
        this.log(`fault: ${this.who(leader)} (serving) cut off from every member${oneWay ? " (its sends only)" : ""} for ${forUs}us; clients still reach it`);
        for (const other of slots) {
          if (other === leader.slot) continue;
          this.blocked.add(`${leader.slot}>${other}`);
          if (!oneWay) this.blocked.add(`${other}>${leader.slot}`);
        }
        this.schedule(forUs, () => this.#unblock());
      });
    }
    for (let i = 0; i < cfg.memberPartitions; i++) {
      this.schedule(at(), () => {
        if (this.healed || slots.length < 2) return;
        const a = this.prng.pick(slots);
        const b = this.prng.pick(slots.filter((s) => s !== a));
        const oneWay = this.prng.chance(0.5);
        const forUs = this.prng.int(500_000, 5_000_000);
        this.stats.partitions!++;
        this.log(`fault: m${a} -/-> m${b}${oneWay ? " (one way)" : " (both ways)"} for ${forUs}us`);
        this.blocked.add(`${a}>${b}`);
        if (!oneWay) this.blocked.add(`${b}>${a}`);
        this.schedule(forUs, () => this.#unblock());
      });
    }
    for (let i = 0; i < cfg.clientCuts; i++) {
      this.schedule(at(), () => {
        if (this.healed) return;
        const client = this.prng.pick(this.world.clients);
        const leader = this.leader();
        const slot = leader !== null && this.prng.chance(0.7) ? leader.slot : this.prng.pick(slots);
        this.stats.clientCuts!++;
        this.world.cut(client, slot, cfg.lock.faults.lateChance, this.prng);
        this.schedule(this.prng.int(100_000, 3_000_000), () => this.world.cuts.delete(`${client.index}>${slot}`));
      });
    }
    this.schedule(windowUs, () => this.heal());
  }

  #unblock(): void {
    this.blocked.clear();
    this.isolated = null;
    this.log("fault over: members reach each other again");
  }

  heal(): void {
    this.healed = true;
    this.blocked.clear();
    this.world.cuts.clear();
    this.isolated = null;
    this.log("--- cluster healed: no more member faults ---");
  }

  converged(): boolean {
    const leader = this.leader();
    if (leader === null || !this.world.nodes.get(leader.slot)!.recoveryDone) return false;
    for (const slot of this.config.slots) {
      const inst = this.current.get(slot);
      if (inst === undefined || !inst.alive || inst.machine === null) return false;
      if (inst.machine.currentTerm !== leader.task!.term) return false;
      if (inst !== leader && inst.machine.leader !== leader.slot) return false;
    }
    return true;
  }

  describe(): string {
    return [...this.current.values()]
      .map((i) => `${this.who(i)} ${i.alive ? `${i.machine?.currentRole ?? "-"} t${i.machine?.currentTerm ?? "?"} server ${i.task?.phase ?? "none"}` : "dead"}`)
      .join("; ");
  }
}

// ---------------------------------------------------------------------------------------------------
// One run

export function runClusterSeed(seed: number, options: ClusterOptions = {}): ClusterRunResult {
  const config = drawClusterConfig(seed, options);
  const lock = config.lock;
  const prng = new Prng(seed);
  const keys = hotKeys(lock.hotKeys);
  let checkers: ClusterCheckers | null = null;
  const world = new ClusterWorld(
    {
      clients: lock.clients,
      idleLockLimit: lock.idleLockLimit,
      network: lock.network,
      callback: lock.callback,
      server: lock.server,
      recoverBatchMax: lock.recoverBatchMax,
      mutation: "none",
      keepTrace: options.keepTrace ?? false,
    },
    lock,
    config.slots,
    prng.fork("world"),
    (w) => (checkers = new ClusterCheckers(w, keys, { checkRecoveryReports: true })),
  );
  const ck = checkers as unknown as ClusterCheckers;
  ck.world = world;
  const cluster = new Cluster(world, config, prng.fork("cluster"), options.mutation ?? "none");
  ck.isolatedSlot = () => cluster.isolated;
  world.trace.add(
    `cluster: ${config.slots.length} member(s), heartbeat timeout ${config.heartbeatTimeoutMs} ms, ${lock.clients} clients, ` +
      `faults ${lock.faults.enabled ? `for ${lock.faults.windowUs}us` : "none"}${options.mutation && options.mutation !== "none" ? `, mutation ${options.mutation}` : ""}`,
  );
  const phaseEventsMax = options.phaseEventsMax ?? PHASE_EVENTS_MAX;
  let events = 0;
  let phase = "setup";
  const step = (): void => {
    if (!world.clock.step()) throw new ClusterViolation("cluster-liveness", `${phase}: the event queue ran dry`);
    events++;
    cluster.afterEvent();
    world.checkers.afterEvent();
  };
  /** Until the lock side is quiet (only election events left), the faults are over and the cluster converged. */
  const runUntilQuiet = (): void => {
    let phaseEvents = 0;
    for (;;) {
      if (cluster.healed && world.healed && world.clock.pending === cluster.pending && cluster.converged()) return;
      step();
      if (++phaseEvents > phaseEventsMax) {
        throw new ClusterViolation(
          "cluster-liveness",
          `${phase}: not quiet after ${phaseEventsMax} events (${world.clock.pending - cluster.pending} lock events pending; ${cluster.describe()})`,
        );
      }
    }
  };

  let violation: ClusterRunResult["violation"];
  try {
    phase = "active";
    for (const slot of config.slots) cluster.startInstance(slot);
    const workload = new Workload(world, keys, lock.workload, prng.fork("workload"));
    workload.start();
    if (lock.faults.enabled) cluster.scheduleFaults();
    else cluster.heal();
    new Faults(world, lock.faults, prng.fork("faults")).start();
    runUntilQuiet();
    world.checkers.atQuiet(phase);
    if (workload.running !== 0) throw new Violation("liveness", `${phase}: ${workload.running} tasks never finished`);

    shrinkThenFarewell(world, keys, lock.hotKeys + lock.idleLockLimit + 4, runUntilQuiet, (next) => (phase = next));
  } catch (error) {
    const { checker, detail }: { checker: string; detail: string } =
      error instanceof ClusterViolation ? { checker: error.checker, detail: error.detail } : describeFailure(error);
    violation = { checker, detail, atUs: world.clock.nowUs, phase, tail: world.trace.tail() };
  }
  cluster.stats.lateOldTermGrants = ck.lateOldTermGrants;
  cluster.stats.isolatedLeaderGrants = ck.isolatedGrants;
  cluster.stats.termsThatGranted = ck.grantsByTerm.size;
  return {
    seed,
    config,
    violation,
    events,
    virtualUs: world.clock.nowUs,
    traceHash: world.trace.hash,
    trace: options.keepTrace === true ? world.trace.all : undefined,
    cluster: cluster.stats,
    coverage: world.checkers.coverage,
    notes: world.checkers.notes,
  };
}

export function formatClusterViolation(result: ClusterRunResult, options: ClusterOptions = {}): string {
  const v = result.violation;
  if (v === undefined) return `seed ${result.seed}: ok`;
  const replay = `KEYLOCK_SEED=${result.seed}${options.mutation && options.mutation !== "none" ? ` (mutation ${options.mutation})` : ""}`;
  return (
    `cluster sim: seed ${result.seed} (${result.config.slots.length} members) violates ${v.checker} in ${v.phase} at ${v.atUs}us: ${v.detail}\n` +
    `  replay: ${replay} node --import tsx --test test/sim/cluster.test.ts\n` +
    v.tail.map((l) => `    ${l}`).join("\n")
  );
}

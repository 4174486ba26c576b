/**
 * The election simulator (DESIGN §8 "at most one leader per term"; issue 10 "one driver"): the REAL
 * member driver (runtime/member.ts `Member`, which runs core/election.ts and starts the real
 * LockServerRuntime for each term it leads) in the shared deterministic world (sim-world.ts): one event
 * queue, one PRNG, simulated datagrams (the real quorum codec, source rule and tags of io/udp.ts run on
 * them), MemoryStore on one MemoryDatabase with latency and outages, and a fence agent that kills
 * simulated processes. Nothing here mirrors the driver; `MemberCluster` is shared with the cluster
 * simulator (cluster.ts), which adds real LockClients.
 *
 * Faults (the faulty phase): member crashes and restarts (a new process and rid; terms from the store,
 * B42), graceful exits, stalls (timers and datagrams wait; datagrams first, B41), clock skew
 * (0.95..1.05), lock-server failures while serving (B39), fence failures, store latency spikes and
 * outages, datagram loss, duplication and delay (reordering), partitions: symmetric splits, one member
 * isolated (`isolateLeader`: the leader), one-way blocks. Hostile datagrams (both phases, from their own
 * stream): about five a second, a forged message claiming a configured slot from that slot's address
 * (a stranger past the source rule), tagged with the cluster key when there is one, with a term the
 * machine must drop (2^64-1, above TERM_MAX, or more than TERM_JUMP_MAX above the target's term); or, as
 * a stranger, an acceptable term from another address or tagged with another key (io/udp.ts drops it).
 * The healed phase: no faults, every slot running; the cluster must converge within a bound.
 * Model limits: a stall holds a member's timers and datagrams, not its TCP connections; during a store
 * outage calls fail EIO and none hangs forever (a real store driver times out; a member whose store call
 * never returns stays wedged, which no election can fix).
 *
 * Checkers (sim/violation.ts `Violation`; the run stops at the first):
 * - one-leader-per-term: with three or more slots, at most one instance becomes leader in a term; with
 *   any number, at most one instance starts a server for a term.
 * - one-vote-per-term: a slot (across its instances) votes for at most one candidate per term.
 * - one-serving: when a member starts serving, no other live member serves.
 * - serve-terms-increase: every server that serves has a term above every one that served before (B22).
 * - slot-terms-increase: in each slot, TERM and ELECT records only ever increase; none is above TERM_MAX.
 * - forged-term-dropped: a forged datagram changes no member's term (and one past the source rule and
 *   tags is counted as dropped by the machine).
 * - member-failed: a member ends with an error other than the store's (a machine assertion, a bug).
 * - liveness: after healing, within `convergeBoundMs`, one member serves and every member follows it in
 *   its term, stably for a heartbeat timeout.
 * Mutations (wrappers around real parts, each caught):
 * - `skip-fence`: the fence agent reports success without killing (a new leader serves while its
 *   predecessor may still serve) — one-serving;
 * - `unconditional-elect`: a MemoryStore whose ELECT is a plain write (never refuses a lower term). The
 *   read-back (electOutcome) only catches same-term ties, so a slow ELECT (up to 4 s, a fault of every
 *   run) landing after another member stood for a higher term and served makes a stale leader serve —
 *   one-serving or serve-terms-increase.
 * - `unawaited-fence` (a driver bug in runtime/member.ts, the forgotten-await class no mirror could show):
 *   the member starts fencing its predecessors but does not wait for it before starting its server, so
 *   with a slow fence agent (up to 300 ms here) it serves while the old leader still does — one-serving.
 *
 * Guarantees: a run is a pure function of (seed, options) (sim-world.ts determinism).
 * Relies on: runtime/member.ts taking its world (MemberWorld), store and fence agent as options.
 */
import { QUORUM_MESSAGE_TYPES, type ElectionEffect, type ElectionStatus } from "../src/core/election.js";
import { SLOTS_MAX, TERM_JUMP_MAX, TERM_MAX } from "../src/core/limits.js";
import { deriveKey, secretDigest } from "../src/io/keys.js";
import { clusterHash, encodeQuorumMessage } from "../src/io/udp.js";
import { Member, type MemberWorld } from "../src/runtime/member.js";
import { MemoryStore } from "../src/store/memory.js";
import { StoreError, type ClusterConfig, type SlotEventInput, type SlotEventKind, type Store } from "../src/store/store.js";
import { Prng, fnv1a } from "./prng.js";
import { SimDatagrams, SimFenceAgent, SimStore, SimWorld, type SimProcess, type StoreFaults } from "./sim-world.js";
import { Violation, formatViolationReport, type ViolationReport } from "./violation.js";

export const ELECTION_MUTATIONS = ["none", "skip-fence", "unconditional-elect", "unawaited-fence"] as const;
export type ElectionMutation = (typeof ELECTION_MUTATIONS)[number];

export function isElectionMutation(value: string): value is ElectionMutation {
  return (ELECTION_MUTATIONS as readonly string[]).includes(value);
}

export type ElectionCheckerName =
  | "one-leader-per-term"
  | "one-vote-per-term"
  | "one-serving"
  | "serve-terms-increase"
  | "slot-terms-increase"
  | "forged-term-dropped"
  | "member-failed"
  | "liveness";

export interface ElectionSimOptions {
  /** Number of configured slots (1..SLOTS_MAX); drawn from the seed when absent. */
  readonly slots?: number;
  readonly mutation?: ElectionMutation;
  readonly keepTrace?: boolean;
}

export interface MemberFaultConfig {
  readonly slots: readonly number[];
  readonly heartbeatTimeoutMs: number;
  readonly faultyMs: number;
  readonly convergeBoundMs: number;
  readonly secret: boolean;
  readonly lossRate: number;
  readonly duplicateRate: number;
  readonly delayMaxMs: number;
  readonly crashPerSecond: number;
  readonly exitPerSecond: number;
  readonly stallPerSecond: number;
  readonly serverFailPerSecond: number;
  readonly fenceFailRate: number;
  readonly partitionPerSecond: number;
  readonly storeSlowPerSecond: number;
  readonly storeOutagePerSecond: number;
  /** Cut the serving leader off from every other member (clients still reach it), per second. */
  readonly isolateLeaderPerSecond: number;
}

export interface ElectionSimConfig extends MemberFaultConfig {
  readonly mutation: ElectionMutation;
}

/** A violation as every simulator reports it (sim/violation.ts), with the phase it happened in. */
export interface ElectionViolation extends ViolationReport<ElectionCheckerName> {
  readonly phase: "faulty" | "healed";
}

export interface ElectionRunResult {
  readonly seed: number;
  readonly config: ElectionSimConfig;
  readonly violation: ElectionViolation | undefined;
  readonly events: number;
  readonly virtualMs: number;
  readonly traceHash: string;
  readonly trace: readonly string[] | undefined;
  /** How often each interesting path was taken (a quiet run is only evidence if these happen). */
  readonly coverage: Readonly<Record<string, number>>;
  /** Virtual time from healing until the cluster converged. */
  readonly convergedAfterMs: number | undefined;
}

export function drawMemberFaults(prng: Prng, slotCount: number | undefined): MemberFaultConfig {
  const count = slotCount ?? Number(prng.weighted({ "1": 1, "2": 2, "3": 5, "4": 1, "5": 2, "7": 1 }));
  if (!Number.isInteger(count) || count < 1 || count > SLOTS_MAX) throw new RangeError(`slots must be 1..${SLOTS_MAX}, got ${count}`);
  const all = Array.from({ length: SLOTS_MAX }, (_, i) => i);
  const slots: number[] = [];
  while (slots.length < count) slots.push(all.splice(prng.int(0, all.length - 1), 1)[0]!);
  slots.sort((a, b) => a - b);
  const heartbeatTimeoutMs = prng.pick([2000, 2000, 3000]);
  return {
    slots,
    heartbeatTimeoutMs,
    faultyMs: prng.int(5_000, 20_000),
    // Worst case after healing: a stalled timer firing once, a few split votes, fencing, store latency.
    convergeBoundMs: Math.ceil(heartbeatTimeoutMs * 1.1) * 2 + 10_000,
    secret: prng.chance(0.5),
    lossRate: prng.pick([0, 0.01, 0.05, 0.2]),
    duplicateRate: prng.pick([0, 0.01]),
    delayMaxMs: prng.pick([2, 5, 20]),
    crashPerSecond: prng.pick([0, 0.05, 0.2]),
    exitPerSecond: prng.pick([0, 0.05, 0.1]),
    stallPerSecond: prng.pick([0, 0.05, 0.1]),
    serverFailPerSecond: prng.pick([0, 0.05]),
    fenceFailRate: prng.pick([0, 0.1, 0.3]),
    partitionPerSecond: prng.pick([0, 0.2, 0.5]),
    storeSlowPerSecond: prng.pick([0, 0.05]),
    storeOutagePerSecond: prng.pick([0, 0, 0.03]),
    isolateLeaderPerSecond: prng.pick([0, 0.1]),
  };
}

/** Slot `slot`'s address in a simulated cluster (quorum datagrams and the service port share it). */
export function slotHost(slot: number): string {
  return `10.0.${slot >> 8}.${(slot & 0xff) + 1}`;
}
export const SLOT_PORT = 7000;
export const SIM_SECRET = "simulated cluster secret";

interface Instance {
  readonly slot: number;
  readonly name: string;
  readonly process: SimProcess;
  readonly rid: bigint;
  member: Member | null;
  leaving: boolean;
  lastRole: ElectionStatus["role"] | null;
}

/**
 * Real members in a SimWorld under faults, with the election checkers (see the module contract). The
 * cluster simulator adds clients to it; `onServe` lets it follow which member serves.
 */
export class MemberCluster {
  readonly cluster: ClusterConfig;
  readonly store: SimStore;
  readonly storeFaults: { -readonly [K in keyof StoreFaults]: StoreFaults[K] } = { latencyMinUs: 500, latencyMaxUs: 4_000, hangChance: 0 };
  readonly fenceAgent: SimFenceAgent;
  readonly datagrams: SimDatagrams;
  readonly current = new Map<number, Instance>();
  phase: "faulty" | "healed" = "faulty";
  /** Events run so far (by `runFaulty` and `converge`). */
  events = 0;
  violation: Violation<ElectionCheckerName> | null = null;
  /** When the violation happened, and the trace's last lines then. */
  violationAtUs = 0;
  violationTrace: string[] = [];
  readonly coverage: Record<string, number> = {
    elections: 0,
    leaderDemoted: 0,
    resignations: 0,
    fenceFailures: 0,
    crashes: 0,
    exits: 0,
    restarts: 0,
    stalls: 0,
    serverFailures: 0,
    electRefused: 0,
    partitions: 0,
    serves: 0,
    forgedDropped: 0,
    strangersDropped: 0,
  };
  readonly #prng: Prng;
  readonly #hostile: Prng;
  readonly #key: Buffer | null;
  readonly #hash: bigint;
  #incarnations = 0;
  // Checker state.
  readonly #leaderOfTerm = new Map<bigint, string>();
  readonly #serverOfTerm = new Map<bigint, string>();
  readonly #voteOf = new Map<string, number>();
  readonly #lastSlotTerm = new Map<string, { term: bigint; rid: bigint }>();
  #lastServedTerm = 0n;

  constructor(
    readonly world: SimWorld,
    readonly config: MemberFaultConfig,
    readonly mutation: ElectionMutation | "none",
    prng: Prng,
    readonly hooks: { onServe?: (member: Member, term: bigint) => void } = {},
  ) {
    this.#prng = prng;
    this.#hostile = new Prng(fnv1a("hostile", world.seed));
    this.cluster = {
      clusterId: `sim-${world.seed}`,
      slots: config.slots.map((slot) => ({ slot, host: slotHost(slot), port: SLOT_PORT })),
      secretDigest: config.secret ? secretDigest(SIM_SECRET) : null,
      formattedAtMs: 0,
    };
    this.#key = config.secret ? deriveKey(SIM_SECRET, this.cluster.clusterId, "keylock quorum v1") : null;
    this.#hash = clusterHash(this.cluster.clusterId);
    this.store = new SimStore(world, this.storeFaults);
    this.fenceAgent = new SimFenceAgent(world, prng.fork("fence"));
    if (mutation === "skip-fence") this.fenceAgent.kills = false;
    this.fenceAgent.failChance = config.fenceFailRate;
    this.fenceAgent.delayMaxUs = 300_000;
    const fence = this.fenceAgent.fence.bind(this.fenceAgent);
    this.fenceAgent.fence = (target) =>
      fence(target).catch((error: unknown) => {
        this.coverage.fenceFailures!++;
        throw error;
      });
    this.datagrams = new SimDatagrams(world, prng.fork("datagrams"));
    this.datagrams.faults = {
      lossRate: config.lossRate,
      duplicateRate: config.duplicateRate,
      delayMinUs: 0,
      delayMaxUs: config.delayMaxMs * 1000,
      spikeChance: 0.01,
      spikeMaxUs: 300_000,
    };
  }

  async format(): Promise<void> {
    await new MemoryStore(this.world.database).format(this.cluster);
  }

  violate(checker: ElectionCheckerName, detail: string): void {
    if (this.violation !== null) return;
    this.violation = new Violation(checker, detail);
    this.world.trace.add(`VIOLATION ${checker}: ${detail}`);
    this.violationAtUs = this.world.nowUs;
    this.violationTrace = this.world.trace.tail();
    this.world.stopped = checker;
  }

  // --- members ---------------------------------------------------------------------------------------

  /** Starts a new instance (process, rid) in `slot`, as a supervisor would. */
  startInstance(slot: number): void {
    const name = `s${slot}#${++this.#incarnations}`;
    const process = this.world.spawn(name);
    if (this.phase === "faulty") process.rate = 0.95 + this.#prng.float() * 0.1;
    const rid = this.#prng.u64NonZero();
    const inst: Instance = { slot, name, process, rid, member: null, leaving: false, lastRole: null };
    this.current.set(slot, inst);
    this.fenceAgent.owners.set(rid, process);
    process.onKill(() => {
      if (this.current.get(slot) === inst) this.scheduleRestart(slot);
    });
    this.world.trace.add(`${name} starts (rid ${rid.toString(16)})`);
    const world: MemberWorld = {
      clock: process.clock,
      random: process.random,
      newRid: () => rid,
      ownProcess: () => null,
      datagrams: this.datagrams.for(process),
      listen: (host, port, onConnection) => {
        const address = `${host}:${port}`;
        const unlisten = this.world.network.listen(process, address, onConnection);
        return Promise.resolve({ host, port, address, refusedConnections: 0, tlsClientErrors: 0, close: () => Promise.resolve(unlisten()) });
      },
    };
    Member.start({
      store: this.store.for(process, (store) => this.#wrapStore(store, process)),
      slot,
      heartbeatTimeoutMs: this.config.heartbeatTimeoutMs,
      reconnectTimeoutMs: 2_000,
      recoveryTimeoutMs: 3_000,
      fenceAgent: this.fenceAgent,
      log: (line) => this.world.trace.add(`${name}: ${line}`),
      announce: (line) => this.world.trace.add(`${name}: ${line}`),
      limits: { storeUnreachableMs: 4_000, invalidationTimeoutMs: 5_000 },
      ...(this.config.secret ? { secret: SIM_SECRET } : {}),
      world,
      onEffect: (effect) => this.#onEffect(inst, effect),
    }).then(
      (member) => {
        if (!process.alive) return;
        inst.member = member;
        void member.ended.then((error) => this.#ended(inst, error));
      },
      (error: Error) => {
        // A supervisor restarts a member that failed to start (e.g. the store was out).
        this.world.trace.add(`${name} failed to start: ${error.message}`);
        if (!(error instanceof StoreError)) this.violate("member-failed", `${name} failed to start: ${error.message}`);
        process.kill("start failed");
      },
    );
  }

  #ended(inst: Instance, error: Error | null): void {
    if (!inst.process.alive) return;
    if (error !== null && !(error instanceof StoreError)) this.violate("member-failed", `${inst.name} ended: ${error.message}`);
    this.world.trace.add(`${inst.name} ended${error === null ? "" : `: ${error.message}`}`);
    if (error === null) this.coverage.exits!++;
    inst.process.kill(error === null ? "exited" : "ended with an error");
  }

  scheduleRestart(slot: number): void {
    const delayMs = this.phase === "faulty" ? this.#prng.int(200, 3000) : this.#prng.int(10, 50);
    this.world.at(delayMs * 1000, () => {
      const inst = this.current.get(slot);
      if (inst !== undefined && inst.process.alive) return;
      this.coverage.restarts!++;
      this.startInstance(slot);
    });
  }

  /** The instances alive now with a started member. */
  live(): (Instance & { member: Member })[] {
    return [...this.current.values()].filter((i): i is Instance & { member: Member } => i.member !== null && i.process.alive);
  }

  /** The live member serving now, if any. */
  serving(): (Instance & { member: Member }) | undefined {
    return this.live().find((i) => i.member.isServing);
  }

  // --- checkers --------------------------------------------------------------------------------------

  #wrapStore(store: Store, process: SimProcess): Store {
    const check = (slot: number, kind: SlotEventKind, event: SlotEventInput): void => {
      const term = event.term;
      if (term > TERM_MAX) this.violate("slot-terms-increase", `slot ${slot} recorded ${kind} ${term}, above TERM_MAX`);
      if (kind !== "TERM" && kind !== "ELECT") return;
      const key = `${slot}/${kind}`;
      const last = this.#lastSlotTerm.get(key);
      // A retried write (its first outcome unknown) may repeat the same event: same term, same instance.
      if (last !== undefined && (term < last.term || (term === last.term && event.rid !== last.rid))) {
        this.violate("slot-terms-increase", `slot ${slot} recorded ${kind} ${term} after ${kind} ${last.term}`);
      }
      this.#lastSlotTerm.set(key, { term, rid: event.rid });
    };
    const writeSlotEvent = store.writeSlotEvent.bind(store);
    const writeElect = store.writeElect.bind(store);
    store.writeSlotEvent = async (slot: number, kind: SlotEventKind, event: SlotEventInput) => {
      await writeSlotEvent(slot, kind, event);
      check(slot, kind, event);
    };
    // A slow ELECT (faulty phase): it lands up to 4 s after it was sent, when others may have stood since.
    const slowElect = async (): Promise<void> => {
      if (this.phase === "faulty" && this.#prng.chance(0.5)) await process.sleep(this.#prng.int(0, 4000));
    };
    store.writeElect =
      this.mutation === "unconditional-elect"
        ? async (slot: number, event: SlotEventInput) => {
            await slowElect();
            await writeSlotEvent(slot, "ELECT", event);
            check(slot, "ELECT", event);
            return true;
          }
        : async (slot: number, event: SlotEventInput) => {
            await slowElect();
            const written = await writeElect(slot, event);
            if (written) check(slot, "ELECT", event);
            else this.coverage.electRefused!++;
            return written;
          };
    return store;
  }

  #onEffect(inst: Instance, effect: ElectionEffect): void {
    switch (effect.type) {
      case "send":
        if (effect.message.type === "VOTE") {
          const key = `${inst.slot}/${effect.message.term}`;
          const previous = this.#voteOf.get(key);
          if (previous !== undefined && previous !== effect.to) {
            this.violate("one-vote-per-term", `slot ${inst.slot} (${inst.name}) votes for slot ${effect.to} in term ${effect.message.term} after voting for slot ${previous}`);
          }
          this.#voteOf.set(key, effect.to);
        }
        return;
      case "broadcast":
        if (effect.message.type === "RESIGNATION") this.coverage.resignations!++;
        return;
      case "status": {
        const s = effect.status;
        if (s.role === "candidate" && inst.lastRole !== "candidate") this.coverage.elections!++;
        if (inst.lastRole === "leader" && s.role !== "leader") this.coverage.leaderDemoted!++;
        inst.lastRole = s.role;
        if (s.role === "leader" && this.config.slots.length >= 3) {
          // With one or two slots one vote is a majority: same-term leaders are settled at ELECT.
          const other = this.#leaderOfTerm.get(s.term);
          if (other !== undefined && other !== inst.name) this.violate("one-leader-per-term", `${inst.name} leads term ${s.term}, already led by ${other}`);
          this.#leaderOfTerm.set(s.term, inst.name);
        }
        return;
      }
      case "start-server": {
        const other = this.#serverOfTerm.get(effect.term);
        if (other !== undefined && other !== inst.name) {
          this.violate("one-leader-per-term", `${inst.name} starts a server for term ${effect.term}, already started by ${other}`);
        }
        this.#serverOfTerm.set(effect.term, inst.name);
        return;
      }
      case "serve":
        // The member carries the effect out right after this: check once it did.
        void Promise.resolve().then(() => this.#onServe(inst, effect.term));
        return;
      default:
        return;
    }
  }

  #onServe(inst: Instance, term: bigint): void {
    const member = inst.member;
    if (member === null || !member.isServing || !inst.process.alive) return;
    this.coverage.serves!++;
    this.world.trace.add(`${inst.name} SERVES term ${term}`);
    for (const other of this.live()) {
      if (other !== inst && other.member.isServing) this.violate("one-serving", `${inst.name} serves term ${term} while ${other.name} serves`);
    }
    if (term <= this.#lastServedTerm) this.violate("serve-terms-increase", `${inst.name} serves term ${term} after term ${this.#lastServedTerm} served`);
    this.#lastServedTerm = term;
    this.hooks.onServe?.(member, term);
  }

  /** Converged: one member serves, and every slot's member follows it in its term. */
  converged(): boolean {
    const leader = this.serving();
    if (leader === undefined) return false;
    const term = leader.member.status().term;
    for (const slot of this.config.slots) {
      const inst = this.current.get(slot);
      if (inst?.member == null || !inst.process.alive) return false;
      const status = inst.member.status();
      if (status.term !== term || status.leader !== leader.slot) return false;
    }
    return true;
  }

  describe(): string {
    return this.config.slots
      .map((slot) => {
        const inst = this.current.get(slot);
        if (inst?.member == null || !inst.process.alive) return `${slot}:down`;
        const s = inst.member.status();
        return `${slot}:${s.role}/t${s.term}/l${s.leader ?? "-"}/${inst.member.isServing ? "serving" : s.serverStatus}`;
      })
      .join(" ");
  }

  // --- faults ----------------------------------------------------------------------------------------

  crash(inst: Instance, why: string): void {
    if (!inst.process.alive) return;
    this.coverage.crashes!++;
    inst.process.kill(why);
  }

  /** One fault decision every 100 ms of the faulty phase. */
  faultTick(): void {
    if (this.phase !== "faulty") return;
    const prng = this.#prng;
    const c = this.config;
    const p = (perSecond: number): boolean => prng.chance(perSecond / 10);
    for (const inst of this.live()) {
      if (inst.process.stalledUntilUs > this.world.nowUs || inst.leaving) continue;
      if (p(c.crashPerSecond)) this.crash(inst, "crash fault");
      else if (p(c.exitPerSecond)) {
        inst.leaving = true;
        this.world.trace.add(`${inst.name} leaves gracefully`);
        inst.member.stop().catch((error: Error) => this.world.trace.add(`${inst.name} stop: ${error.message}`));
      } else if (p(c.stallPerSecond)) {
        inst.process.stalledUntilUs = this.world.nowUs + prng.int(100, 4000) * 1000;
        this.coverage.stalls!++;
        this.world.trace.add(`${inst.name} stalls until ${inst.process.stalledUntilUs}us`);
      } else if (inst.member.isServing && p(c.serverFailPerSecond)) {
        const server = inst.member.server as unknown as { fatal?: (reason: string) => void } | null;
        if (typeof server?.fatal === "function") {
          this.coverage.serverFailures!++;
          server.fatal.call(server, "simulated lock-server failure");
        }
      }
    }
    if (p(c.partitionPerSecond)) this.partition();
    if (p(c.isolateLeaderPerSecond)) this.isolateLeader();
    if (p(c.storeSlowPerSecond)) {
      this.storeFaults.latencyMaxUs = prng.int(20, 100) * 1000;
      this.world.trace.add(`store slow (up to ${this.storeFaults.latencyMaxUs}us)`);
      this.world.at(prng.int(500, 3000) * 1000, () => (this.storeFaults.latencyMaxUs = 4_000));
    }
    if (p(c.storeOutagePerSecond)) {
      const forUs = prng.int(100, 6_000) * 1000;
      this.store.outageUntilUs = this.world.nowUs + forUs;
      this.world.trace.add(`store outage for ${forUs}us`);
    }
    this.world.at(100_000, () => this.faultTick());
  }

  partition(): void {
    const prng = this.#prng;
    const slots = this.config.slots;
    this.datagrams.heal();
    const kind = prng.weighted({ split: 3, isolate: 2, oneWay: 2, heal: 3 });
    if (kind === "split" && slots.length > 1) {
      const side = new Set(slots.filter(() => prng.chance(0.5)));
      for (const a of slots) for (const b of slots) if (side.has(a) !== side.has(b)) this.datagrams.block(slotHost(a), slotHost(b));
    } else if (kind === "isolate") {
      this.#cutOff(prng.pick(slots));
    } else if (kind === "oneWay" && slots.length > 1) {
      const from = prng.pick(slots);
      for (const b of slots) if (b !== from && prng.chance(0.7)) this.datagrams.block(slotHost(from), slotHost(b));
    }
    if (this.datagrams.blocked.length > 0) this.coverage.partitions!++;
    this.world.trace.add(`network: ${kind} [${this.datagrams.blocked.join(" ")}]`);
  }

  /** The serving leader is cut off from every other member (clients still reach it). */
  isolateLeader(): void {
    const leader = this.serving();
    if (leader === undefined || this.config.slots.length < 2) return;
    this.datagrams.heal();
    this.#cutOff(leader.slot);
    this.coverage.partitions!++;
    this.world.trace.add(`network: the leader ${leader.name} is isolated from the members`);
  }

  #cutOff(lone: number): void {
    for (const b of this.config.slots) {
      if (b === lone) continue;
      this.datagrams.block(slotHost(lone), slotHost(b));
      this.datagrams.block(slotHost(b), slotHost(lone));
    }
  }

  /** One hostile decision every 100 ms, in both phases (see the contract). */
  forgeTick(): void {
    const h = this.#hostile;
    if (h.chance(0.5) && this.config.slots.length > 1) {
      const targets = this.live().filter((i) => i.process.stalledUntilUs <= this.world.nowUs && !i.leaving);
      if (targets.length > 0) {
        const target = h.pick(targets);
        const from = h.pick(this.config.slots.filter((s) => s !== target.slot));
        const type = h.pick(QUORUM_MESSAGE_TYPES);
        const before = target.member.status();
        if (h.chance(0.3)) {
          this.#strangerDatagram(target, from, type, before);
          this.world.at(100_000, () => this.forgeTick());
          return;
        }
        const kind = h.int(0, 2);
        const term =
          kind === 0 ? (1n << 64n) - 1n : kind === 1 ? TERM_MAX + 1n + BigInt(h.u32()) : before.term + TERM_JUMP_MAX + 1n + BigInt(h.int(0, 1000));
        const dropped = (s: ElectionStatus): number => Object.values(s.dropped).reduce((a, b) => a + b, 0);
        {
          this.world.trace.add(`forged ${type} term ${term} claiming slot ${from} to ${target.name}`);
          const bytes = encodeQuorumMessage({ type, term, from }, this.#hash, this.#key);
          const delivered = this.datagrams.deliver({ address: slotHost(from), port: SLOT_PORT }, { address: slotHost(target.slot), port: SLOT_PORT }, bytes);
          const after = target.member.status();
          if (delivered && (after.term !== before.term || dropped(after) !== dropped(before) + 1)) {
            this.violate(
              "forged-term-dropped",
              `${target.name} took a forged ${type} term ${term}: term ${before.term} -> ${after.term}, dropped ${dropped(before)} -> ${dropped(after)}`,
            );
          }
          if (delivered) this.coverage.forgedDropped!++;
        }
      }
    }
    this.world.at(100_000, () => this.forgeTick());
  }

  /**
   * A datagram with an acceptable term (ours + 1) that must still be dropped by io/udp.ts: sent from a
   * stranger's address (the source rule), or, in a cluster with a secret, tagged with another key.
   */
  #strangerDatagram(target: Instance & { member: Member }, from: number, type: (typeof QUORUM_MESSAGE_TYPES)[number], before: ElectionStatus): void {
    const h = this.#hostile;
    const term = before.term + 1n;
    const wrongKey = this.#key !== null && h.chance(0.5);
    const bytes = encodeQuorumMessage({ type, term, from }, this.#hash, wrongKey ? deriveKey("another secret", this.cluster.clusterId, "keylock quorum v1") : this.#key);
    const source = wrongKey ? { address: slotHost(from), port: SLOT_PORT } : { address: "10.66.0.1", port: h.pick([SLOT_PORT, 40_000]) };
    this.world.trace.add(`stranger ${type} term ${term} claiming slot ${from} from ${source.address}:${source.port}${wrongKey ? " (wrong key)" : ""} to ${target.name}`);
    if (!this.datagrams.deliver(source, { address: slotHost(target.slot), port: SLOT_PORT }, bytes)) return;
    const after = target.member.status();
    if (after.term !== before.term) {
      this.violate("forged-term-dropped", `${target.name} took a stranger's ${type} term ${term}${wrongKey ? " (wrong key)" : ""}: term ${before.term} -> ${after.term}`);
    }
    this.coverage.strangersDropped!++;
  }

  /** The faulty phase ends: no more faults; every slot runs again. */
  heal(): void {
    this.phase = "healed";
    this.datagrams.heal();
    this.datagrams.faults = { lossRate: 0, duplicateRate: 0, delayMinUs: 0, delayMaxUs: 2_000, spikeChance: 0, spikeMaxUs: 0 };
    this.storeFaults.latencyMaxUs = 4_000;
    this.store.outageUntilUs = 0;
    this.fenceAgent.failChance = 0;
    this.world.trace.add("--- healed: no more faults ---");
    for (const slot of this.config.slots) {
      const inst = this.current.get(slot);
      if (inst === undefined || !inst.process.alive) this.scheduleRestart(slot);
      else inst.process.stalledUntilUs = Math.min(inst.process.stalledUntilUs, this.world.nowUs);
    }
  }

  /**
   * Runs the healed phase until the cluster has been converged (same serving leader and term) for
   * `windowMs`, or the bound passes; returns the virtual ms from healing to the stable convergence.
   */
  async converge(extra?: () => boolean): Promise<number | undefined> {
    const healedUs = this.world.nowUs;
    const deadlineUs = healedUs + this.config.convergeBoundMs * 1000;
    const windowUs = (Math.ceil(this.config.heartbeatTimeoutMs * 1.1) + 1000) * 1000;
    let since: { atUs: number; term: bigint } | null = null;
    let convergedAfterMs: number | undefined;
    const check = (): void => {
      if (this.world.stopped !== null) return;
      const ok = this.converged() && (extra?.() ?? true);
      const term = ok ? (this.serving()?.member.status().term ?? null) : null;
      if (term === null) since = null;
      else if (since === null || since.term !== term) since = { atUs: this.world.nowUs, term };
      else if (this.world.nowUs - since.atUs >= windowUs) {
        convergedAfterMs = (since.atUs - healedUs) / 1000;
        this.world.stopped = "converged";
        return;
      }
      this.world.at(50_000, check);
    };
    this.world.at(0, check);
    this.events += await this.world.run(deadlineUs + windowUs);
    if (this.world.stopped === "converged") this.world.stopped = null;
    if (convergedAfterMs === undefined && this.violation === null) {
      if (this.world.stopped !== null) this.violate("liveness", this.world.stopped);
      else this.violate("liveness", `no stable leader within ${this.config.convergeBoundMs} ms of healing: ${this.describe()}`);
    }
    return convergedAfterMs;
  }

  /** Ends the run: every process dies, so nothing of it runs on. */
  end(): void {
    for (const p of this.world.processes) if (p.alive) p.kill("end of run");
  }
}

// ---------------------------------------------------------------------------------------------------
// One run

export async function runElectionSeed(seed: number, options: ElectionSimOptions = {}): Promise<ElectionRunResult> {
  const world = new SimWorld(seed, { keepTrace: options.keepTrace === true });
  const prng = world.prng.fork("election");
  const config: ElectionSimConfig = { ...drawMemberFaults(prng.fork("config"), options.slots), mutation: options.mutation ?? "none" };
  const members = new MemberCluster(world, config, config.mutation, prng.fork("members"));
  world.trace.add(`config ${JSON.stringify(config)}`);
  let convergedAfterMs: number | undefined;
  const uncaught = (error: unknown): void => members.violate("member-failed", `thrown into the event loop: ${String((error as Error)?.stack ?? error)}`);
  process.on("uncaughtException", uncaught);
  process.on("unhandledRejection", uncaught);
  const undo = config.mutation === "unawaited-fence" ? fenceWithoutWaiting() : (): void => undefined;
  try {
    await members.format();
    for (const slot of config.slots) world.at(prng.int(0, 200) * 1000, () => members.startInstance(slot));
    world.at(0, () => members.faultTick());
    world.at(50_000, () => members.forgeTick());
    members.events += await world.run(config.faultyMs * 1000);
    if (world.stopped === null) {
      members.heal();
      convergedAfterMs = await members.converge();
    } else if (members.violation === null) members.violate("liveness", world.stopped);
  } catch (error) {
    members.violate("member-failed", `the run threw: ${String((error as Error)?.stack ?? error)}`);
  } finally {
    process.off("uncaughtException", uncaught);
    process.off("unhandledRejection", uncaught);
    undo();
    members.end();
  }
  const v = members.violation;
  return {
    seed,
    config,
    violation:
      v === null
        ? undefined
        : { seed, checker: v.checker, detail: v.detail, atUs: members.violationAtUs, phase: members.phase, trace: members.violationTrace },
    events: members.events,
    virtualMs: world.nowUs / 1000,
    traceHash: world.trace.hash,
    trace: world.trace.all,
    coverage: { ...members.coverage, fenced: members.fenceAgent.fenced },
    convergedAfterMs,
  };
}

/** The `unawaited-fence` mutation: Member's fencePreviousLeaders resolves at once, the fencing runs on. Returns the undo. */
export function fenceWithoutWaiting(): () => void {
  const proto = Member.prototype as unknown as { fencePreviousLeaders: (term: bigint) => Promise<void> };
  const original = proto.fencePreviousLeaders;
  proto.fencePreviousLeaders = function (this: unknown, term: bigint): Promise<void> {
    original.call(this, term).catch(() => undefined);
    return Promise.resolve();
  };
  return () => (proto.fencePreviousLeaders = original);
}

export function electionReplayCommand(seed: number, options: ElectionSimOptions = {}): string {
  const extra = [
    options.slots === undefined ? "" : ` --slots ${options.slots}`,
    options.mutation === undefined || options.mutation === "none" ? "" : ` --mutation ${options.mutation}`,
  ].join("");
  return `KEYLOCK_SEED=${seed} node --import tsx --test test/sim/election.test.ts   (or: npx tsx sim/election-main.ts --seed ${seed}${extra} --verbose)`;
}

export function formatElectionViolation(v: ElectionViolation, options: ElectionSimOptions = {}): string {
  return formatViolationReport(v, electionReplayCommand(v.seed, options)).replace(/^violation of (\S+) at ([^ ]+ ms)/, `violation of $1 at $2 (${v.phase})`);
}

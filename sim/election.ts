/**
 * The election simulator (DESIGN §8 "at most one leader per term"; STYLE "TigerBeetle and FoundationDB"):
 * members built from the real election machine (src/core/election.ts) and the real slot-record rules
 * (greatestTerm, liveLeaderRecorded, leadersToFence, electOutcome), driven like runtime/member.ts drives
 * them, in a world with a virtual clock, a lossy network, a store and faults, all drawn from one seed.
 * Separate from the lock simulator (world.ts, run.ts), which it shares nothing with but the Prng.
 *
 * The world:
 * - Clock: integer virtual milliseconds; one event queue ordered by (time, class, insertion), where at
 *   equal times store completions come first, then message deliveries, then timers — so a member always
 *   handles the messages that arrived before its timeout check (B41). Each member's clock runs at its
 *   own rate (skew 0.95..1.05), so its timeouts are longer or shorter in virtual time.
 * - Network: datagrams between slots with random delay (occasional spikes, so reordering), loss,
 *   duplication, and partitions: symmetric splits, one member isolated, and one-way (asymmetric) blocks.
 *   A datagram reaches whichever instance runs in the slot when it arrives (UDP to an address).
 * - Store: the slot events of every slot, with a write number per slot; writes take random latency and
 *   apply atomically when they complete; `writeElect` is conditional as in every real engine. A crash
 *   leaves each in-flight write either applied or not (decided at the crash).
 * - Members: the member driver's rules — effects carried out one at a time, each persist awaited;
 *   ELECT written then the slots read back (electOutcome); the server started asynchronously: read
 *   the slots, fence every leader `leadersToFence` names (fencing kills that instance wherever it is,
 *   out of band, like STONITH; it may fail), reserve (a store round trip), report UP; FENCE, then serve.
 *   A predecessor in the member's own slot is gone by construction (a slot runs one instance at a time).
 * - Faults (the faulty phase): crashes and restarts (a new rid; terms from the store, B42), graceful
 *   exits, stalls (a member's events wait, then run messages first), server failures while serving (B39),
 *   fence failures, store latency spikes, partitions, loss.
 * - Hostile datagrams (both phases, from their own stream so the other draws stay as they were): about
 *   five a second, a forged message of any type claiming a configured slot, with a term the machine must
 *   drop (2^64-1, above TERM_MAX, or more than TERM_JUMP_MAX above the target's term; issue 8). They
 *   stand for a stranger that got past the source rule of io/udp.ts (it sends from the slot's address).
 * - The healed phase: no faults, every slot running; the cluster must converge within a bound.
 *
 * Checkers (a violation stops the run and reports seed, checker, time and the last trace lines):
 * - one-leader-per-term: with three or more slots, at most one instance becomes leader in a term; with
 *   any number, at most one instance starts a server for a term (ELECT confirmed).
 * - one-vote-per-term: a slot (across its instances) votes for at most one candidate per term.
 * - one-serving: at most one server serves at any time, as an observer of serve/stop/fence events sees it.
 * - serve-terms-increase: every server that serves has a term above every server that served before (B22).
 * - slot-terms-increase: in each slot, TERM and ELECT records only ever increase.
 * - liveness: after healing, within `convergeBoundMs`, one member serves and every running member follows
 *   it in the same term.
 * - machine-threw: the machine's own assertions (e.g. standing while its server runs).
 * - forged-term-dropped: a forged out-of-range term changes no machine's term and is counted as dropped;
 *   no slot records a term above TERM_MAX.
 *
 * Guarantees: a run is a pure function of (seed, options); nothing reads a real clock or Math.random.
 * Relies on: sim/prng.ts; Map iteration in insertion order.
 */
import {
  Election,
  electOutcome,
  greatestTerm,
  leadersToFence,
  liveLeaderRecorded,
  type ElectionEffect,
  type ElectOutcome,
  type QuorumMessage,
  type RecordedSlot,
  type ServerStatus,
  type SlotEventKind,
} from "../src/core/election.js";
import { SLOTS_MAX, TERM_JUMP_MAX, TERM_MAX } from "../src/core/limits.js";
import { QUORUM_MESSAGE_TYPES } from "../src/core/election.js";
import { fnv1a, Prng } from "./prng.js";

// ---------------------------------------------------------------------------------------------------
// Options and configuration

/**
 * Deliberately wrong drivers, to show the checkers can fail:
 * - `skip-fence`: a new leader serves without fencing previous leaders.
 * - `unconditional-elect`: ELECT is a plain write and its read-back is ignored (no same-term tie-break).
 */
export const ELECTION_MUTATIONS = ["none", "skip-fence", "unconditional-elect"] as const;
export type ElectionMutation = (typeof ELECTION_MUTATIONS)[number];

export function isElectionMutation(value: string): value is ElectionMutation {
  return (ELECTION_MUTATIONS as readonly string[]).includes(value);
}

export interface ElectionSimOptions {
  /** Number of configured slots (1..SLOTS_MAX); drawn from the seed when absent. */
  readonly slots?: number;
  readonly mutation?: ElectionMutation;
  readonly keepTrace?: boolean;
}

export interface ElectionSimConfig {
  readonly slots: readonly number[];
  readonly heartbeatTimeoutMs: number;
  readonly faultyMs: number;
  readonly convergeBoundMs: number;
  readonly lossRate: number;
  readonly duplicateRate: number;
  readonly delayMaxMs: number;
  readonly crashPerSecond: number;
  readonly exitPerSecond: number;
  readonly stallPerSecond: number;
  readonly serverFailPerSecond: number;
  readonly fenceFailRate: number;
  readonly partitionPerSecond: number;
  readonly mutation: ElectionMutation;
}

export type ElectionCheckerName =
  | "one-leader-per-term"
  | "one-vote-per-term"
  | "one-serving"
  | "serve-terms-increase"
  | "slot-terms-increase"
  | "liveness"
  | "machine-threw"
  | "forged-term-dropped";

export interface ElectionViolation {
  readonly seed: number;
  readonly checker: ElectionCheckerName;
  readonly detail: string;
  readonly atMs: number;
  readonly phase: "faulty" | "healed";
  readonly tail: readonly string[];
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

const TAIL_LINES = 40;
/** Events one run may take; more is a livelock (e.g. a timer that keeps firing at the same instant). */
export const ELECTION_EVENTS_MAX = 3_000_000;

function drawConfig(prng: Prng, options: ElectionSimOptions): ElectionSimConfig {
  const count = options.slots ?? Number(prng.weighted({ "1": 1, "2": 2, "3": 5, "4": 1, "5": 2, "7": 1 }));
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
    // Silent loss worst case: a skewed heartbeat timeout, a few split votes, fencing and store latency.
    convergeBoundMs: Math.ceil(heartbeatTimeoutMs * 1.1) + 8_000,
    lossRate: prng.pick([0, 0.01, 0.05, 0.2]),
    duplicateRate: prng.pick([0, 0.01]),
    delayMaxMs: prng.pick([2, 5, 20]),
    crashPerSecond: prng.pick([0, 0.05, 0.2]),
    exitPerSecond: prng.pick([0, 0.05, 0.1]),
    stallPerSecond: prng.pick([0, 0.05, 0.1]),
    serverFailPerSecond: prng.pick([0, 0.05]),
    fenceFailRate: prng.pick([0, 0.1, 0.3]),
    partitionPerSecond: prng.pick([0, 0.2, 0.5]),
    mutation: options.mutation ?? "none",
  };
}

// ---------------------------------------------------------------------------------------------------
// Event queue

const CLASS_STORE = 0;
const CLASS_DELIVERY = 1;
const CLASS_TIMER = 2;

interface Event {
  t: number;
  cls: number;
  seq: number;
  owner: Instance | null;
  run: () => void;
}

class EventQueue {
  private heap: Event[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  push(t: number, cls: number, owner: Instance | null, run: () => void): void {
    this.heap.push({ t, cls, seq: this.seq++, owner, run });
    let i = this.heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(this.heap[i]!, this.heap[parent]!)) break;
      [this.heap[i], this.heap[parent]] = [this.heap[parent]!, this.heap[i]!];
      i = parent;
    }
  }

  pop(): Event | undefined {
    const top = this.heap[0];
    const last = this.heap.pop();
    if (top === undefined || last === undefined || this.heap.length === 0) return top;
    this.heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < this.heap.length && this.less(this.heap[l]!, this.heap[m]!)) m = l;
      if (r < this.heap.length && this.less(this.heap[r]!, this.heap[m]!)) m = r;
      if (m === i) break;
      [this.heap[i], this.heap[m]] = [this.heap[m]!, this.heap[i]!];
      i = m;
    }
    return top;
  }

  private less(a: Event, b: Event): boolean {
    return a.t !== b.t ? a.t < b.t : a.cls !== b.cls ? a.cls < b.cls : a.seq < b.seq;
  }
}

// ---------------------------------------------------------------------------------------------------
// The world

interface StoredEvent {
  term: bigint;
  rid: bigint;
  writeNr: number;
}

interface ServerTask {
  readonly term: bigint;
  phase: "fencing" | "starting" | "up" | "serving" | "done";
  /** Ends a start in progress: reports DOWN to the machine. */
  down: (why: string) => void;
}

interface Instance {
  readonly slot: number;
  readonly incarnation: number;
  readonly rid: bigint;
  readonly rate: number;
  machine: Election | null;
  alive: boolean;
  /** Still part of the cluster (false after a graceful exit completed). */
  running: boolean;
  queue: ElectionEffect[];
  waiting: boolean;
  timerGen: number;
  stalledUntil: number;
  server: ServerTask | null;
  /** Store writes issued and not yet completed, applied or dropped if we crash. */
  inFlight: Set<() => void>;
  lastCandidateTerm: bigint;
}

class Violation extends Error {
  constructor(
    readonly checker: ElectionCheckerName,
    readonly detail: string,
  ) {
    super(`${checker}: ${detail}`);
  }
}

class ElectionWorld {
  now = 0;
  events = 0;
  phase: "faulty" | "healed" = "faulty";
  readonly queue = new EventQueue();
  readonly trace: string[] = [];
  private traceHash = 0x811c9dc5;
  readonly coverage: Record<string, number> = {
    elections: 0,
    splitVoteRetries: 0,
    leaderDemoted: 0,
    resignations: 0,
    fenced: 0,
    fenceFailures: 0,
    crashes: 0,
    exits: 0,
    restarts: 0,
    stalls: 0,
    serverFailures: 0,
    electRefusedOrTied: 0,
    partitions: 0,
    serves: 0,
    forgedDropped: 0,
  };
  private readonly store = new Map<number, Map<SlotEventKind, StoredEvent>>();
  private readonly writeNr = new Map<number, number>();
  readonly current = new Map<number, Instance>();
  private incarnations = 0;
  /** Directed links that drop everything: "from>to". */
  private blocked = new Set<string>();
  // Checker state.
  private readonly leaderOfTerm = new Map<bigint, bigint>();
  private readonly serverOfTerm = new Map<bigint, bigint>();
  private readonly voteOf = new Map<string, number>();
  private serving: Instance | null = null;
  private lastServedTerm = 0n;
  private readonly lastSlotTerm = new Map<string, bigint>();
  /** The hostile datagrams' own stream: adding them left every other draw of a seed unchanged. */
  private readonly hostile: Prng;

  constructor(
    readonly seed: number,
    readonly config: ElectionSimConfig,
    private readonly prng: Prng,
    private readonly keepTrace: boolean,
  ) {
    for (const slot of config.slots) this.store.set(slot, new Map());
    this.hostile = new Prng(fnv1a("hostile", seed));
  }

  // --- trace -----------------------------------------------------------------------------------------

  log(line: string): void {
    const full = `${this.now} ${line}`;
    this.traceHash = fnv1a(full, this.traceHash);
    this.trace.push(full);
    if (!this.keepTrace && this.trace.length > TAIL_LINES * 2) this.trace.splice(0, this.trace.length - TAIL_LINES);
  }

  get hash(): string {
    return this.traceHash.toString(16).padStart(8, "0");
  }

  private who(inst: Instance): string {
    return `s${inst.slot}#${inst.incarnation}`;
  }

  // --- scheduling ------------------------------------------------------------------------------------

  at(t: number, cls: number, owner: Instance | null, run: () => void): void {
    this.queue.push(Math.max(t, this.now), cls, owner, run);
  }

  /** Runs events until `until`; an owner's events wait while it is stalled (then messages go first). */
  runUntil(until: number, stop?: () => boolean): void {
    for (;;) {
      const event = this.queue.pop();
      if (event === undefined) return;
      if (event.t > until) {
        this.queue.push(event.t, event.cls, event.owner, event.run);
        this.now = until;
        return;
      }
      const owner = event.owner;
      if (owner !== null && owner.alive && owner.stalledUntil > event.t) {
        this.queue.push(owner.stalledUntil, event.cls, owner, event.run);
        continue;
      }
      this.now = event.t;
      if (++this.events > ELECTION_EVENTS_MAX) {
        throw new Violation("liveness", `more than ${ELECTION_EVENTS_MAX} events: a livelock at ${this.now} ms (${this.describeState()})`);
      }
      event.run();
      if (stop?.()) return;
    }
  }

  // --- store -----------------------------------------------------------------------------------------

  private storeLatency(): number {
    if (this.phase === "faulty" && this.prng.chance(0.02)) return this.prng.int(50, 400);
    return this.prng.int(1, 6);
  }

  /**
   * A store operation for `inst`: applied atomically when it completes (whatever `inst` is doing); `done`
   * then gets the result as an event of `inst` (so it waits while `inst` is stalled).
   */
  private storeOp<T>(inst: Instance, apply: () => T, done: (result: T) => void, write: boolean): void {
    let settled = false;
    const settle = (): T => {
      settled = true;
      inst.inFlight.delete(onCrash);
      return apply();
    };
    const onCrash = (): void => {
      // Crash with the write in flight: it either reached the store or it did not.
      if (!settled && write && this.prng.chance(0.5)) settle();
      settled = true;
    };
    inst.inFlight.add(onCrash);
    this.at(this.now + this.storeLatency(), CLASS_STORE, null, () => {
      if (settled) return;
      const result = settle();
      this.at(this.now, CLASS_STORE, inst, () => {
        if (inst.alive) done(result);
      });
    });
  }

  private readSlots(): RecordedSlot[] {
    return [...this.store.entries()].map(([slot, events]) => ({
      slot,
      events: Object.fromEntries([...events.entries()].map(([k, e]) => [k, { term: e.term, rid: e.rid }])),
    }));
  }

  private writeEvent(slot: number, kind: SlotEventKind, term: bigint, rid: bigint): void {
    const nr = (this.writeNr.get(slot) ?? 0) + 1;
    this.writeNr.set(slot, nr);
    this.store.get(slot)!.set(kind, { term, rid, writeNr: nr });
    if (term > TERM_MAX) throw new Violation("forged-term-dropped", `slot ${slot} recorded ${kind} ${term}, above TERM_MAX`);
    if (kind === "TERM" || kind === "ELECT") {
      const key = `${slot}/${kind}`;
      const last = this.lastSlotTerm.get(key);
      if (last !== undefined && term <= last) {
        throw new Violation("slot-terms-increase", `slot ${slot} recorded ${kind} ${term} after ${kind} ${last}`);
      }
      this.lastSlotTerm.set(key, term);
    }
  }

  private writeElect(slot: number, term: bigint, rid: bigint): boolean {
    if (this.config.mutation !== "unconditional-elect") {
      for (const events of this.store.values()) for (const e of events.values()) if (e.term > term) return false;
    }
    this.writeEvent(slot, "ELECT", term, rid);
    return true;
  }

  // --- members ---------------------------------------------------------------------------------------

  /** Starts a new instance in `slot`: read the slots, then begin. */
  startInstance(slot: number): void {
    const inst: Instance = {
      slot,
      incarnation: ++this.incarnations,
      rid: this.prng.u64NonZero(),
      rate: 0.95 + this.prng.float() * 0.1,
      machine: null,
      alive: true,
      running: true,
      queue: [],
      waiting: false,
      timerGen: 0,
      stalledUntil: 0,
      server: null,
      inFlight: new Set(),
      lastCandidateTerm: 0n,
    };
    this.current.set(slot, inst);
    this.log(`${this.who(inst)} starts (rid ${inst.rid.toString(16)})`);
    this.storeOp(
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

  private local(inst: Instance): number {
    return this.now * inst.rate;
  }

  /** Applies one machine input and carries out its effects (in order, persists awaited). */
  feed(inst: Instance, step: (nowMs: number) => ElectionEffect[]): void {
    if (!inst.alive || inst.machine === null) return;
    let effects: ElectionEffect[];
    try {
      effects = step(this.local(inst));
    } catch (error) {
      if (error instanceof Violation) throw error;
      throw new Violation("machine-threw", `${this.who(inst)}: ${(error as Error).message}`);
    }
    inst.queue.push(...effects);
    this.arm(inst);
    this.pump(inst);
  }

  private arm(inst: Instance): void {
    const gen = ++inst.timerGen;
    const deadline = inst.machine?.deadlineMs ?? null;
    if (deadline === null) return;
    let t = Math.max(this.now, Math.ceil(deadline / inst.rate));
    while (t * inst.rate < deadline) t++;
    this.at(t, CLASS_TIMER, inst, () => {
      if (inst.alive && inst.timerGen === gen) this.feed(inst, (now) => inst.machine!.tick(now));
    });
  }

  private pump(inst: Instance): void {
    while (inst.alive && !inst.waiting && inst.queue.length > 0) this.carryOut(inst, inst.queue.shift()!);
  }

  private resume(inst: Instance): void {
    inst.waiting = false;
    this.pump(inst);
  }

  private carryOut(inst: Instance, effect: ElectionEffect): void {
    switch (effect.type) {
      case "persist":
        inst.waiting = true;
        this.storeOp(inst, () => this.writeEvent(inst.slot, effect.kind, effect.term, inst.rid), () => this.resume(inst), true);
        if (effect.kind === "STOP") this.log(`${this.who(inst)} persists STOP ${effect.term}`);
        return;
      case "persist-elect": {
        inst.waiting = true;
        const term = effect.term;
        this.storeOp(
          inst,
          () => this.writeElect(inst.slot, term, inst.rid),
          (written) =>
            this.storeOp(
              inst,
              () => this.readSlots(),
              (records) => {
                let outcome: ElectOutcome = electOutcome(written, records, { slot: inst.slot, term, rid: inst.rid });
                if (this.config.mutation === "unconditional-elect") outcome = { ok: true };
                if (!outcome.ok) this.coverage.electRefusedOrTied!++;
                this.log(`${this.who(inst)} ELECT ${term}: ${outcome.ok ? "ok" : outcome.reason}`);
                this.feed(inst, (now) => inst.machine!.electWritten(term, outcome, now));
                this.resume(inst);
              },
              false,
            ),
          true,
        );
        return;
      }
      case "send":
        this.send(inst, effect.to, effect.message);
        if (effect.message.type === "VOTE") this.checkVote(inst, effect.to, effect.message.term);
        return;
      case "broadcast":
        for (const slot of this.config.slots) if (slot !== inst.slot) this.send(inst, slot, effect.message);
        if (effect.message.type === "RESIGNATION") this.coverage.resignations!++;
        return;
      case "start-server":
        this.startServer(inst, effect.term);
        return;
      case "serve":
        this.serve(inst, effect.term);
        return;
      case "stop-server":
        this.stopServer(inst, effect.term);
        return;
      case "status": {
        const s = effect.status;
        if (s.role === "candidate") {
          this.coverage.elections!++;
          if (inst.lastCandidateTerm === s.term - 1n) this.coverage.splitVoteRetries!++;
          inst.lastCandidateTerm = s.term;
        }
        if (s.role === "leader") this.checkLeader(inst, s.term);
        this.log(`${this.who(inst)} ${s.role} term ${s.term} leader ${s.leader ?? "-"} server ${s.serverStatus}`);
        return;
      }
      case "log":
        if (effect.message.includes("no longer leader")) this.coverage.leaderDemoted!++;
        this.log(`${this.who(inst)} log: ${effect.message}`);
        return;
      case "exit":
        inst.running = false;
        inst.alive = false;
        this.log(`${this.who(inst)} exited`);
        this.coverage.exits!++;
        this.scheduleRestart(inst.slot);
        return;
    }
  }

  // --- network ---------------------------------------------------------------------------------------

  private send(from: Instance, to: number, message: QuorumMessage): void {
    const faulty = this.phase === "faulty";
    if (this.blocked.has(`${from.slot}>${to}`)) return;
    if (faulty && this.prng.chance(this.config.lossRate)) return;
    const copies = faulty && this.prng.chance(this.config.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const spike = faulty && this.prng.chance(0.01) ? this.prng.int(50, 300) : 0;
      const delay = this.prng.int(0, faulty ? this.config.delayMaxMs : 2) + spike;
      this.at(this.now + delay, CLASS_DELIVERY, null, () => {
        const target = this.current.get(to);
        if (target === undefined || !target.alive || target.machine === null) return;
        if (target.stalledUntil > this.now) {
          // Delivered into the stalled process's socket buffer: handled when it wakes, before its timer.
          this.at(target.stalledUntil, CLASS_DELIVERY, target, () => this.feed(target, (now) => target.machine!.receive(message, now)));
          return;
        }
        this.feed(target, (now) => target.machine!.receive(message, now));
      });
    }
  }

  // --- the lock server of a term (asynchronous, like runtime/member.ts) -------------------------------

  private startServer(inst: Instance, term: bigint): void {
    const down = (why: string): void => {
      if (inst.server !== task || task.phase === "done") return;
      task.phase = "done";
      inst.server = null;
      this.log(`${this.who(inst)} server ${term} DOWN (${why})`);
      this.feed(inst, (now) => inst.machine!.serverStatus("DOWN", now));
    };
    const task: ServerTask = { term, phase: "fencing", down };
    inst.server = task;
    this.checkServerStart(inst, term);
    const reserve = (): void => {
      if (inst.server !== task || task.phase === "done") return;
      task.phase = "starting";
      this.storeOp(
        inst,
        () => undefined,
        () => {
          if (inst.server !== task || task.phase !== "starting") return;
          task.phase = "up";
          this.feed(inst, (now) => inst.machine!.serverStatus("UP" satisfies ServerStatus, now));
        },
        false,
      );
    };
    if (this.config.mutation === "skip-fence") {
      reserve();
      return;
    }
    this.storeOp(
      inst,
      () => this.readSlots(),
      (records) => {
        if (inst.server !== task) return;
        const targets = leadersToFence(records, { slot: inst.slot, term, rid: inst.rid }).filter((t) => !t.ownSlot);
        if (targets.length === 0) {
          reserve();
          return;
        }
        let pending = targets.length;
        let failed = false;
        for (const target of targets) {
          this.at(this.now + this.prng.int(1, 30), CLASS_STORE, inst, () => {
            if (!inst.alive) return;
            if (this.phase === "faulty" && this.prng.chance(this.config.fenceFailRate)) {
              failed = true;
              this.coverage.fenceFailures!++;
              this.log(`${this.who(inst)} fencing ${target.rid.toString(16)} failed`);
            } else {
              this.fence(inst, target.rid, target.term);
            }
            if (--pending > 0) return;
            if (failed) down("fencing failed");
            else reserve();
          });
        }
      },
      false,
    );
  }

  private fence(by: Instance, rid: bigint, term: bigint): void {
    for (const inst of this.current.values()) {
      if (inst.rid !== rid || !inst.alive) continue;
      this.log(`${this.who(by)} fences ${this.who(inst)} (term ${term})`);
      this.coverage.fenced!++;
      this.crash(inst, "fenced");
      return;
    }
  }

  private serve(inst: Instance, term: bigint): void {
    if (inst.server?.term !== term || inst.server.phase !== "up") return;
    inst.server.phase = "serving";
    this.coverage.serves!++;
    this.log(`${this.who(inst)} SERVES term ${term}`);
    if (this.serving !== null && this.serving !== inst) {
      throw new Violation("one-serving", `${this.who(inst)} serves term ${term} while ${this.who(this.serving)} serves term ${this.serving.server?.term}`);
    }
    if (term <= this.lastServedTerm) {
      throw new Violation("serve-terms-increase", `${this.who(inst)} serves term ${term} after term ${this.lastServedTerm} served`);
    }
    this.serving = inst;
    this.lastServedTerm = term;
  }

  private endServing(inst: Instance, why: string): void {
    if (this.serving === inst) {
      this.serving = null;
      this.log(`${this.who(inst)} stops serving (${why})`);
    }
  }

  private stopServer(inst: Instance, term: bigint): void {
    const task = inst.server;
    if (task === null || task.term !== term) return;
    this.endServing(inst, "stop requested");
    if (task.phase === "fencing" || task.phase === "starting") {
      // A stop request while starting ends the attempt at once (member.ts races the stop signal).
      this.at(this.now + 1, CLASS_STORE, inst, () => task.down("stopped while starting"));
      return;
    }
    this.at(this.now + this.prng.int(1, 5), CLASS_STORE, inst, () => {
      if (!inst.alive || inst.server !== task) return;
      task.phase = "done";
      inst.server = null;
      this.feed(inst, (now) => inst.machine!.serverStatus("DOWN", now));
    });
  }

  // --- faults ----------------------------------------------------------------------------------------

  crash(inst: Instance, why: string): void {
    if (!inst.alive) return;
    inst.alive = false;
    inst.running = false;
    for (const onCrash of [...inst.inFlight]) onCrash();
    inst.inFlight.clear();
    this.endServing(inst, why);
    inst.server = null;
    this.log(`${this.who(inst)} crashes (${why})`);
    if (why !== "fenced") this.coverage.crashes!++;
    this.scheduleRestart(inst.slot);
  }

  private scheduleRestart(slot: number): void {
    const delay = this.phase === "faulty" ? this.prng.int(100, 3000) : this.prng.int(1, 50);
    this.at(this.now + delay, CLASS_TIMER, null, () => {
      const inst = this.current.get(slot);
      if (inst !== undefined && (inst.alive || inst.running)) return;
      this.coverage.restarts!++;
      this.startInstance(slot);
    });
  }

  /** One fault decision every 100 ms of the faulty phase. */
  faultTick(): void {
    if (this.phase !== "faulty") return;
    const p = (perSecond: number): boolean => this.prng.chance(perSecond / 10);
    for (const inst of [...this.current.values()]) {
      // A stalled process notices nothing (a signal is handled when it resumes): no fault decisions for it.
      if (!inst.alive || inst.machine === null || inst.stalledUntil > this.now) continue;
      if (p(this.config.crashPerSecond)) this.crash(inst, "crash");
      else if (p(this.config.exitPerSecond)) {
        this.log(`${this.who(inst)} leaves gracefully`);
        this.feed(inst, (now) => inst.machine!.shutdown(now));
      } else if (p(this.config.stallPerSecond)) {
        inst.stalledUntil = this.now + this.prng.int(100, 4000);
        this.coverage.stalls!++;
        this.log(`${this.who(inst)} stalls until ${inst.stalledUntil}`);
      } else if (inst.server?.phase === "serving" && p(this.config.serverFailPerSecond)) {
        const task = inst.server;
        this.coverage.serverFailures!++;
        this.endServing(inst, "server failed");
        task.phase = "done";
        inst.server = null;
        this.log(`${this.who(inst)} server ${task.term} fails`);
        this.feed(inst, (now) => inst.machine!.serverStatus("DOWN", now));
      }
    }
    if (p(this.config.partitionPerSecond)) this.partition();
    this.at(this.now + 100, CLASS_TIMER, null, () => this.faultTick());
  }

  /** One hostile decision every 100 ms, in both phases (see the contract). */
  forgeTick(): void {
    const h = this.hostile;
    if (h.chance(0.5) && this.config.slots.length > 1) {
      const targets = [...this.current.values()].filter(
        (i) => i.alive && i.machine !== null && !i.machine.isEnded && i.stalledUntil <= this.now,
      );
      if (targets.length > 0) {
        const target = h.pick(targets);
        const machine = target.machine!;
        const from = h.pick(this.config.slots.filter((s) => s !== target.slot));
        const type = h.pick(QUORUM_MESSAGE_TYPES);
        const before = machine.currentTerm;
        const kind = h.int(0, 2);
        const term =
          kind === 0
            ? (1n << 64n) - 1n
            : kind === 1
              ? TERM_MAX + 1n + BigInt(h.u32())
              : before + TERM_JUMP_MAX + 1n + BigInt(h.int(0, 1000));
        const droppedBefore = Object.values(machine.status().dropped).reduce((a, b) => a + b, 0);
        this.log(`forged ${type} term ${term} claiming slot ${from} to ${this.who(target)}`);
        this.feed(target, (now) => machine.receive({ type, term, from }, now));
        const droppedAfter = Object.values(machine.status().dropped).reduce((a, b) => a + b, 0);
        if (machine.currentTerm !== before || droppedAfter !== droppedBefore + 1) {
          throw new Violation(
            "forged-term-dropped",
            `${this.who(target)} took a forged ${type} term ${term}: term ${before} -> ${machine.currentTerm}, dropped ${droppedBefore} -> ${droppedAfter}`,
          );
        }
        this.coverage.forgedDropped!++;
      }
    }
    this.at(this.now + 100, CLASS_TIMER, null, () => this.forgeTick());
  }

  private partition(): void {
    const slots = this.config.slots;
    this.blocked = new Set();
    const kind = this.prng.weighted({ split: 3, isolate: 2, oneWay: 2, heal: 3 });
    if (kind === "split" && slots.length > 1) {
      const side = new Set(slots.filter(() => this.prng.chance(0.5)));
      for (const a of slots) for (const b of slots) if (side.has(a) !== side.has(b)) this.blocked.add(`${a}>${b}`);
    } else if (kind === "isolate") {
      const lone = this.prng.pick(slots);
      for (const b of slots) if (b !== lone) this.blocked.add(`${lone}>${b}`).add(`${b}>${lone}`);
    } else if (kind === "oneWay" && slots.length > 1) {
      const from = this.prng.pick(slots);
      for (const b of slots) if (b !== from && this.prng.chance(0.7)) this.blocked.add(`${from}>${b}`);
    }
    if (this.blocked.size > 0) this.coverage.partitions!++;
    this.log(`network: ${kind} [${[...this.blocked].join(" ")}]`);
  }

  heal(): void {
    this.phase = "healed";
    this.blocked = new Set();
    this.log("network and members healed");
    for (const slot of this.config.slots) {
      const inst = this.current.get(slot);
      if (inst === undefined || !(inst.alive || inst.running)) this.scheduleRestart(slot);
      else inst.stalledUntil = Math.min(inst.stalledUntil, this.now);
    }
  }

  // --- checkers --------------------------------------------------------------------------------------

  private checkLeader(inst: Instance, term: bigint): void {
    if (this.config.slots.length < 3) return; // one vote is a majority: same-term leaders are settled at ELECT
    const other = this.leaderOfTerm.get(term);
    if (other !== undefined && other !== inst.rid) {
      throw new Violation("one-leader-per-term", `${this.who(inst)} leads term ${term}, already led by rid ${other.toString(16)}`);
    }
    this.leaderOfTerm.set(term, inst.rid);
  }

  private checkServerStart(inst: Instance, term: bigint): void {
    const other = this.serverOfTerm.get(term);
    if (other !== undefined && other !== inst.rid) {
      throw new Violation("one-leader-per-term", `${this.who(inst)} starts a server for term ${term}, already started by rid ${other.toString(16)}`);
    }
    this.serverOfTerm.set(term, inst.rid);
  }

  private checkVote(inst: Instance, candidate: number, term: bigint): void {
    const key = `${inst.slot}/${term}`;
    const previous = this.voteOf.get(key);
    if (previous !== undefined && previous !== candidate) {
      throw new Violation("one-vote-per-term", `slot ${inst.slot} (${this.who(inst)}) votes for slot ${candidate} in term ${term} after voting for slot ${previous}`);
    }
    this.voteOf.set(key, candidate);
  }

  /** Converged: one member serves, and every running member follows it in its term. */
  converged(): boolean {
    const leader = this.serving;
    if (leader === null || leader.server?.phase !== "serving") return false;
    const term = leader.machine!.currentTerm;
    for (const slot of this.config.slots) {
      const inst = this.current.get(slot);
      if (inst === undefined || !inst.alive || inst.machine === null) return false;
      if (inst.machine.currentTerm !== term || inst.machine.leader !== leader.slot) return false;
    }
    return true;
  }

  servingTerm(): bigint | null {
    return this.serving?.server?.term ?? null;
  }

  describeState(): string {
    return this.config.slots
      .map((slot) => {
        const inst = this.current.get(slot);
        if (inst === undefined || !inst.alive || inst.machine === null) return `${slot}:down`;
        const m = inst.machine;
        const deadline = m.deadlineMs === null ? "-" : Math.round(m.deadlineMs / inst.rate);
        const stall = inst.stalledUntil > this.now ? `/stalled-until-${inst.stalledUntil}` : "";
        return `${slot}:${m.currentRole}/t${m.currentTerm}/l${m.leader ?? "-"}/${inst.server?.phase ?? "no-server"}/due-${deadline}${stall}`;
      })
      .join(" ");
  }
}

// ---------------------------------------------------------------------------------------------------
// One run

export function runElectionSeed(seed: number, options: ElectionSimOptions = {}): ElectionRunResult {
  const prng = new Prng(seed);
  const config = drawConfig(prng.fork("config"), options);
  const world = new ElectionWorld(seed, config, prng.fork("world"), options.keepTrace === true);
  world.log(
    `seed ${seed}: slots ${config.slots.join(",")} heartbeat ${config.heartbeatTimeoutMs} ms, faulty ${config.faultyMs} ms, ` +
      `loss ${config.lossRate}, partitions/s ${config.partitionPerSecond}, crashes/s ${config.crashPerSecond}, mutation ${config.mutation}`,
  );
  let violation: ElectionViolation | undefined;
  let convergedAfterMs: number | undefined;
  const report = (checker: ElectionCheckerName, detail: string): void => {
    violation = { seed, checker, detail, atMs: world.now, phase: world.phase, tail: world.trace.slice(-TAIL_LINES) };
  };
  try {
    for (const slot of config.slots) world.at(prng.int(0, 200), CLASS_TIMER, null, () => world.startInstance(slot));
    world.at(0, CLASS_TIMER, null, () => world.faultTick());
    world.at(50, CLASS_TIMER, null, () => world.forgeTick());
    world.runUntil(config.faultyMs);
    world.heal();
    // Liveness: a stable window (one leader serving, everyone following it, no term change for longer
    // than a heartbeat timeout) must begin within the bound. Timers armed before healing may still fire
    // once (a follower that missed heartbeats during a stall), so a convergence that breaks right after
    // healing does not count, but the cluster must settle within the bound.
    const healedAt = world.now;
    const deadline = healedAt + config.convergeBoundMs;
    const windowMs = Math.ceil(config.heartbeatTimeoutMs * 1.1) + 1000;
    while (convergedAfterMs === undefined && world.now < deadline) {
      world.runUntil(deadline, () => world.converged());
      if (!world.converged()) break;
      const start = world.now;
      const term = world.servingTerm();
      world.runUntil(start + windowMs, () => !world.converged() || world.servingTerm() !== term);
      if (world.converged() && world.servingTerm() === term) convergedAfterMs = start - healedAt;
    }
    if (convergedAfterMs === undefined) {
      report("liveness", `no stable leader within ${config.convergeBoundMs} ms of healing: ${world.describeState()}`);
    }
  } catch (error) {
    if (error instanceof Violation) report(error.checker, error.detail);
    else report("machine-threw", error instanceof Error ? (error.stack ?? error.message) : String(error));
  }
  return {
    seed,
    config,
    violation,
    events: world.events,
    virtualMs: world.now,
    traceHash: world.hash,
    trace: options.keepTrace === true ? world.trace : undefined,
    coverage: world.coverage,
    convergedAfterMs,
  };
}

export function electionReplayCommand(seed: number, options: ElectionSimOptions = {}): string {
  const extra = [
    options.slots === undefined ? "" : ` --slots ${options.slots}`,
    options.mutation === undefined || options.mutation === "none" ? "" : ` --mutation ${options.mutation}`,
  ].join("");
  return `KEYLOCK_SEED=${seed} npm test -- test/sim/election.test.ts   (or: npx tsx sim/election-main.ts --seed ${seed}${extra} --verbose)`;
}

export function formatElectionViolation(v: ElectionViolation, options: ElectionSimOptions = {}): string {
  return `seed ${v.seed}: ${v.checker} at ${v.atMs} ms (${v.phase}): ${v.detail}\n  replay: ${electionReplayCommand(v.seed, options)}`;
}

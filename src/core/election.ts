/**
 * The quorum election (reference §7; DESIGN §3 "Quorum", §4 last row): a pure state machine that decides
 * which member runs the lock server. A simplified Raft election over unreliable datagrams: terms, one
 * vote per term, a majority of the configured slots, heartbeats from the leader, resignation on exit,
 * and per-slot events persisted in the store (BEGIN, TERM, ELECT, FENCE, STOP, END).
 *
 * Inputs (each returns the effects to carry out, in order):
 *   begin(now)                      the service starts: persist BEGIN, arm the first timeout
 *   tick(now)                       the driver's wait for a message timed out (the deadline passed)
 *   receive(message, now)           a valid quorum message arrived (the transport dropped invalid ones)
 *   serverStatus(status, now)       the lock server this member runs changed status (UP, DOWN, ...)
 *   electWritten(term, outcome, now) the conditional ELECT write finished (written, refused or tied)
 *   shutdown(now)                   graceful exit: stop the server, STOP, resign, END
 * Effects: persist (BEGIN/TERM/FENCE/STOP/END), persist-elect (conditional ELECT), send, broadcast,
 * start-server, serve, stop-server, status, log, exit.
 *
 * Guarantees:
 * - One iteration per input, in the reference §7.4 order: stale messages ignored; a higher term demotes
 *   and is adopted (persisted); a heartbeat pushes the timeout out BEFORE any expiry check, and only a
 *   `tick` (the receive timed out) can start an election (B41); votes are counted; a majority makes a
 *   leader; FENCE is recorded once the server is up; a server that should not run is stopped; a server
 *   that went DOWN is recorded with STOP (and a leader resigns: B39 — the member keeps taking part);
 *   the leader heartbeats every HEARTBEAT_INTERVAL_MS; a follower votes at most once per term.
 * - Persist before you act: effects are ordered so that a driver which carries them out one at a time,
 *   awaiting each persist before the next effect, never sends a message or starts a server that relies
 *   on a record not yet durable: TERM before REQUEST_VOTE or VOTE of that term; ELECT before the server
 *   starts (the start is only emitted by `electWritten`); FENCE before `serve`; STOP before RESIGNATION
 *   (the next leader reads STOP and does not fence us for a server that already stopped).
 * - One vote per term, also across restarts: a member starts in the greatest recorded term (B42) and
 *   never votes in that starting term, because an earlier instance of its slot may have voted in it
 *   before crashing (the reference does not persist votes; this closes that gap without a store field).
 * - A member never stands for election while its own server is not fully DOWN (reference §7.5).
 * - The server start is asynchronous (B40, B44): the machine keeps heartbeating while the server is
 *   STARTING (fencing previous leaders), and only the driver's `serverStatus` reports change it.
 * - Roles change only in becomeFollower / becomeCandidate / becomeLeader, which set every field that
 *   changes with the role. The status snapshot is published (a `status` effect) whenever role, term,
 *   leader or server status change, and before a new leader's slow steps (B46).
 * - After `shutdown` completes (`exit` effect) every input is ignored: nothing is sent or persisted (B45).
 * - Terms are bounded (DESIGN §9, core/limits.ts), so no arithmetic on them can overflow and no datagram
 *   can push the cluster to a term the store refuses: a message whose term is above TERM_MAX, or more
 *   than TERM_JUMP_MAX above our term (the greatest term we know: terms we adopt pass this check first),
 *   is dropped before it touches any state, counted by reason (`status().dropped`) and logged on the 1st,
 *   2nd, 4th, 8th... drop of each reason (a flood cannot flood the log). The machine never computes
 *   `term + 1` above TERM_MAX: at TERM_MAX it cannot stand for election, logs that, and stays a follower
 *   (unreachable by honest elections: 2^62 of them). A start term above TERM_MAX is refused (the
 *   constructor throws; the driver checks `outOfRangeTerms` first), and one read back after ELECT is
 *   not adopted (`electWritten`).
 *
 * Deliberate differences from the reference (DESIGN §4):
 * - A candidate that hears its own term's leader becomes that leader's follower (Raft); the reference
 *   keeps it a candidate, which changes nothing but its status (it has voted for itself either way).
 * - A candidate persists TERM before sending REQUEST_VOTE (the reference broadcasts first, then writes).
 * - Only a leader resigns; the reference also broadcasts RESIGNATION from exiting followers, which
 *   followers then undo on the leader's next heartbeat.
 * - Followers that lost their leader (silently, after the heartbeat timeout, or by its resignation, at
 *   once) stand in ring order after its slot, 100 ms apart, rather than at random (see standAfterMs);
 *   after a resignation they do not wait the 250 ms election timeout base at all.
 * - With one configured slot the member stands at once instead of after an election timeout: nobody
 *   else can lead, and a restarted `keylock up` should serve at once.
 * - ELECT is conditional in the store, and a leader whose ELECT finds another slot's ELECT of the same
 *   term yields (see `electOutcome`): with one or two slots one vote is a majority, so two members can
 *   win the same term; the write-then-read rule lets at most one of them start a server.
 *
 * Relies on: the driver calling `tick` when `deadlineMs` has passed and it has processed every message
 * already received (B41), carrying out effects in order, and reporting every server status change.
 * Times are milliseconds on a monotonic clock of the driver's choosing; randomness is injected.
 */

import { HEARTBEAT_TIMEOUT_MS_MAX, HEARTBEAT_TIMEOUT_MS_MIN, SLOTS_MAX, SLOT_MAX, TERM_JUMP_MAX, TERM_MAX } from "./limits.js";

export const ELECTION_TIMEOUT_MIN_MS = 250;
export const ELECTION_TIMEOUT_JITTER_MS = 100;
export const HEARTBEAT_INTERVAL_MS = 100;
/** Followers that lost their leader stand in ring order after its slot, this far apart... */
export const RESIGNATION_STAGGER_MS = 100;
/** ...each with up to this much jitter (see standAfterMs). */
export const RESIGNATION_JITTER_MS = 50;
/** How long a new leader waits for previous leaders to be fenced before its start fails (reference §7.7). */
export const LEADER_FENCE_WAIT_MS = 15_000;
/** Heartbeat gaps are counted in whole seconds 1..59 (reference §7.8). */
export const HEARTBEAT_GAP_BUCKETS = 60;
/** A new longest heartbeat gap at least this long is logged. */
export const HEARTBEAT_GAP_LOG_MIN_MS = 3_000;

export type Role = "follower" | "candidate" | "leader";
export type ServerStatus = "STARTING" | "UP" | "STOPPING" | "DOWN";
/** In wire order: REQUEST_VOTE 0, VOTE 1, HEARTBEAT 2, RESIGNATION 3 (reference §1.4). */
export const QUORUM_MESSAGE_TYPES = ["REQUEST_VOTE", "VOTE", "HEARTBEAT", "RESIGNATION"] as const;
export type QuorumMessageType = (typeof QUORUM_MESSAGE_TYPES)[number];

export interface QuorumMessage {
  readonly type: QuorumMessageType;
  readonly term: bigint;
  /** The sender's slot. */
  readonly from: number;
}

export type SlotEventKind = "BEGIN" | "TERM" | "ELECT" | "FENCE" | "STOP" | "END";
/** The slot events this machine asks to persist itself; ELECT has its own conditional effect. */
export type PersistedKind = Exclude<SlotEventKind, "ELECT">;

/** What the driver learned from writing ELECT and reading the slots back (see electOutcome). */
export type ElectOutcome =
  | { readonly ok: true }
  | {
      readonly ok: false;
      /** Whether our ELECT was written (a tie) or refused by the store (a higher term exists). */
      readonly written: boolean;
      /** The greatest term recorded in any slot, as read. */
      readonly greatestTerm: bigint;
      readonly reason: string;
    };

export type ElectionEffect =
  | { readonly type: "persist"; readonly kind: PersistedKind; readonly term: bigint }
  | { readonly type: "persist-elect"; readonly term: bigint }
  | { readonly type: "send"; readonly to: number; readonly message: QuorumMessage }
  | { readonly type: "broadcast"; readonly message: QuorumMessage }
  /** Fence previous leaders, then prepare a lock server for `term`; report STARTING→UP or DOWN. */
  | { readonly type: "start-server"; readonly term: bigint }
  /** FENCE is durable: the server may accept clients now. */
  | { readonly type: "serve"; readonly term: bigint }
  /** Stop the server started for `term` (asynchronously); report DOWN when it has stopped. */
  | { readonly type: "stop-server"; readonly term: bigint }
  | { readonly type: "status"; readonly status: ElectionStatus }
  | { readonly type: "log"; readonly message: string }
  /** The service ended (after END): the driver closes its sockets; nothing more will be emitted. */
  | { readonly type: "exit" };

/** Why the machine dropped a well-formed message: its term is out of range (see the contract). */
export const TERM_DROP_REASONS = ["term-range", "term-jump"] as const;
export type TermDropReason = (typeof TERM_DROP_REASONS)[number];

export type PeerRole = Role | "unknown";

export interface PeerStatus {
  readonly slot: number;
  /** The role as this member knows it. */
  readonly role: PeerRole;
  /** The last term heard from that slot (our own term for ourselves), or null. */
  readonly term: bigint | null;
  readonly lastReceived: { readonly type: QuorumMessageType; readonly term: bigint; readonly atMs: number } | null;
  readonly lastSent: { readonly type: QuorumMessageType; readonly term: bigint; readonly atMs: number } | null;
}

export interface HeartbeatGapBucket {
  /** Whole seconds: a gap of g ms lands in bucket floor(g / 1000), capped at 59. */
  readonly seconds: number;
  readonly count: number;
  readonly lastAtMs: number;
}

export interface ElectionStatus {
  readonly slot: number;
  readonly role: Role;
  readonly term: bigint;
  readonly leader: number | null;
  readonly votedFor: number | null;
  readonly votes: readonly number[];
  readonly votesNeeded: number;
  readonly serverStatus: ServerStatus;
  readonly serverStartTerm: bigint;
  readonly serverEvent: "ELECT" | "FENCE" | null;
  readonly timeoutAtMs: number;
  readonly peers: readonly PeerStatus[];
  readonly heartbeatGaps: readonly HeartbeatGapBucket[];
  readonly heartbeatGapMaxMs: number;
  /** Messages dropped for an out-of-range term, by reason (see the contract). */
  readonly dropped: Readonly<Record<TermDropReason, number>>;
  readonly ended: boolean;
}

export interface ElectionOptions {
  readonly slot: number;
  /** Every configured slot, including our own (1..SLOTS_MAX distinct slots in 0..SLOT_MAX). */
  readonly slots: readonly number[];
  readonly heartbeatTimeoutMs: number;
  /** The greatest term recorded in any slot (`greatestTerm`, B42); 0..TERM_MAX (see `outOfRangeTerms`). */
  readonly startTerm: bigint;
  /** Whether another slot records a leader that may still run (`liveLeaderRecorded`). */
  readonly liveLeaderRecorded: boolean;
  /** Uniform in [0, 1); draws the election timeout jitter each time one is armed. */
  readonly random: () => number;
}

/** A majority of the configured slots; 1 with fewer than three (reference §7.1). */
export function votesNeeded(slotCount: number): number {
  return slotCount < 3 ? 1 : Math.floor(slotCount / 2) + 1;
}

interface Contact {
  type: QuorumMessageType;
  term: bigint;
  atMs: number;
}

export class Election {
  readonly slot: number;
  readonly slots: readonly number[];
  readonly votesNeeded: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly random: () => number;
  private readonly liveLeaderAtStart: boolean;

  private role: Role = "follower";
  private term: bigint;
  private votedFor: number | null = null;
  private votes = new Set<number>();
  private knownLeader: number | null = null;
  /** We never vote in the term we started in: an earlier instance of our slot may have (see contract). */
  private readonly withheldTerm: bigint;
  private timeoutAtMs = 0;
  private serverStatusNow: ServerStatus = "DOWN";
  private serverStartTerm = 0n;
  private serverEvent: "ELECT" | "FENCE" | null = null;
  /** The term of an ELECT write not yet reported by `electWritten`, or 0n. */
  private electPendingTerm = 0n;
  private begun = false;
  private exiting = false;
  private ended = false;
  private published = "";
  private readonly lastReceived = new Map<number, Contact>();
  private readonly lastSent = new Map<number, Contact>();
  private lastHeartbeatAtMs: number | null = null;
  private gapCounts: number[] = [];
  private gapLastAtMs: number[] = [];
  private gapMaxMs = 0;
  private readonly droppedCounts: Record<TermDropReason, number> = { "term-range": 0, "term-jump": 0 };

  constructor(options: ElectionOptions) {
    const slots = [...options.slots].sort((a, b) => a - b);
    if (slots.length < 1 || slots.length > SLOTS_MAX) {
      throw new RangeError(`an election needs 1..${SLOTS_MAX} slots, got ${slots.length}`);
    }
    for (const [i, s] of slots.entries()) {
      if (!Number.isInteger(s) || s < 0 || s > SLOT_MAX) throw new RangeError(`slot ${s} is outside 0..${SLOT_MAX}`);
      if (i > 0 && slots[i - 1] === s) throw new RangeError(`slot ${s} is configured twice`);
    }
    if (!slots.includes(options.slot)) {
      throw new RangeError(`slot ${options.slot} is not configured; configured slots: ${slots.join(", ")}`);
    }
    const hb = options.heartbeatTimeoutMs;
    if (!Number.isInteger(hb) || hb < HEARTBEAT_TIMEOUT_MS_MIN || hb > HEARTBEAT_TIMEOUT_MS_MAX) {
      throw new RangeError(`heartbeat timeout ${hb} ms is outside ${HEARTBEAT_TIMEOUT_MS_MIN}..${HEARTBEAT_TIMEOUT_MS_MAX}`);
    }
    if (options.startTerm < 0n) throw new RangeError(`start term ${options.startTerm} is negative`);
    if (options.startTerm > TERM_MAX) {
      throw new RangeError(`start term ${options.startTerm} is above TERM_MAX ${TERM_MAX} (see outOfRangeTerms)`);
    }
    this.slot = options.slot;
    this.slots = slots;
    this.votesNeeded = votesNeeded(slots.length);
    this.heartbeatTimeoutMs = hb;
    this.random = options.random;
    this.term = options.startTerm;
    this.withheldTerm = options.startTerm;
    this.liveLeaderAtStart = options.liveLeaderRecorded;
    this.resetHeartbeatGaps();
  }

  get currentRole(): Role {
    return this.role;
  }

  get currentTerm(): bigint {
    return this.term;
  }

  get leader(): number | null {
    return this.knownLeader;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** When the driver must call `tick` (if nothing else happens first); null once ended. */
  get deadlineMs(): number | null {
    return this.ended ? null : this.timeoutAtMs;
  }

  // -------------------------------------------------------------------------------------------------
  // Inputs

  begin(nowMs: number): ElectionEffect[] {
    if (this.begun) throw new Error("election: begin() called twice");
    this.begun = true;
    const out: ElectionEffect[] = [{ type: "persist", kind: "BEGIN", term: this.term }];
    // A live leader recorded elsewhere gets its heartbeat timeout to show itself (reference §7.4 init).
    // A lone slot stands at once: nobody else can lead.
    const first =
      this.slots.length === 1 ? 0 : this.liveLeaderAtStart ? this.followerTimeoutMs(null) : this.electionTimeoutMs();
    this.becomeFollower(this.term, nowMs, first);
    this.publish(out);
    return out;
  }

  /** The wait for a message timed out: the only input that can start an election (B41). */
  tick(nowMs: number): ElectionEffect[] {
    return this.iterate(nowMs, null, true);
  }

  receive(message: QuorumMessage, nowMs: number): ElectionEffect[] {
    if (this.ended || !this.begun) return [];
    if (message.from === this.slot || !this.slots.includes(message.from)) {
      return [{ type: "log", message: `ignored a ${message.type} claiming to come from slot ${message.from}` }];
    }
    const refused = this.termRefusal(message.term);
    if (refused !== null) return this.drop(refused, message);
    this.lastReceived.set(message.from, { type: message.type, term: message.term, atMs: nowMs });
    return this.iterate(nowMs, message, false);
  }

  serverStatus(status: ServerStatus, nowMs: number): ElectionEffect[] {
    if (this.ended || !this.begun) return [];
    const out: ElectionEffect[] = [];
    if (status === "UP" && this.serverStatusNow !== "STARTING") {
      // We asked it to stop before it came up; it stays STOPPING until the driver reports DOWN.
      out.push({ type: "log", message: `server reported UP while ${this.serverStatusNow}; waiting for it to stop` });
    } else {
      this.serverStatusNow = status;
    }
    return out.concat(this.iterate(nowMs, null, false));
  }

  electWritten(term: bigint, outcome: ElectOutcome, nowMs: number): ElectionEffect[] {
    if (this.ended || term !== this.electPendingTerm) return [];
    this.electPendingTerm = 0n;
    const out: ElectionEffect[] = [];
    const stillLeader = this.role === "leader" && this.term === term && !this.exiting;
    if (outcome.ok) {
      if (stillLeader) {
        this.serverStartTerm = term;
        this.serverEvent = "ELECT";
        this.serverStatusNow = "STARTING";
        out.push({ type: "start-server", term });
      } else {
        // ELECT is durable but no server will start for it: record that, so no one fences us for it.
        out.push({ type: "persist", kind: "STOP", term });
      }
    } else {
      out.push({ type: "log", message: `not serving term ${term}: ${outcome.reason}` });
      if (outcome.greatestTerm > TERM_MAX) {
        // Only a store written by an older keylock (or by hand) holds such a term; adopting it would
        // let the next election overflow. Stay in our term; the operator repairs it (outOfRangeTerms).
        out.push({ type: "log", message: `a slot records term ${outcome.greatestTerm}, above TERM_MAX ${TERM_MAX}: not adopted` });
        if (stillLeader) this.becomeFollower(this.term, nowMs, this.electionTimeoutMs());
      } else if (outcome.greatestTerm > this.term) {
        this.becomeFollower(outcome.greatestTerm, nowMs, this.electionTimeoutMs());
        out.push({ type: "persist", kind: "TERM", term: outcome.greatestTerm });
      } else if (stillLeader) {
        this.becomeFollower(this.term, nowMs, this.electionTimeoutMs());
      }
      if (outcome.written) out.push({ type: "persist", kind: "STOP", term });
    }
    return out.concat(this.iterate(nowMs, null, false));
  }

  /** Graceful exit: stop the server (if any), STOP, resign if leading, END, then `exit`. */
  shutdown(nowMs: number): ElectionEffect[] {
    if (this.ended || this.exiting) return [];
    if (!this.begun) {
      this.ended = true;
      return [{ type: "exit" }];
    }
    this.exiting = true;
    return this.iterate(nowMs, null, false);
  }

  // -------------------------------------------------------------------------------------------------
  // The loop (reference §7.4, steps numbered as there)

  private iterate(nowMs: number, input: QuorumMessage | null, receiveTimedOut: boolean): ElectionEffect[] {
    const out: ElectionEffect[] = [];
    if (this.ended || !this.begun) return out;
    let message = input;

    // 2. A message from an older term changes nothing; it counts as nothing received.
    if (message !== null && message.term < this.term) message = null;

    // 3. A newer term demotes us and is adopted (persisted before anything of that term is sent).
    if (message !== null && message.term > this.term) {
      if (this.role === "leader") {
        out.push({
          type: "log",
          message: `slot ${message.from} is at term ${message.term}, above our ${this.term}: no longer leader`,
        });
        this.resetHeartbeatGaps();
      }
      const wait = message.type === "HEARTBEAT" ? this.followerTimeoutMs(message.from) : this.electionTimeoutMs();
      this.becomeFollower(message.term, nowMs, wait);
      out.push({ type: "persist", kind: "TERM", term: message.term });
    }

    if (message !== null) {
      switch (message.type) {
        case "HEARTBEAT":
          // 4. Push the timeout out before any expiry check (B41).
          if (this.role === "leader") {
            out.push({ type: "log", message: `slot ${message.from} also leads term ${message.term}` });
          } else {
            if (this.role === "candidate") this.becomeFollower(this.term, nowMs, 0);
            this.timeoutAtMs = nowMs + this.followerTimeoutMs(message.from);
            this.knownLeader = message.from;
            this.countHeartbeatGap(nowMs, out);
          }
          break;
        case "RESIGNATION":
          // 5. Our term's leader left: elect soon instead of after the heartbeat timeout.
          if (this.role === "follower") {
            this.timeoutAtMs = nowMs + this.standAfterMs(message.from);
            if (this.knownLeader === message.from) this.knownLeader = null;
          }
          break;
        case "VOTE":
          // 7.
          if (this.role === "candidate") {
            if (this.votes.has(message.from)) {
              out.push({ type: "log", message: `a second vote from slot ${message.from} in term ${this.term}: two members configured with one slot?` });
            }
            this.votes.add(message.from);
          }
          break;
        case "REQUEST_VOTE":
          break; // 13.
      }
    }

    // 6. Stand for election only after a receive timed out (B41), and never while our server still runs
    // or while we are leaving (then the timeout is only re-armed, so the driver is not woken at once again).
    if (this.role !== "leader" && message === null && receiveTimedOut && nowMs >= this.timeoutAtMs) {
      if (this.serverStatusNow !== "DOWN" || this.exiting) {
        this.timeoutAtMs = nowMs + this.electionTimeoutMs();
        this.publish(out);
        return out;
      }
      if (this.term >= TERM_MAX) {
        // term + 1 would leave the range every store accepts: we cannot stand, ever. Follow whoever
        // leads this term, and say why once per heartbeat timeout (not once per election timeout).
        out.push({ type: "log", message: `cannot stand for election: term ${this.term} is TERM_MAX, no later term exists; staying a follower` });
        this.becomeFollower(this.term, nowMs, this.heartbeatTimeoutMs);
        this.publish(out);
        return out;
      }
      this.becomeCandidate(nowMs);
      out.push({ type: "persist", kind: "TERM", term: this.term });
      out.push(this.broadcast("REQUEST_VOTE", this.term, nowMs));
    }

    // 8. A majority (possibly just our own vote) makes us leader; the server starts once ELECT is durable.
    if (this.role === "candidate" && this.votes.size >= this.votesNeeded) {
      this.becomeLeader(nowMs);
      out.push(this.broadcast("HEARTBEAT", this.term, nowMs));
      this.lastHeartbeatAtMs = nowMs;
      this.publish(out); // before the slow steps (B46)
      this.electPendingTerm = this.term;
      out.push({ type: "persist-elect", term: this.term });
    }

    // 9. Our server is up: record FENCE (previous leaders are fenced), then let it serve.
    if (
      this.role === "leader" &&
      this.serverStartTerm === this.term &&
      this.serverEvent !== "FENCE" &&
      this.serverStatusNow === "UP"
    ) {
      this.serverEvent = "FENCE";
      out.push({ type: "persist", kind: "FENCE", term: this.term });
      out.push({ type: "serve", term: this.term });
    }

    // 10. A server that should not run (no longer leader, or exiting) is asked to stop.
    const shouldRun = this.role === "leader" && this.term === this.serverStartTerm && !this.exiting;
    if (!shouldRun && (this.serverStatusNow === "STARTING" || this.serverStatusNow === "UP")) {
      this.serverStatusNow = "STOPPING";
      out.push({ type: "stop-server", term: this.serverStartTerm });
    }

    // 11. Our server is down (stopped, or failed on its own: B39): STOP, and a leader resigns.
    if (this.serverStartTerm !== 0n && this.serverStatusNow === "DOWN") {
      const stopped = this.serverStartTerm;
      const wasLeader = this.role === "leader";
      if (wasLeader) this.becomeFollower(this.term, nowMs, this.electionTimeoutMs());
      this.serverStartTerm = 0n;
      this.serverEvent = null;
      out.push({ type: "persist", kind: "STOP", term: stopped });
      if (wasLeader) out.push(this.broadcast("RESIGNATION", stopped, nowMs));
    }

    // 12. The leader heartbeats.
    if (this.role === "leader" && nowMs >= this.timeoutAtMs) {
      out.push(this.broadcast("HEARTBEAT", this.term, nowMs));
      this.timeoutAtMs = nowMs + HEARTBEAT_INTERVAL_MS;
      this.countHeartbeatGap(nowMs, out);
    }

    // 13. One vote per term, from followers only.
    if (
      message?.type === "REQUEST_VOTE" &&
      this.role === "follower" &&
      this.votedFor === null &&
      this.term !== this.withheldTerm &&
      !this.exiting
    ) {
      this.votedFor = message.from;
      out.push(this.send(message.from, "VOTE", this.term, nowMs));
    }

    if (this.exiting && this.serverStatusNow === "DOWN") this.finishExit(nowMs, out);
    this.publish(out);
    return out;
  }

  private finishExit(nowMs: number, out: ElectionEffect[]): void {
    if (this.electPendingTerm !== 0n) {
      // Our ELECT may land after we leave; close it so no later leader fences us for it.
      out.push({ type: "persist", kind: "STOP", term: this.electPendingTerm });
    }
    if (this.role === "leader") {
      out.push(this.broadcast("RESIGNATION", this.term, nowMs));
      this.becomeFollower(this.term, nowMs, 0);
    }
    out.push({ type: "persist", kind: "END", term: this.term });
    this.ended = true;
    this.publish(out);
    out.push({ type: "exit" });
  }

  // -------------------------------------------------------------------------------------------------
  // Role changes: the only places `role` is assigned.

  private becomeFollower(term: bigint, nowMs: number, waitMs: number): void {
    if (term < this.term) throw new Error(`election: becomeFollower(${term}) below term ${this.term}`);
    if (term !== this.term) {
      this.term = term;
      this.votedFor = null;
      this.knownLeader = null;
    } else if (this.role === "leader") {
      this.knownLeader = null;
    }
    this.role = "follower";
    this.votes = new Set();
    this.timeoutAtMs = nowMs + waitMs;
    this.lastHeartbeatAtMs = null;
  }

  private becomeCandidate(nowMs: number): void {
    if (this.serverStatusNow !== "DOWN" || this.serverStartTerm !== 0n || this.exiting) {
      throw new Error(`election: standing while our server is ${this.serverStatusNow}`);
    }
    if (this.term >= TERM_MAX) throw new Error(`election: standing at term ${this.term}, which is TERM_MAX`);
    this.role = "candidate";
    this.term += 1n;
    this.votedFor = this.slot;
    this.votes = new Set([this.slot]);
    this.knownLeader = null;
    this.timeoutAtMs = nowMs + this.electionTimeoutMs();
    this.lastHeartbeatAtMs = null;
  }

  private becomeLeader(nowMs: number): void {
    if (this.role !== "candidate" || this.votes.size < this.votesNeeded) {
      throw new Error(`election: becomeLeader as ${this.role} with ${this.votes.size}/${this.votesNeeded} votes`);
    }
    this.role = "leader";
    this.knownLeader = this.slot;
    this.timeoutAtMs = nowMs + HEARTBEAT_INTERVAL_MS;
    this.lastHeartbeatAtMs = null;
  }

  // -------------------------------------------------------------------------------------------------
  // Helpers

  private electionTimeoutMs(): number {
    const r = this.random();
    const jitter = Math.min(ELECTION_TIMEOUT_JITTER_MS - 1, Math.max(0, Math.floor(r * ELECTION_TIMEOUT_JITTER_MS)));
    return ELECTION_TIMEOUT_MIN_MS + jitter;
  }

  /**
   * Followers that lost the same leader (it resigned, or its heartbeats stopped) learned that at nearly
   * the same moment; with random timeouts alone two of them often stand within the time it takes to
   * persist TERM (tens of ms on PostgreSQL) and split the vote, costing a whole election timeout. So they
   * stand in ring order after the lost leader's slot, RESIGNATION_STAGGER_MS apart, each with a little
   * jitter: the next slot stands first and the others only if it does not (dead, cut off, or its server
   * still stopping). Without a known leader, plain election jitter (0..99 ms).
   */
  private standAfterMs(lostLeader: number | null): number {
    const n = this.slots.length;
    const from = lostLeader === null ? -1 : this.slots.indexOf(lostLeader);
    if (from < 0) return this.electionTimeoutMs() - ELECTION_TIMEOUT_MIN_MS;
    const rank = (this.slots.indexOf(this.slot) - from - 1 + 2 * n) % n;
    const jitter = Math.min(RESIGNATION_JITTER_MS - 1, Math.max(0, Math.floor(this.random() * RESIGNATION_JITTER_MS)));
    return rank * RESIGNATION_STAGGER_MS + jitter;
  }

  /** A follower of `leader` stands after the heartbeat timeout plus its place in line (standAfterMs). */
  private followerTimeoutMs(leader: number | null): number {
    return this.heartbeatTimeoutMs + this.standAfterMs(leader);
  }

  private broadcast(type: QuorumMessageType, term: bigint, nowMs: number): ElectionEffect {
    for (const s of this.slots) if (s !== this.slot) this.lastSent.set(s, { type, term, atMs: nowMs });
    return { type: "broadcast", message: { type, term, from: this.slot } };
  }

  private send(to: number, type: QuorumMessageType, term: bigint, nowMs: number): ElectionEffect {
    this.lastSent.set(to, { type, term, atMs: nowMs });
    return { type: "send", to, message: { type, term, from: this.slot } };
  }

  /** Why a message of `term` must be dropped, or null (see the contract). */
  private termRefusal(term: bigint): TermDropReason | null {
    if (term < 0n || term > TERM_MAX) return "term-range";
    if (term - this.term > TERM_JUMP_MAX) return "term-jump";
    return null;
  }

  /** Counts a dropped message; logs the 1st, 2nd, 4th, 8th... of each reason. Changes nothing else. */
  private drop(reason: TermDropReason, message: QuorumMessage): ElectionEffect[] {
    const count = ++this.droppedCounts[reason];
    if ((count & (count - 1)) !== 0) return [];
    const why =
      reason === "term-range"
        ? `above TERM_MAX ${TERM_MAX}`
        : `more than TERM_JUMP_MAX ${TERM_JUMP_MAX} above our term ${this.term}`;
    return [
      {
        type: "log",
        message: `dropped a ${message.type} from slot ${message.from} with term ${message.term}: ${why} (${count} ${reason} drops so far)`,
      },
    ];
  }

  private resetHeartbeatGaps(): void {
    this.gapCounts = new Array<number>(HEARTBEAT_GAP_BUCKETS).fill(0);
    this.gapLastAtMs = new Array<number>(HEARTBEAT_GAP_BUCKETS).fill(0);
    this.gapMaxMs = 0;
    this.lastHeartbeatAtMs = null;
  }

  /** §7.8: the gap between consecutive heartbeat sends (leader) or receives (follower). */
  private countHeartbeatGap(nowMs: number, out: ElectionEffect[]): void {
    const previous = this.lastHeartbeatAtMs;
    this.lastHeartbeatAtMs = nowMs;
    if (previous === null) return;
    const gap = nowMs - previous;
    if (gap < 1000) return;
    const bucket = Math.min(HEARTBEAT_GAP_BUCKETS - 1, Math.floor(gap / 1000));
    this.gapCounts[bucket]! += 1;
    this.gapLastAtMs[bucket] = nowMs;
    if (gap > this.gapMaxMs) {
      this.gapMaxMs = gap;
      if (gap >= HEARTBEAT_GAP_LOG_MIN_MS) {
        out.push({ type: "log", message: `longest heartbeat gap so far: ${gap} ms (as ${this.role} in term ${this.term})` });
      }
    }
  }

  private publish(out: ElectionEffect[]): void {
    const key = `${this.role}|${this.term}|${this.knownLeader}|${this.serverStatusNow}|${this.ended}`;
    if (key === this.published) return;
    this.published = key;
    out.push({ type: "status", status: this.status() });
  }

  status(): ElectionStatus {
    const peers: PeerStatus[] = this.slots.map((s) => {
      const received = this.lastReceived.get(s) ?? null;
      const sent = this.lastSent.get(s) ?? null;
      let role: PeerRole = "unknown";
      let term: bigint | null = received?.term ?? null;
      if (s === this.slot) {
        role = this.role;
        term = this.term;
      } else if (s === this.knownLeader) {
        role = "leader";
      } else if (this.role !== "follower" && this.votes.has(s)) {
        role = "follower";
      } else if (received !== null && received.term === this.term) {
        role = received.type === "REQUEST_VOTE" ? "candidate" : received.type === "HEARTBEAT" ? "leader" : "follower";
      }
      return {
        slot: s,
        role,
        term,
        lastReceived: received === null ? null : { ...received },
        lastSent: sent === null ? null : { ...sent },
      };
    });
    const heartbeatGaps: HeartbeatGapBucket[] = [];
    for (let seconds = 1; seconds < HEARTBEAT_GAP_BUCKETS; seconds++) {
      const count = this.gapCounts[seconds]!;
      if (count > 0) heartbeatGaps.push({ seconds, count, lastAtMs: this.gapLastAtMs[seconds]! });
    }
    return {
      slot: this.slot,
      role: this.role,
      term: this.term,
      leader: this.knownLeader,
      votedFor: this.votedFor,
      votes: [...this.votes].sort((a, b) => a - b),
      votesNeeded: this.votesNeeded,
      serverStatus: this.serverStatusNow,
      serverStartTerm: this.serverStartTerm,
      serverEvent: this.serverEvent,
      timeoutAtMs: this.timeoutAtMs,
      peers,
      heartbeatGaps,
      heartbeatGapMaxMs: this.gapMaxMs,
      dropped: { ...this.droppedCounts },
      ended: this.ended,
    };
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading the slot records (reference §7.3, §7.6, §7.7). Structural types, so the store's SlotRecord fits.

export interface RecordedEvent {
  readonly term: bigint;
  readonly rid: bigint;
}

export interface RecordedSlot {
  readonly slot: number;
  readonly events: Partial<Record<SlotEventKind, RecordedEvent>>;
}

/** The greatest term recorded in any event of any slot: a member starts there (B42). */
export function greatestTerm(records: readonly RecordedSlot[]): bigint {
  let greatest = 0n;
  for (const record of records) {
    for (const event of Object.values(record.events)) if (event !== undefined && event.term > greatest) greatest = event.term;
  }
  return greatest;
}

/**
 * Every recorded event whose term is above TERM_MAX, as "slot N KIND term T" lines; empty when the
 * records are sane. Only a store written by keylock before terms were bounded (a forged datagram's
 * term adopted and persisted) or edited by hand holds one. A member refuses to start on such a store
 * rather than ignore those events: an ELECT above TERM_MAX may belong to a leader that was really
 * elected there (before the bound, a forged term 2^63 let honest elections continue above it) and
 * may still run, so ignoring it could skip fencing it; and the conditional ELECT would keep refusing
 * every sane term anyway. The repair (named in the member's error) is operator work with every
 * member stopped: delete the out-of-range events, then start the members again. What remains still
 * holds every term a server served at below TERM_MAX (ELECT events are never overwritten by adopted
 * terms), so the terms clients last met stay below the next leader's.
 */
export function outOfRangeTerms(records: readonly RecordedSlot[]): string[] {
  const out: string[] = [];
  for (const record of records) {
    for (const [kind, event] of Object.entries(record.events)) {
      if (event !== undefined && event.term > TERM_MAX) out.push(`slot ${record.slot} ${kind} term ${event.term}`);
    }
  }
  return out;
}

/** A slot whose ELECT is newer than its STOP may still run a server ("live leader", reference §7.3). */
export function slotMayLead(record: RecordedSlot): boolean {
  const elect = record.events.ELECT;
  return elect !== undefined && elect.term > (record.events.STOP?.term ?? 0n);
}

/**
 * Whether a slot other than `ownSlot` records a leader that may still run. Our own slot's stale ELECT
 * belongs to our predecessor, which cannot be running while we hold the slot, so it does not make a
 * restarted member wait a whole heartbeat timeout.
 */
export function liveLeaderRecorded(records: readonly RecordedSlot[], ownSlot: number): boolean {
  return records.some((r) => r.slot !== ownSlot && slotMayLead(r));
}

/** The leader clients should look for: the greatest ELECT not superseded by STOP (reference §7.6). */
export function recordedLeader(records: readonly RecordedSlot[]): { slot: number; term: bigint } | null {
  let best: { slot: number; term: bigint } | null = null;
  for (const r of records) {
    if (!slotMayLead(r)) continue;
    const term = r.events.ELECT!.term;
    if (best === null || term > best.term) best = { slot: r.slot, term };
  }
  return best;
}

export interface FenceCandidate {
  readonly slot: number;
  readonly term: bigint;
  readonly rid: bigint;
  /** Which event shows it may still run: a live ELECT, or a FENCE (server up) never followed by STOP. */
  readonly event: "ELECT" | "FENCE";
  /** Our own slot: a predecessor of this member (the driver decides whether it is already gone). */
  readonly ownSlot: boolean;
}

/**
 * Previous leaders a new leader of `term` must fence before serving (reference §7.7). For each slot:
 * ELECT if ELECT.term > STOP.term; FENCE if STOP.term < FENCE.term < ELECT.term. `fenced` = the greatest
 * FENCE term anywhere (that server fenced everything older). A candidate is kept if its term is non-zero,
 * ≥ fenced, ≤ our term, and its rid is not ours. Left out as well: another slot's ELECT of our own term,
 * which can only be a leader that lost the same-term tie and never starts a server (see electOutcome).
 * One entry per rid (fence requests are deduplicated by rid, B37).
 */
export function leadersToFence(
  records: readonly RecordedSlot[],
  self: { readonly slot: number; readonly term: bigint; readonly rid: bigint },
): FenceCandidate[] {
  let fenced = 0n;
  for (const r of records) {
    const fence = r.events.FENCE;
    if (fence !== undefined && fence.term > fenced) fenced = fence.term;
  }
  const out: FenceCandidate[] = [];
  const seen = new Set<bigint>();
  const consider = (record: RecordedSlot, event: "ELECT" | "FENCE", e: RecordedEvent): void => {
    if (e.term === 0n || e.term < fenced || e.term > self.term || e.rid === self.rid || seen.has(e.rid)) return;
    if (event === "ELECT" && record.slot !== self.slot && e.term === self.term) return;
    seen.add(e.rid);
    out.push({ slot: record.slot, term: e.term, rid: e.rid, event, ownSlot: record.slot === self.slot });
  };
  for (const record of records) {
    const elect = record.events.ELECT;
    const stopTerm = record.events.STOP?.term ?? 0n;
    const fence = record.events.FENCE;
    if (elect !== undefined && elect.term > stopTerm) consider(record, "ELECT", elect);
    if (fence !== undefined && elect !== undefined && fence.term > stopTerm && fence.term < elect.term) {
      consider(record, "FENCE", fence);
    }
  }
  return out;
}

/**
 * What writing ELECT for `term` means, from the store's answer and the slots read back right after it.
 * Write-then-read: if another slot's ELECT of the same term is visible, we yield. Of two members that
 * both wrote ELECT for one term (possible with one or two slots, where one vote is a majority), the one
 * whose read came second sees the other's write, so at most one proceeds (both may yield; a later
 * election settles it). Also refused: our own slot's BEGIN or ELECT written by another instance
 * (two members configured with one slot, reference §7.10).
 */
export function electOutcome(
  written: boolean,
  records: readonly RecordedSlot[],
  self: { readonly slot: number; readonly term: bigint; readonly rid: bigint },
): ElectOutcome {
  const greatest = greatestTerm(records);
  if (!written) {
    return { ok: false, written: false, greatestTerm: greatest, reason: `a slot records a term above ${self.term}` };
  }
  const own = records.find((r) => r.slot === self.slot);
  if (own?.events.BEGIN !== undefined && own.events.BEGIN.rid !== self.rid) {
    return { ok: false, written: true, greatestTerm: greatest, reason: `another member started in slot ${self.slot}` };
  }
  const tie = records.find((r) => r.slot !== self.slot && r.events.ELECT?.term === self.term);
  if (tie !== undefined) {
    return { ok: false, written: true, greatestTerm: greatest, reason: `slot ${tie.slot} also won term ${self.term}` };
  }
  return { ok: true };
}

/**
 * The member driver (DESIGN §5 runtime/; reference §7): runs the pure election (core/election.ts) on real
 * timers and sockets, persists its slot events, and starts and stops the lock server for each term it
 * leads. `keylock member` and `keylock up` (a one-slot cluster) both run exactly this.
 *
 * Guarantees:
 * - Persist before acting: effects are carried out one at a time in the order the machine returned them,
 *   and each store write is awaited before the next effect (TERM before a vote or vote request goes out,
 *   ELECT before the server starts, FENCE before it serves, STOP before RESIGNATION). Each member writes
 *   only its own slot (B43).
 * - Sends never wait on unrelated persistence (the B40 class): a HEARTBEAT, VOTE or REQUEST_VOTE whose
 *   term is already durable in our slot (some slot event of that term or a later one was written by this
 *   member) goes out at once, ahead of store writes still queued; one whose term is not yet durable waits
 *   in order behind the TERM write, and a RESIGNATION always waits in order (behind its STOP). So a slow
 *   ELECT or FENCE write never holds up the leader's heartbeats.
 * - ELECT is the store's conditional write; right after it the slots are read back and `electOutcome`
 *   decides (higher term, same-term tie, another instance in our slot → do not serve).
 * - The server starts and stops asynchronously (B40): while a new leader fences its predecessors (at most
 *   LEADER_FENCE_WAIT_MS) the election keeps heartbeating. A start that fails (fencing failed or timed
 *   out, the store failed) is reported DOWN: the leader resigns, records STOP and keeps taking part (B39).
 * - Before serving, previous leaders are fenced (reference §7.7, reason quorum_block_leader) through the
 *   configured fence agent. A predecessor in our own slot is treated as fenced: this process holds the
 *   slot's TCP and UDP address, which that instance needed to serve, so it is gone.
 * - Timer expiry is handed to the machine from the clock's `defer` (setImmediate: after the event loop's
 *   poll phase has delivered every datagram that arrived meanwhile; simulated: after the events already
 *   due): messages are processed before the timeout check (B41), even after a long stall.
 * - Everything outside the process (time, randomness, the rid, datagram sockets, the service listener)
 *   comes from `options.world` (`realMemberWorld` by default: exactly what the member used before it
 *   took a world); the store and fence agent are options. The election and cluster simulators run this
 *   driver, unchanged, in simulated worlds (sim/election.ts, sim/cluster.ts).
 * - The TCP service port is bound for the member's whole life: while we do not serve, each greeting is
 *   answered with ENOTLEADER naming the leader we know of. With `tls` it speaks TLS only (listener.ts);
 *   a TLS handshake must finish within limits.greetingTimeoutMs.
 * - Prints (through `announce`) `keylock: member N up` once BEGIN is durable and the member takes part,
 *   and `keylock: serving on HOST:PORT` each time it becomes leader and serves.
 * - A member of a cluster formatted with a secret must be given that secret: without one, or with another
 *   one (checked against the store's digest), it refuses to start, naming the problem; a secret given to
 *   a cluster formatted without one is refused too. With the secret its quorum datagrams are tagged
 *   with the quorum key derived from it (io/keys.ts), and untagged or forged ones are dropped (io/udp.ts).
 * - A store holding a term above TERM_MAX (written before terms were bounded) is refused at start with
 *   a message naming the events and the repair (`outOfRangeTermsMessage`): no crash loop past BEGIN.
 * - A slot-event write that fails with StoreError EIO (the store is unreachable, or the outcome unknown)
 *   is retried with back-off (PERSIST_RETRY_MIN_MS doubling to PERSIST_RETRY_MAX_MS; every write is
 *   idempotent, ELECT included: it is conditional on no higher term) and the effects behind it wait, so
 *   nothing relying on it happens early. The member keeps running. While a write of its slot is in flight
 *   or failing, a non-leader's timeout is held back until the write is done (it could only queue a TERM
 *   write behind it), so when a hung store returns the member follows the leader the others elected
 *   meanwhile instead of deposing it with a burst of terms. A leader whose slot write has been in flight
 *   or failing for `limits.storeUnreachableMs` stops its server and sends no more heartbeats, so a member
 *   that can reach the store takes over (its ELECT or FENCE may never land). Any other store failure
 *   (EINVAL, ENOTFORMATTED, a bug) ends the member: `ended` resolves with the error; the CLI exits
 *   non-zero so a supervisor can restart it.
 * - A lock server that cannot reach the store for `limits.storeUnreachableMs` stops itself (server.ts
 *   onFatal); the member then records STOP (retrying as above), resigns, and keeps taking part as a
 *   follower that can lead again later.
 * - Graceful `stop()`: the server stops, STOP is durable, a leader resigns (fast takeover), END is
 *   written, sockets close, then `stop()` resolves. If those writes keep failing for the store bound,
 *   the member ends with the store's error instead (and `stop()` rejects with it).
 *
 * - Every slot event this member writes carries its own process (pid and start token,
 *   io/peer-process.ts), so a later leader's `local` fence agent kills exactly the process that wrote a
 *   previous leader's ELECT or FENCE, read from the store — never from files others could write.
 *
 * Relies on: one member process per slot (a second one fails to bind the slot's address); the store's
 * conditional ELECT.
 */
import { randomBytes } from "node:crypto";
import {
  Election,
  LEADER_FENCE_WAIT_MS,
  electOutcome,
  greatestTerm,
  leadersToFence,
  liveLeaderRecorded,
  outOfRangeTerms,
  type ElectionEffect,
  type ElectionStatus,
  type FenceCandidate,
  type ServerStatus,
} from "../core/election.js";
import { drawRid, ridToHex } from "../core/keys.js";
import type { FenceAgent } from "../io/fence.js";
import { ownProcess } from "../io/peer-process.js";
import { FramedConnection, formatAddress } from "../io/tcp.js";
import { realClock, setDeadline, type Clock, type Datagrams, type MessageConnection, type Timer } from "../io/world.js";
import type { Logger } from "../io/log.js";
import { QuorumSocket, realDatagrams } from "../io/udp.js";
import { deriveKey, secretRefusal } from "../io/keys.js";
import { StoreError, parseStoreUrl, type ClusterConfig, type SlotAddress, type SlotEventInput, type SlotRecord, type Store } from "../store/store.js";
import { answerNotLeaderOn, listenTcp, type ListenLimits, type ListenerTls, type ServiceListener } from "./listener.js";
import { Metrics, type MemberGauges } from "./metrics.js";
import { LockServerRuntime, type ServerOptions } from "./server.js";
import { TERM_MAX, serverLimits, type ServerLimits } from "../core/limits.js";

/** How often a serving leader refreshes its view of the slot records (for status roles). */
export const MEMBER_RECORDS_REFRESH_MS = 1000;
/** A slot-event write slower than this is logged (it delays every effect queued behind it). */
export const SLOW_STORE_WRITE_MS = 50;
/** A slot-event write that failed with EIO is retried after this long, doubling each time... */
export const PERSIST_RETRY_MIN_MS = 50;
/** ...up to this. */
export const PERSIST_RETRY_MAX_MS = 1000;

export interface MemberOptions {
  store: Store;
  slot: number;
  heartbeatTimeoutMs: number;
  reconnectTimeoutMs: number;
  recoveryTimeoutMs: number;
  fenceAgent: FenceAgent;
  log: Logger;
  /** Ready lines; default console.log. */
  announce?: (line: string) => void;
  /** Uniform in [0, 1) for election timeouts; default Math.random. */
  random?: () => number;
  /** Bounds on what peers may make the lock server hold (core/limits.ts). */
  limits?: Partial<ServerLimits>;
  /** Write seqs the lock server reserves per store write (tests; default SEQ_RESERVE_BLOCK). */
  writeSeqBlock?: bigint;
  /**
   * The cluster secret, required when the store was formatted with one (checked against its digest);
   * quorum datagrams are tagged with a key derived from it (io/keys.ts, io/udp.ts).
   */
  secret?: string;
  /** Serve TLS only on the service port (`--tls-cert --tls-key [--tls-ca] [--tls-client-auth]`); see listener.ts. */
  tls?: MemberTls;
  /** Time and timers for the member and its lock servers (io/world.ts); the real clock unless simulated. */
  clock?: Clock;
  /**
   * Everything else outside the process (io/world.ts): time, randomness, identity, datagram sockets and
   * the service listener; `realMemberWorld` unless simulated (sim/election.ts). Its clock and random
   * take precedence over `clock` and `random`.
   */
  world?: MemberWorld;
  /** Sees each election effect as it is carried out (the simulator's checkers); default none. */
  onEffect?: (effect: ElectionEffect) => void;
}

/** What the member reaches outside its process through (the real ones: `realMemberWorld`). */
export interface MemberWorld {
  readonly clock: Clock;
  /** Uniform in [0, 1) (election timeouts). */
  readonly random: () => number;
  /** A fresh random rid for this member instance (never 0 or 2^64-1). */
  newRid(): bigint;
  /** The process recorded with every slot event (for a later leader's `local` fence agent), or null. */
  ownProcess(): { pid: number; start: string } | null;
  /** Binds the slot's quorum datagram address. */
  readonly datagrams: Datagrams;
  /** Binds the slot's service address; every accepted connection goes to `onConnection`, not started. */
  listen(
    host: string,
    port: number,
    onConnection: (connection: MessageConnection) => void,
    limits: ListenLimits,
    tls: ListenerTls | undefined,
  ): Promise<ServiceListener>;
}

export const realMemberWorld: MemberWorld = {
  clock: realClock,
  random: Math.random,
  newRid: randomRid,
  ownProcess,
  datagrams: realDatagrams,
  listen: (host, port, onConnection, limits, tls) => listenTcp(host, port, (socket) => onConnection(new FramedConnection(socket)), limits, tls),
};

/** The member's TLS material: PEM contents, not file names (the CLI reads and checks the files). */
export type MemberTls = Omit<ListenerTls, "handshakeTimeoutMs" | "log">;

/** A member's row in `keylock status` (DESIGN §6 shape plus term and, for ourselves, heartbeat gaps). */
export interface MemberDescription {
  slot: number;
  address: string;
  role: string;
  term: number | null;
  heartbeatGaps?: { seconds: number; count: number; ageMs: number }[];
  heartbeatGapMaxMs?: number;
  /** Ourselves, with `--http-port`: our status page (so the other members' pages can link to it). */
  httpUrl?: string;
}

/**
 * Why a member refuses to start on a store holding terms above TERM_MAX, and the repair (see
 * `outOfRangeTerms` for why it refuses rather than ignoring them). Deleting only the out-of-range
 * events, with every member stopped, keeps every term a server served at, so terms stay monotonic for
 * clients; SQLite stores terms as 16 lowercase hex digits, PostgreSQL as numeric.
 */
export function outOfRangeTermsMessage(url: string, events: readonly string[]): string {
  let repair = `the SQL statement DELETE FROM keylock_slot_events WHERE term > ${TERM_MAX}`;
  try {
    const parsed = parseStoreUrl(url);
    if (parsed.kind === "sqlite") {
      repair = `sqlite3 ${parsed.path} "DELETE FROM keylock_slot_events WHERE term > '${TERM_MAX.toString(16).padStart(16, "0")}'"`;
    }
  } catch {
    // keep the generic statement
  }
  return (
    `the store ${url} records terms above TERM_MAX ${TERM_MAX} (${events.join("; ")}), ` +
    `left by forged quorum datagrams that keylock accepted before terms were bounded; no election can pass them. ` +
    `Stop every member, run ${repair}, then start the members again`
  );
}

function randomRid(): bigint {
  return drawRid(() => randomBytes(8).readBigUInt64BE());
}

interface ServerAttempt {
  readonly term: bigint;
  server: LockServerRuntime | null;
  stopRequested: boolean;
  /** Resolves when a stop is requested (so a slow fence does not hold the stop up). */
  readonly stopSignal: Promise<void>;
  signalStop: () => void;
}

class StopRequested extends Error {}

export class Member {
  readonly slot: number;
  readonly rid: bigint;
  readonly address: string;
  /** Resolves when the member has ended: null after a graceful stop, the error when it failed. */
  readonly ended: Promise<Error | null>;
  private resolveEnded!: (error: Error | null) => void;
  private machine!: Election;
  private readonly queue: ElectionEffect[] = [];
  private pumping = false;
  /** The greatest term of a slot event this member has made durable (sends of terms up to it need no wait). */
  private durableTerm = 0n;
  /** Since when (monotonic ms) the slot-event write now in flight (or waiting for its retry) has been busy, or null. */
  private persistBusySinceMs: number | null = null;
  /** A non-leader's timeout came while a slot write was busy: handed to the machine once it is done. */
  private tickDeferred = false;
  /** `stop()` was called: a slot write that cannot land within the store bound ends the member instead. */
  private leaving = false;
  private timer: Timer | null = null;
  private refreshTimer: Timer | null = null;
  private udp: QuorumSocket | null = null;
  private tcp: ServiceListener | null = null;
  private attempt: ServerAttempt | null = null;
  private servingTerm: bigint | null = null;
  private snapshot: ElectionStatus | null = null;
  private records: SlotRecord[] = [];
  private finished = false;
  private begun!: { resolve: () => void; reject: (error: Error) => void };
  private readonly servingWaiters = new Set<{ resolve: (address: string) => void; reject: (error: Error) => void }>();
  private readonly self: SlotAddress;
  /** This process, recorded with every slot event (null where /proc is missing: then nothing is recorded). */
  private readonly process: { pid: number; start: string } | null;
  private readonly world: MemberWorld;
  private readonly announce: (line: string) => void;
  /** This member's metrics (runtime/metrics.ts), shared by every lock server it runs. */
  readonly metrics = new Metrics();
  /** The member's status page (`--http-port`), when served: shown to the other members' pages. */
  httpUrl: string | null = null;
  private lastHeartbeatAtMs: number | null = null;

  private constructor(
    private readonly options: MemberOptions,
    private readonly config: ClusterConfig,
  ) {
    this.slot = options.slot;
    this.world = options.world ?? { ...realMemberWorld, clock: options.clock ?? realClock, random: options.random ?? Math.random };
    this.rid = this.world.newRid();
    this.process = this.world.ownProcess();
    this.self = config.slots.find((s) => s.slot === options.slot)!;
    this.address = formatAddress(this.self.host, this.self.port);
    this.announce = options.announce ?? ((line) => console.log(line));
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    this.metrics.attachMember(() => this.memberGauges());
    this.greetingKey = options.secret === undefined ? null : deriveKey(options.secret, config.clusterId, "keylock greeting v2");
  }

  /** Greeting v2 proofs (io/greeting-proofs.ts): derived from the cluster secret, null without one. */
  private readonly greetingKey: Buffer | null;

  /**
   * Joins the cluster in `options.slot`: binds the slot's TCP and UDP address, records BEGIN, and takes
   * part in elections from then on. Rejects (naming the problem) on an unformatted store, a missing or
   * wrong secret, an unconfigured slot, records with a term above TERM_MAX, an address in use, or a store failure.
   */
  static async start(options: MemberOptions): Promise<Member> {
    const { store, slot } = options;
    const config = await store.readConfig();
    if (config === null) throw new Error(`the store ${store.url} is not formatted; run "keylock format" first`);
    const mine = config.slots.find((s) => s.slot === slot);
    if (mine === undefined) {
      const configured = config.slots.map((s) => `${s.slot} (${formatAddress(s.host, s.port)})`).join(", ");
      throw new Error(`slot ${slot} is not configured in ${store.url}; configured slots: ${configured}`);
    }
    const refusal = secretRefusal(config.secretDigest, options.secret);
    if (refusal !== null) throw new Error(`${refusal} (store ${store.url})`);
    const member = new Member(options, config);
    const records = await store.readSlots();
    const bricked = outOfRangeTerms(records);
    if (bricked.length > 0) throw new Error(outOfRangeTermsMessage(store.url, bricked));
    await member.bind();
    try {
      member.machine = new Election({
        slot,
        slots: config.slots.map((s) => s.slot),
        heartbeatTimeoutMs: options.heartbeatTimeoutMs,
        startTerm: greatestTerm(records),
        liveLeaderRecorded: liveLeaderRecorded(records, slot),
        random: member.world.random,
      });
      member.records = records;
      const begun = new Promise<void>((resolve, reject) => (member.begun = { resolve, reject }));
      member.input((now) => member.machine.begin(now));
      await begun;
    } catch (error) {
      await member.closeSockets();
      throw error;
    }
    return member;
  }

  /** Resolves with the service address once this member serves (now or later); rejects if it ends first. */
  waitServing(): Promise<string> {
    if (this.servingTerm !== null) return Promise.resolve(this.address);
    return new Promise((resolve, reject) => this.servingWaiters.add({ resolve, reject }));
  }

  get isServing(): boolean {
    return this.servingTerm !== null;
  }

  status(): ElectionStatus {
    return this.machine.status();
  }

  /** The lock server this member runs and serves with now (null while it does not serve). */
  get server(): LockServerRuntime | null {
    return this.servingTerm === null ? null : (this.attempt?.server ?? null);
  }

  /** The gauges runtime/metrics.ts reads from this member at scrape time. */
  private memberGauges(): MemberGauges {
    const status = this.machine.status();
    return {
      term: status.term,
      isLeader: status.role === "leader",
      serving: this.isServing,
      heartbeatGapMaxMs: status.heartbeatGapMaxMs,
      droppedTerm: status.dropped["term-range"] + status.dropped["term-jump"],
      droppedSource: this.udp?.stats.dropped.source ?? 0,
      droppedAuth: this.udp?.stats.dropped.auth ?? 0,
      refusedConnections: this.tcp?.refusedConnections ?? 0,
      tlsClientErrors: this.tcp?.tlsClientErrors ?? 0,
    };
  }

  /** A heartbeat sent (leader) or received from the leader (follower): its gap to the previous one. */
  private noteHeartbeat(): void {
    const now = this.now();
    if (this.lastHeartbeatAtMs !== null) this.metrics.heartbeatGap.observe((now - this.lastHeartbeatAtMs) / 1000);
    this.lastHeartbeatAtMs = now;
  }

  /** Graceful exit: stop the server, STOP, resign if leading, END, close sockets. */
  async stop(): Promise<void> {
    this.leaving = true;
    this.input((now) => this.machine.shutdown(now));
    const error = await this.ended;
    if (error !== null) throw error;
  }

  // -------------------------------------------------------------------------------------------------
  // Sockets

  private async bind(): Promise<void> {
    const inUse = (error: unknown): Error => {
      const code = (error as NodeJS.ErrnoException).code;
      return code === "EADDRINUSE"
        ? new Error(`slot ${this.slot}'s address ${this.address} is in use: is another member running in slot ${this.slot}?`)
        : new Error(`cannot bind slot ${this.slot}'s address ${this.address}: ${(error as Error).message}`);
    };
    try {
      const tlsOptions = this.options.tls;
      const limits = serverLimits(this.options.limits);
      this.tcp = await this.world.listen(
        this.self.host,
        this.self.port,
        (connection) => this.onConnection(connection),
        { connectionsMax: limits.connectionsMax, log: this.options.log },
        tlsOptions === undefined ? undefined : { ...tlsOptions, handshakeTimeoutMs: limits.greetingTimeoutMs, log: this.options.log },
      );
    } catch (error) {
      throw inUse(error);
    }
    try {
      this.udp = await QuorumSocket.open({
        clusterId: this.config.clusterId,
        self: this.self,
        peers: this.config.slots.filter((s) => s.slot !== this.slot),
        onMessage: (message) => {
          if (message.type === "HEARTBEAT" && message.from === this.snapshot?.leader) this.noteHeartbeat();
          this.input((now) => this.machine.receive(message, now));
        },
        log: this.options.log,
        key: this.options.secret === undefined ? null : deriveKey(this.options.secret, this.config.clusterId, "keylock quorum v1"),
        datagrams: this.world.datagrams,
        clock: this.clock,
      });
    } catch (error) {
      await this.closeSockets();
      throw inUse(error);
    }
  }

  private onConnection(connection: MessageConnection): void {
    const server = this.attempt?.server ?? null;
    if (this.servingTerm !== null && server !== null && !server.isStopping) {
      server.serve(connection);
      return;
    }
    const leader = this.snapshot?.leader ?? null;
    const known = leader === null || leader === this.slot ? undefined : this.config.slots.find((s) => s.slot === leader);
    answerNotLeaderOn(
      connection,
      known === undefined ? null : { slot: known.slot, address: formatAddress(known.host, known.port) },
      serverLimits(this.options.limits).greetingTimeoutMs,
      this.clock,
    );
  }

  private async closeSockets(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = null;
    this.tcp = null;
    await Promise.all([udp?.close(), tcp?.close()]);
  }

  // -------------------------------------------------------------------------------------------------
  // Driving the machine

  private get clock(): Clock {
    return this.world.clock;
  }

  private now(): number {
    return this.clock.monotonicMs();
  }

  /** Applies one input to the machine, queues its effects, and re-arms the timer. */
  private input(step: (nowMs: number) => ElectionEffect[]): void {
    if (this.finished || this.machine === undefined) return;
    let effects: ElectionEffect[];
    try {
      effects = step(this.now());
    } catch (error) {
      this.fail(error);
      return;
    }
    for (const effect of effects) {
      if (this.sendsAtOnce(effect)) {
        this.options.onEffect?.(effect);
        this.send(effect);
      } else this.queue.push(effect);
    }
    this.arm();
    void this.pump();
  }

  /**
   * Whether a send may overtake the effects queued before it: its term is durable, so no queued write
   * is one it relies on (TERM before a vote or vote request of that term). A RESIGNATION relies on its
   * STOP, whatever the term, and always waits its turn.
   */
  private sendsAtOnce(effect: ElectionEffect): effect is Extract<ElectionEffect, { type: "send" | "broadcast" }> {
    if (effect.type !== "send" && effect.type !== "broadcast") return false;
    return effect.message.type !== "RESIGNATION" && effect.message.term <= this.durableTerm;
  }

  private send(effect: Extract<ElectionEffect, { type: "send" | "broadcast" }>): void {
    // A leader that cannot write its slot for the store bound falls silent, so the others elect a leader
    // that can (its ELECT or FENCE may never land; heartbeats alone would keep everyone waiting on it).
    if (effect.message.type === "HEARTBEAT" && this.storeUnreachable()) {
      this.stopServerForStore();
      return;
    }
    if (effect.message.type === "HEARTBEAT") this.noteHeartbeat();
    if (effect.type === "send") this.udp?.send(effect.to, effect.message);
    else this.udp?.broadcast(effect.message);
  }

  private arm(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    const deadline = this.machine.deadlineMs;
    if (deadline === null || this.finished) return;
    const delay = Math.max(0, Math.ceil(deadline - this.now()));
    // Datagrams that arrived during a stall are handled first (B41).
    this.timer = setDeadline(this.clock, () => this.onTimeout(), delay);
  }

  /** Whether a slot-event write of this member has been in flight or failing for the store bound (limits.storeUnreachableMs). */
  private storeUnreachable(): boolean {
    const since = this.persistBusySinceMs;
    return since !== null && this.now() - since >= serverLimits(this.options.limits).storeUnreachableMs;
  }

  /** The store does not take our slot's writes: a server we run (or start) is stopped, so we resign. */
  private stopServerForStore(): void {
    const attempt = this.attempt;
    if (attempt === null || attempt.stopRequested) return;
    this.options.log(
      `the store has not taken our slot's writes for ${serverLimits(this.options.limits).storeUnreachableMs} ms: stopping the server for term ${attempt.term} (resigning)`,
    );
    void this.stopServer(attempt.term);
  }

  private onTimeout(): void {
    if (this.finished) return;
    if (this.persistBusySinceMs !== null && this.machine.currentRole !== "leader") {
      // A write of our slot is still in flight (or failing): standing now would only queue a TERM write
      // behind it, and a store that hangs would turn that into a burst of terms sent later, deposing the
      // leader the others elected meanwhile. The timeout is handed over once the write is done.
      this.tickDeferred = true;
      return;
    }
    this.input((now) => this.machine.tick(now));
  }

  /**
   * Runs one store write of this member's slot, retrying EIO failures with back-off (see the contract).
   * Resolves with the write's result, or with null if the member finished meanwhile.
   */
  private async persistently<T>(what: string, write: () => Promise<T>): Promise<T | null> {
    this.persistBusySinceMs = this.now();
    try {
      return await this.persistentlyAttempt(what, write);
    } finally {
      this.persistBusySinceMs = null;
      if (this.tickDeferred && !this.finished) {
        this.tickDeferred = false;
        this.arm();
      }
    }
  }

  private async persistentlyAttempt<T>(what: string, write: () => Promise<T>): Promise<T | null> {
    for (let failures = 0; ; failures++) {
      try {
        const result = await write();
        if (failures > 0) this.options.log(`${what} succeeded after ${failures} failed attempt(s)`);
        return result;
      } catch (error) {
        if (!(error instanceof StoreError) || error.code !== "EIO" || this.finished) throw error;
        // Leaving: do not wait for the store forever (a supervisor stopping us expects an exit).
        if (this.leaving && this.storeUnreachable()) throw error;
        if (this.storeUnreachable()) this.stopServerForStore();
        if (failures === 0 || failures % 20 === 0) {
          this.options.log(`${what} failed (retrying; this member waits for its store): ${error.message}`, { level: "warn" });
        }
        const delayMs = Math.min(PERSIST_RETRY_MAX_MS, PERSIST_RETRY_MIN_MS * 2 ** Math.min(failures, 16));
        await new Promise<void>((resolve) => this.clock.setTimeout(resolve, delayMs));
        if (this.finished) return null;
      }
    }
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.finished) await this.carryOut(this.queue.shift()!);
    } catch (error) {
      this.fail(error);
    } finally {
      this.pumping = false;
    }
  }

  private async carryOut(effect: ElectionEffect): Promise<void> {
    const { store, log } = this.options;
    this.options.onEffect?.(effect);
    switch (effect.type) {
      case "persist": {
        const started = this.now();
        const event = this.slotEvent(effect.term);
        const done = await this.persistently(`persisting ${effect.kind} for term ${effect.term}`, async () => {
          await store.writeSlotEvent(this.slot, effect.kind, event);
          return true;
        });
        if (done === null) return;
        if (effect.term > this.durableTerm) this.durableTerm = effect.term;
        const tookMs = this.now() - started;
        if (tookMs >= SLOW_STORE_WRITE_MS) log(`persisting ${effect.kind} for term ${effect.term} took ${Math.round(tookMs)} ms`);
        if (effect.kind === "BEGIN") {
          log(`member ${this.slot} (rid ${ridToHex(this.rid)}) begins at term ${effect.term}`, { term: effect.term });
          this.announce(`keylock: member ${this.slot} up`);
          this.begun.resolve();
        }
        return;
      }
      case "persist-elect": {
        const event = this.slotEvent(effect.term);
        const answer = await this.persistently(`persisting ELECT for term ${effect.term}`, async () => {
          const written = await store.writeElect(this.slot, event);
          return { written, records: await store.readSlots() };
        });
        if (answer === null) return;
        const { written, records } = answer;
        if (written && effect.term > this.durableTerm) this.durableTerm = effect.term;
        this.records = records;
        const outcome = electOutcome(written, records, { slot: this.slot, term: effect.term, rid: this.rid });
        this.input((now) => this.machine.electWritten(effect.term, outcome, now));
        return;
      }
      case "send":
      case "broadcast":
        this.send(effect);
        return;
      case "start-server":
        void this.startServer(effect.term);
        return;
      case "serve":
        this.serve(effect.term);
        return;
      case "stop-server":
        void this.stopServer(effect.term);
        return;
      case "status":
        this.onStatus(effect.status);
        return;
      case "log":
        log(effect.message);
        return;
      case "exit":
        await this.finish(null);
        return;
    }
  }

  /** A slot event written now by this member instance, with its process. */
  private slotEvent(term: bigint): SlotEventInput {
    const event = { term, rid: this.rid, timeMs: this.clock.now() };
    return this.process === null ? event : { ...event, pid: this.process.pid, pidStart: this.process.start };
  }

  private onStatus(status: ElectionStatus): void {
    const previous = this.snapshot;
    this.snapshot = status;
    const newRole = previous?.role !== status.role || previous.term !== status.term;
    if (newRole) this.lastHeartbeatAtMs = null;
    if (newRole && status.role === "candidate") this.metrics.elections.inc({ result: "stood" });
    if (newRole && status.role === "leader") this.metrics.elections.inc({ result: "won" });
    if (status.leader !== null && status.leader !== (previous?.leader ?? null)) this.metrics.leaderChanges.inc();
    if (previous?.role !== status.role || previous.term !== status.term || previous.leader !== status.leader) {
      const leader = status.leader === null ? "none known" : `slot ${status.leader}`;
      this.options.log(`${status.role} in term ${status.term} (leader: ${leader})`, { term: status.term });
    }
  }

  // -------------------------------------------------------------------------------------------------
  // The lock server for a term

  private async startServer(term: bigint): Promise<void> {
    let signalStop!: () => void;
    const stopSignal = new Promise<void>((resolve) => (signalStop = resolve));
    const attempt: ServerAttempt = { term, server: null, stopRequested: false, stopSignal, signalStop };
    this.attempt = attempt;
    const stopped = stopSignal.then(() => {
      throw new StopRequested();
    });
    stopped.catch(() => undefined);
    let status: ServerStatus = "DOWN";
    try {
      await Promise.race([this.fencePreviousLeaders(term), stopped]);
      const starting = LockServerRuntime.start(this.serverOptions(term));
      // A server that finishes starting after we gave up on it is stopped at once.
      starting.then(
        (server) => {
          if (attempt.stopRequested) void server.stop();
        },
        () => undefined,
      );
      const server = await Promise.race([starting, stopped]);
      attempt.server = server;
      if (attempt.stopRequested) {
        await server.stop();
      } else {
        status = "UP";
      }
    } catch (error) {
      if (!(error instanceof StopRequested)) {
        this.options.log(`the server for term ${term} failed to start (resigning; others may take over): ${(error as Error).message}`, { level: "error" });
      }
    }
    if (status === "DOWN" && this.attempt === attempt) this.attempt = null;
    this.input((now) => this.machine.serverStatus(status, now));
  }

  private serverOptions(term: bigint): ServerOptions {
    return {
      store: this.options.store,
      config: this.config,
      slot: this.slot,
      term,
      host: this.self.host,
      port: this.self.port,
      reconnectTimeoutMs: this.options.reconnectTimeoutMs,
      recoveryTimeoutMs: this.options.recoveryTimeoutMs,
      fenceAgent: this.options.fenceAgent,
      log: this.options.log,
      // B39: a server that cannot go on (fence failure, store failure) is stopped; the leader resigns.
      onFatal: (reason) => {
        this.options.log(`the server for term ${term} failed (stopping it; resigning): ${reason}`, { level: "error" });
        void this.stopServer(term);
      },
      describeMembers: () => this.describeMembers(),
      metrics: this.metrics,
      greetingKey: this.greetingKey,
      ...(this.options.limits === undefined ? {} : { limits: this.options.limits }),
      ...(this.options.writeSeqBlock === undefined ? {} : { writeSeqBlock: this.options.writeSeqBlock }),
      ...(this.options.clock === undefined && this.options.world === undefined ? {} : { clock: this.clock }),
    };
  }

  private serve(term: bigint): void {
    const server = this.attempt?.server ?? null;
    if (server === null || this.attempt?.term !== term) return;
    this.servingTerm = term;
    this.announce(`keylock: serving on ${this.address}`);
    for (const waiter of this.servingWaiters) waiter.resolve(this.address);
    this.servingWaiters.clear();
    this.refreshRecords();
    if (this.refreshTimer === null) this.refreshEvery();
  }

  /** Refreshes the slot records every MEMBER_RECORDS_REFRESH_MS until stopServer clears `refreshTimer`. */
  private refreshEvery(): void {
    this.refreshTimer = this.clock.setTimeout(() => {
      this.refreshEvery();
      this.refreshRecords();
    }, MEMBER_RECORDS_REFRESH_MS);
  }

  private async stopServer(term: bigint): Promise<void> {
    const started = this.now();
    const attempt = this.attempt;
    if (attempt === null || attempt.term !== term || attempt.stopRequested) return;
    attempt.stopRequested = true;
    attempt.signalStop();
    if (this.servingTerm === term) this.servingTerm = null;
    if (this.refreshTimer !== null) this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (attempt.server === null) return; // still starting: startServer reports DOWN
    try {
      await attempt.server.stop();
    } catch (error) {
      this.options.log(`stopping the server for term ${term} failed (treated as stopped): ${(error as Error).message}`);
    }
    const tookMs = this.now() - started;
    if (tookMs >= SLOW_STORE_WRITE_MS) this.options.log(`stopping the server for term ${term} took ${Math.round(tookMs)} ms`);
    if (this.attempt === attempt) this.attempt = null;
    this.input((now) => this.machine.serverStatus("DOWN", now));
  }

  /**
   * Reference §7.7: fence every previous leader that may still run, waiting at most LEADER_FENCE_WAIT_MS.
   * Any failure rejects, so the start fails and another member (or we, later) tries again.
   */
  private async fencePreviousLeaders(term: bigint): Promise<void> {
    const records = await this.options.store.readSlots();
    this.records = records;
    const targets = leadersToFence(records, { slot: this.slot, term, rid: this.rid });
    const jobs = targets.map((target) => this.fenceLeader(target));
    if (jobs.length === 0) return;
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.clock.setTimeout(
        () => reject(new Error(`previous leaders were not fenced within ${LEADER_FENCE_WAIT_MS} ms`)),
        LEADER_FENCE_WAIT_MS,
      );
    });
    try {
      await Promise.race([Promise.all(jobs), timeout]);
    } finally {
      this.clock.clearTimeout(timer);
    }
  }

  private async fenceLeader(target: FenceCandidate): Promise<void> {
    const { log, fenceAgent } = this.options;
    const rid = ridToHex(target.rid);
    if (target.ownSlot) {
      log(`previous leader ${rid} of our slot ${this.slot} (term ${target.term}) is gone: this member holds the slot's address`);
      return;
    }
    const slot = this.config.slots.find((s) => s.slot === target.slot);
    const address = slot === undefined ? "unknown" : formatAddress(slot.host, slot.port);
    // The process that wrote the event making it a target, as that process recorded itself.
    const event = this.records.find((r) => r.slot === target.slot)?.events[target.event];
    const found = event?.rid === target.rid && event.pid !== undefined && event.pidStart !== undefined ? { pid: event.pid, pidStart: event.pidStart } : {};
    log(`fencing slot ${target.slot}'s previous leader ${rid} (term ${target.term}, ${target.event}) with ${fenceAgent.name}: quorum_block_leader`, { level: "warn", rid });
    try {
      await fenceAgent.fence({ rid: target.rid, address, reason: "quorum_block_leader", ...found }, LEADER_FENCE_WAIT_MS);
    } catch (error) {
      this.metrics.fenceFinished("quorum_block_leader", "failed");
      throw error;
    }
    this.metrics.fenceFinished("quorum_block_leader", "fenced");
    log(`fenced slot ${target.slot}'s previous leader ${rid}`, { rid });
  }

  private refreshRecords(): void {
    this.options.store.readSlots().then(
      (records) => (this.records = records),
      (error: Error) => this.options.log(`reading slot records for status failed (carrying on): ${error.message}`),
    );
  }

  /** Every configured member as this member knows it (DESIGN §6 status), plus terms and heartbeat gaps. */
  describeMembers(): MemberDescription[] {
    const status = this.machine.status();
    const now = this.now();
    return this.config.slots.map((s) => {
      const peer = status.peers.find((p) => p.slot === s.slot);
      let role: string = peer?.role ?? "unknown";
      const record = this.records.find((r) => r.slot === s.slot);
      if (role === "unknown" && record !== undefined) {
        // Followers send nothing to the leader; a BEGIN not followed by END says the member runs.
        const begin = record.events.BEGIN;
        const end = record.events.END;
        if (begin !== undefined && (end === undefined || end.writeNr < begin.writeNr)) role = "follower";
      }
      const recordedTerm = record?.events.TERM?.term ?? record?.events.BEGIN?.term ?? null;
      const term = peer?.term ?? recordedTerm;
      const row: MemberDescription = {
        slot: s.slot,
        address: formatAddress(s.host, s.port),
        role,
        term: term === null ? null : Number(term),
      };
      if (s.slot === this.slot) {
        row.heartbeatGaps = status.heartbeatGaps.map((g) => ({ seconds: g.seconds, count: g.count, ageMs: Math.round(now - g.lastAtMs) }));
        row.heartbeatGapMaxMs = status.heartbeatGapMaxMs;
        if (this.httpUrl !== null) row.httpUrl = this.httpUrl;
      }
      return row;
    });
  }

  // -------------------------------------------------------------------------------------------------
  // Ending

  private fail(error: unknown): void {
    const err = error instanceof Error ? error : new Error(String(error));
    this.options.log(`member ${this.slot} no longer takes part in the quorum: ${err.message}`, { level: "error" });
    this.begun?.reject(err);
    const server = this.attempt?.server ?? null;
    this.attempt?.signalStop();
    this.attempt = null;
    this.servingTerm = null;
    void server?.stop();
    void this.finish(err);
  }

  private async finish(error: Error | null): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    if (this.refreshTimer !== null) this.clock.clearTimeout(this.refreshTimer);
    this.timer = null;
    this.refreshTimer = null;
    await this.closeSockets();
    const ended = error ?? new Error(`member ${this.slot} stopped`);
    for (const waiter of this.servingWaiters) waiter.reject(ended);
    this.servingWaiters.clear();
    this.resolveEnded(error);
  }
}

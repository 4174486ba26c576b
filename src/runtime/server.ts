/**
 * The lock server driver, an executor of two pure machines: the lock table (core/lock-server.ts) and the
 * server machine (core/server-machine.ts: greetings, the client registry, record writes, farewell, fence
 * and reclaim order, recovery and reconnect deadlines). It owns the sockets, the client sessions and the
 * hot path, carries out the machines' effects in order and hands every outcome back to the server machine
 * as an input. Its parts, each with its own contract: runtime/server-connection.ts (HELLO, greeting
 * deadline), server-greeting.ts (proofs, owner lookup, the greeting's answer), server-outcomes.ts (record
 * writes, the fence agent, timers: `persist-record` answered by `record-persisted`, `set-timer` by
 * `timeout`), server-recovery.ts (lock reports), server-limits.ts (client limits, invalidation deadlines),
 * server-views.ts (admin answers, status, gauges), server-options.ts (options and the simulator's seam).
 *
 * Guarantees:
 * - The hot path is direct: a LOCK message goes from the client's session to the lock table and its
 *   grants back out, with no server-machine input on the way (only a read of the session's `leaving`).
 * - The lock table is only touched synchronously inside one handler; sends are queued on the
 *   connection and written at the end of the tick (DESIGN §5: never await in the middle of a key).
 * - Persist before you promise (the server machine orders it): a client's record is written before its
 *   first greeting is answered; a farewell is answered only after the client's entries are gone and its
 *   record deleted; a fenced client's record is deleted before its entries go (docs/operations.md
 *   "Fencing"); write seqs are reserved in the store before they are handed out (runtime/write-seq.ts);
 *   while a reservation is pending, write grants wait and resume when it lands.
 * - A store that hangs or keeps failing for `limits.storeUnreachableMs` (runtime/store-watch.ts), a fence
 *   error or timeout, or exhausted write seqs stop this server through `onFatal` with a clear reason, so
 *   its member resigns and another can serve (DESIGN §9); no recovery or fence state outlives it (B38).
 * - Reliable messaging per client (core/session.ts): the session outlives sockets for
 *   `reconnectTimeoutMs`, so a client that reconnects to this server gets exactly-once delivery both ways.
 * - Recovery (reference §5): every client with a record must greet and report its locks before any lock
 *   is granted or invalidated; requests queue meanwhile. Clients that miss `recoveryTimeoutMs`, stay
 *   disconnected past `reconnectTimeoutMs`, keep more than `sessionUnackedMax` messages unacknowledged,
 *   or leave an invalidation unanswered for `invalidationTimeoutMs` are fenced (as the process found
 *   behind their connection) and only then reclaimed. A farewell waits for that client's recovery (B5).
 * - Bad input from one peer closes that peer's connection with a logged reason and is counted
 *   (`keylock_protocol_errors_total`); everyone else carries on. Nothing a peer sends reaches an
 *   InvariantError: the session checks seq, ack and ids, the lock table every lock field and recovery
 *   report (a write seq above the durable high-water mark read at start is refused), the server machine
 *   refuses what does not fit its registry. A lock request beyond the client's requests in flight or lock
 *   entries closes its connection without touching the table (DESIGN §9 limits, core/limits.ts; each trip
 *   is counted; lines about connections that never greeted are logged at most once a second). A greeted
 *   client whose connection closed is like one that vanished: it reconnects in time, or is fenced.
 * - Failing to send to a disconnected client is not an error: its session keeps the message for a
 *   reconnect, or the client will be fenced and reclaimed (B3).
 * - Observability costs the hot path plain number updates only: counters, latency histograms
 *   (runtime/metrics.ts FastHistogram: request received → grant sent) and the bounded hot-key summary.
 * - `parts` (ServerParts) is the one seam through which the driver simulator observes and wraps the real
 *   parts; production passes nothing.
 * Relies on: one server per store at a time (election + fencing), the codec to validate fields.
 */
import type net from "node:net";
import { performance } from "node:perf_hooks";
import { LockServer, type LockServerEffect } from "../core/lock-server.js";
import { GrantTags } from "../core/grant-tags.js";
import { RecoveryTracker } from "../core/recovery.js";
import { ServerMachine, type ServerEffect, type ServerInput, type SessionView } from "../core/server-machine.js";
import { ridToHex, type Key } from "../core/keys.js";
import type { Rid } from "../core/lock-messages.js";
import { CONNECTION_LOG_INTERVAL_MS, serverLimits, type ServerLimits } from "../core/limits.js";
import { RECONNECT_TIMEOUT_MS_DEFAULT, RECOVERY_TIMEOUT_MS_DEFAULT } from "../core/limits.js";
import { WireSession } from "../protocol/session.js";
import type { AdminStatus } from "../protocol/admin.js";
import { Command, WireError, type Body, type Message } from "../protocol/messages.js";
import { FramedConnection, formatAddress } from "../io/tcp.js";
import { realClock, type Clock, type MessageConnection } from "../io/world.js";
import { localFenceAgent, type FenceAgent } from "../io/fence.js";
import { throttledLogger, type Logger } from "../io/log.js";
import { ReservedWriteSeq, SEQ_RESERVE_BLOCK } from "./write-seq.js";
import type { StoreWatch } from "./store-watch.js";
import { startWatched } from "./server-start.js";
import { Metrics, type ServerCounts } from "./metrics.js";
import { HotKeys } from "./hot-keys.js";
import type { ServerOptions } from "./server-options.js";
import { serveConnection } from "./server-connection.js";
import { MachineOutcomes } from "./server-outcomes.js";
import { LockRecovery } from "./server-recovery.js";
import { errorBody, ServerGreetings } from "./server-greeting.js";
import { clientLimitViolation, InvalidationDeadlines, logUnacknowledged, type LimitedSession } from "./server-limits.js";
import { ServerViews, type OperatorStatus } from "./server-views.js";
export { ADMIN_PAGE_BYTES_MAX, RECONNECT_TIMEOUT_MS_DEFAULT, RECOVERY_TIMEOUT_MS_DEFAULT } from "../core/limits.js";
export { adminRefusal, type OperatorStatus } from "./server-views.js";
export type { ServerOptions, ServerParts } from "./server-options.js";

/** What the driver keeps per client session; the machine's view (`state`) holds what it decided. */
interface ClientSession extends LimitedSession {
  readonly state: SessionView;
  readonly reliable: WireSession;
  connection: MessageConnection | null;
  /** The machine's number for `connection`. */
  conn: number;
  /** Whether `sessions` holds this session under its rid (kept by `addSession`/`removeSession`). */
  current: boolean;
  /**
   * Lock requests not answered yet: request id → when received (performance.now ms), for grant latency.
   * Only requests the lock table did not answer while handling them (LockServerRuntime `answering`).
   */
  readonly requestsReceivedAt: Map<number, number>;
}

export class LockServerRuntime {
  readonly host: string;
  readonly port: number;
  private readonly locks: LockServer;
  private readonly machine: ServerMachine;
  /** Carries the lock table's effects to the clients (`apply`, unless the simulator's seam wraps it). */
  private readonly carry: (effects: LockServerEffect[]) => void;
  private readonly sessions = new Map<Rid, ClientSession>();
  private readonly connections = new Set<MessageConnection>();
  /** Lock recovery on the wire: asking for and taking in lock reports (runtime/server-recovery.ts). */
  private readonly recovery: LockRecovery<ClientSession>;
  /** Record writes, fences and timers, each answered back to the machine (runtime/server-outcomes.ts). */
  private readonly outcomes: MachineOutcomes;
  /** The greeting executor (runtime/server-greeting.ts). */
  private readonly greetings: ServerGreetings<ClientSession>;
  /** The invalidation deadline's timers (runtime/server-limits.ts). */
  private readonly deadlines: InvalidationDeadlines;
  /** Admin answers, status views and gauges (runtime/server-views.ts). */
  private readonly views: ServerViews;
  /** Connections are numbered for the machine (a session names the connection it is attached to). */
  private connSeq = 0;
  private readonly connIds = new WeakMap<MessageConnection, number>();
  private readonly clock: Clock;
  private stopping = false;
  private readonly fenceAgent: FenceAgent;
  private readonly limits: ServerLimits;
  /** Metrics (runtime/metrics.ts); `counters` are its plain cumulative counts, bumped on the hot path. */
  readonly metrics: Metrics;
  private readonly counters: ServerCounts;
  /** The hottest keys by lock messages, for the status page (bounded, runtime/hot-keys.ts). */
  readonly hotKeys = new HotKeys();
  private readonly startedAtMs = performance.now();
  /**
   * The lock request being handed to the lock table, and when it was received: a grant or refusal of it
   * carried out meanwhile (the usual case: a free key) is matched here, with no map entry to add and remove.
   */
  private readonly answering: { session: ClientSession | null; id: number; receivedAtMs: number; answered: boolean } = {
    session: null,
    id: 0,
    receivedAtMs: 0,
    answered: false,
  };
  /** Lines about connections that never greeted: a flood of them logs one line a second. */
  private readonly connectionLog: Logger;

  private constructor(
    private readonly options: ServerOptions,
    private readonly writeSeq: ReservedWriteSeq,
    grantTags: GrantTags,
    private readonly storeWatch: StoreWatch,
  ) {
    this.host = options.host;
    this.port = options.port;
    this.clock = options.clock ?? realClock;
    const parts = options.parts ?? {};
    // Right after open, the counter stands at the durable high-water mark read at start: every token any
    // server ever handed out is at or below it, so a recovery report above it is a lie (DESIGN §9).
    // Grant proofs name this server's term, under the cluster's key from the store (core/grant-tags.ts).
    this.locks = new LockServer({
      writeSeq: parts.wrapWriteSeq?.(writeSeq) ?? writeSeq,
      recoveredWriteSeqMax: writeSeq.lastIssued,
      tags: grantTags,
      term: options.term,
    });
    this.fenceAgent = options.fenceAgent ?? localFenceAgent();
    const tracker = new RecoveryTracker();
    parts.recovery?.(tracker);
    this.machine = new ServerMachine({
      term: options.term,
      reconnectTimeoutMs: options.reconnectTimeoutMs ?? RECONNECT_TIMEOUT_MS_DEFAULT,
      recoveryTimeoutMs: options.recoveryTimeoutMs ?? RECOVERY_TIMEOUT_MS_DEFAULT,
      needsOwner: this.fenceAgent.needsPeerProcess === true,
      recovery: tracker,
    });
    parts.machine?.(this.machine);
    const carry = (effects: LockServerEffect[]): void => this.apply(effects);
    this.carry = parts.wrapLockEffects?.(carry) ?? carry;
    this.limits = serverLimits(options.limits);
    // DESIGN §9 store outages: grants of write modes wait while a reservation is pending (the lock table
    // asks `available()`), and resume here once it lands; failed reservations are retried with back-off.
    writeSeq.attach({
      onAvailable: () => {
        if (!this.stopping) this.carry(this.locks.onWriteSeqsAvailable());
      },
      onError: (error) => {
        if (!this.stopping) this.options.log(`term ${options.term}: reserving write seqs failed (retrying): ${error.message}`, { level: "warn" });
      },
      onExhausted: (reason) => this.fatal(reason),
    });
    this.connectionLog = throttledLogger(options.log, CONNECTION_LOG_INTERVAL_MS);
    this.metrics = options.metrics ?? new Metrics();
    this.counters = this.metrics.counts;
    // What the parts (runtime/server-*.ts) share of this server; each host below adds its own hooks.
    const base = {
      machine: this.machine,
      locks: this.locks,
      limits: this.limits,
      store: options.store,
      clock: this.clock,
      log: options.log,
      metrics: this.metrics,
      counters: this.counters,
      fenceAgent: this.fenceAgent,
      isStopping: () => this.stopping,
      input: (input: ServerInput) => this.input(input),
    };
    this.views = new ServerViews({
      ...base,
      term: options.term,
      slot: options.slot,
      address: formatAddress(this.host, this.port),
      sessions: this.sessions,
      hotKeys: this.hotKeys,
      startedAtMs: this.startedAtMs,
      recoveryTimeoutMs: options.recoveryTimeoutMs ?? RECOVERY_TIMEOUT_MS_DEFAULT,
      members: () => options.describeMembers?.(),
      writeSeq: () => writeSeq.lastIssued,
      refuse: (connection, message, error, reason) => this.refuse(connection, message, error, reason),
    });
    this.metrics.attachServer(this.views.gauges);
    this.greetings = new ServerGreetings<ClientSession>({
      ...base,
      config: options.config,
      greetingKey: options.greetingKey ?? null,
      term: options.term,
      answer: (connection, header, error, payload) => this.answerDirect(connection, header, error, payload),
      connId: (connection) => this.connIds.get(connection)!,
      resume: (rid, connection, conn) => this.attach(this.sessions.get(rid)!, connection, conn),
      begin: (rid, connection, conn, continuesPredecessor) => this.newSession(rid, connection, conn, { continuesPredecessor }),
      lost: (session, connection, reason) => this.onDisconnect(session, connection, reason),
      requestLocks: (session) => this.recovery.request(session, null),
    });
    this.recovery = new LockRecovery<ClientSession>({
      ...base,
      term: options.term,
      startedAtMs: this.startedAtMs,
      carry: (effects) => this.carry(effects),
      request: (session, cmd, payload) => this.request(session, cmd, payload),
      protocolError: (session, reason) => this.protocolError(session, reason),
      clientLimitViolation: (session, what) => clientLimitViolation(this.counters, this.options.log, session, what),
    });
    this.outcomes = new MachineOutcomes({ ...base, fenceTimeoutMs: options.fenceTimeoutMs });
    this.deadlines = new InvalidationDeadlines({
      ...base,
      isCurrent: (session) => !this.stopping && this.sessions.get(session.rid) === session,
      stuck: (rid) => this.input({ type: "client-stuck", rid }),
    });
  }

  /**
   * Prepares a server for `term`: reserves write seqs above everything ever issued, and prepares lock
   * recovery for every client the store remembers (reference §5.2). It accepts no connection until the
   * owner (member or embedded driver) hands sockets to `accept()`. Every store call of the server is
   * watched (runtime/store-watch.ts): a store that hangs or keeps failing for `limits.storeUnreachableMs`
   * rejects the start, or, once started, stops the server through `onFatal` so its member resigns.
   */
  static start(options: ServerOptions): Promise<LockServerRuntime> {
    return startWatched(options, {
      create: async (watched, watch) => {
        const writeSeq = await ReservedWriteSeq.open(watched.store, options.writeSeqBlock ?? SEQ_RESERVE_BLOCK, options.clock);
        return new LockServerRuntime(watched, writeSeq, new GrantTags(await watched.store.grantTagKey()), watch);
      },
      begin: (server) => server.startRecovery(),
      fatal: (server, reason) => server.fatal(reason),
    });
  }

  private async startRecovery(): Promise<void> {
    const records = await this.options.store.listClients();
    this.run(this.machine.start(records));
    this.options.parts?.lockServer?.(this.locks);
  }

  get address(): string {
    return formatAddress(this.host, this.port);
  }

  get term(): bigint {
    return this.options.term;
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  get recovering(): boolean {
    return this.machine.recovering;
  }

  /** Drops every connection and forgets all volatile state; clients keep theirs for the next server. */
  stop(): Promise<void> {
    if (this.stopping) return Promise.resolve();
    this.stopping = true;
    this.metrics.detachServer(this.views.gauges);
    this.writeSeq.close();
    this.storeWatch.close();
    this.machine.input({ type: "stop" }); // B36, B38: no recovery or fence state outlives a server
    this.outcomes.stop();
    for (const session of this.sessions.values()) this.deadlines.clear(session);
    for (const connection of this.connections) connection.destroy("server stopping");
    this.greetings.stop();
    return Promise.resolve();
  }

  private fatal(reason: string): void {
    if (this.stopping) return;
    this.options.log(`term ${this.options.term}: stopping the lock server: ${reason}`, { level: "error" });
    void this.stop();
    this.options.onFatal?.(reason);
  }

  // ---------------------------------------------------------------- connections and greetings

  /** Serves one accepted socket (paused; the first message must be a greeting). */
  accept(socket: net.Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    this.serve(new FramedConnection(socket));
  }

  /** Serves one accepted connection, not started yet (the first message must be a greeting). */
  serve(connection: MessageConnection): void {
    if (this.stopping) {
      connection.destroy("server stopping");
      return;
    }
    this.connections.add(connection);
    const conn = ++this.connSeq;
    this.connIds.set(connection, conn);
    serveConnection<ClientSession>(connection, {
      clock: this.clock,
      greetingTimeoutMs: this.limits.greetingTimeoutMs,
      clusterId: this.options.config.clusterId,
      connectionLog: this.connectionLog,
      isStopping: () => this.stopping,
      onGreetingTimeout: () => this.counters.greetingTimeouts++,
      answer: (header, error, payload) => this.answerDirect(connection, header, error, payload),
      refuse: (message, error, reason) => this.refuse(connection, message, error, reason),
      greet: (header, greeting, nonces) => this.greetings.greet(connection, conn, header, greeting, nonces),
      onAdmin: (message) => this.views.onAdmin(connection, message),
      onMessage: (session, message) => this.onClientMessage(session, connection, message),
      onClose: (session, reason) => {
        this.connections.delete(connection);
        if (session !== null) this.onDisconnect(session, connection, reason);
      },
    });
  }

  /** Answers a request on a connection that has no session (greeting phase, admin). */
  private answerDirect(connection: MessageConnection, request: Message["header"], error: WireError, payload: Body): void {
    connection.send({
      header: { seq: 1, ack: request.seq, id: request.id, cmd: request.cmd, response: true, error },
      payload,
    });
  }

  private refuse(connection: MessageConnection, message: Message, error: WireError, reason: string): void {
    if (error === WireError.EPROTO) this.counters.protocolErrors++;
    if (!message.header.response) this.answerDirect(connection, message.header, error, errorBody(reason));
    this.options.log(`closing connection from ${connection.remoteAddress}: ${reason}`);
    connection.close(reason);
  }

  private newSession(rid: Rid, connection: MessageConnection, conn: number, options: { continuesPredecessor?: boolean }): ClientSession {
    const session: ClientSession = {
      rid,
      state: this.machine.session(rid)!,
      reliable: new WireSession(options),
      connection: null,
      conn,
      current: false,
      invalidations: new Map(),
      invalidationTimer: null,
      requestsReceivedAt: new Map(),
    };
    this.options.parts?.session?.(session.reliable);
    this.addSession(session);
    this.attach(session, connection, conn);
    return session;
  }

  /** `sessions` changes only here and in `removeSession`, which keep each session's `current` true to it. */
  private addSession(session: ClientSession): void {
    const previous = this.sessions.get(session.rid);
    if (previous !== undefined) previous.current = false;
    this.sessions.set(session.rid, session);
    session.current = true;
  }

  private removeSession(rid: Rid): void {
    const session = this.sessions.get(rid);
    if (session === undefined) return;
    session.current = false;
    this.sessions.delete(rid);
  }

  private attach(session: ClientSession, connection: MessageConnection, conn: number): ClientSession {
    const previous = session.connection;
    session.connection = connection;
    session.conn = conn;
    previous?.close("replaced by a newer connection from the same client");
    return session;
  }

  private onDisconnect(session: ClientSession, connection: MessageConnection, reason: string): void {
    if (session.connection !== connection || this.sessions.get(session.rid) !== session) return; // replaced, or dropped
    session.connection = null;
    session.reliable.detach();
    if (this.stopping) return;
    this.input({ type: "disconnected", rid: session.rid, conn: session.conn, reason });
  }

  // ---------------------------------------------------------------- the machine's effects

  private input(input: ServerInput): void {
    this.run(this.machine.input(input));
  }

  /** Carries out the server machine's effects, in order. */
  private run(effects: ServerEffect[]): void {
    for (const effect of effects) {
      switch (effect.type) {
        case "refuse-greeting":
          this.greetings.refused(effect);
          break;
        case "accept-greeting":
          this.greetings.accepted(effect);
          break;
        case "drop-session": {
          const session = this.sessions.get(effect.rid);
          if (session === undefined) break;
          this.deadlines.clear(session);
          this.removeSession(effect.rid);
          session.connection?.close(effect.reason);
          break;
        }
        case "forget-session":
          this.removeSession(effect.rid);
          break;
        case "persist-record":
          this.outcomes.persistRecord(effect);
          break;
        case "delete-record":
          this.outcomes.deleteRecord(effect);
          break;
        case "hold-locks":
          this.locks.holdForRecovery();
          break;
        case "forget-locks": {
          const session = this.sessions.get(effect.rid);
          if (session !== undefined) this.deadlines.clear(session);
          this.carry(this.locks.onClientGone(effect.rid));
          break;
        }
        case "resume-locks":
          this.recovery.finished();
          break;
        case "answer-farewell": {
          const session = this.sessions.get(effect.rid);
          if (session === undefined) break;
          for (const id of effect.ids) this.respond(session, Command.FAREWELL, id, { kind: "farewell", body: {} });
          break;
        }
        case "set-timer":
          this.outcomes.setTimer(effect);
          break;
        case "clear-timer":
          this.outcomes.clearTimer(effect);
          break;
        case "fence":
          this.outcomes.fence(effect);
          break;
        case "fatal":
          this.fatal(effect.reason);
          break;
        case "log":
          this.options.log(effect.line, effect.rid === undefined ? { level: effect.level } : { level: effect.level, rid: ridToHex(effect.rid) });
          break;
        case "refused-input":
          this.options.log(`server machine: ${effect.input} changed nothing: ${effect.reason}`, { level: "warn" });
          break;
      }
    }
  }

  // ---------------------------------------------------------------- sending

  private send(session: ClientSession, message: Message | null): void {
    // A detached session keeps the message for the next attach (reconnect); nothing is lost here.
    if (message !== null) session.connection?.send(message);
    const kept = session.reliable.unansweredRequests + session.reliable.unackedResponses;
    if (kept > this.limits.sessionUnackedMax && this.sessions.get(session.rid) === session) {
      // A client that neither answers nor acknowledges: fenced and reclaimed like one that vanished (DESIGN §9).
      logUnacknowledged(this.options.log, session, kept, this.limits.sessionUnackedMax);
      this.input({ type: "client-stuck", rid: session.rid });
    }
  }

  private respond(session: ClientSession, cmd: Command, id: number, payload: Body, error: WireError = WireError.NONE): void {
    if (!session.reliable.owes(id)) {
      // The lock table answers a request this session never received: the client greeted again as a new
      // client or at first contact while its previous session's requests were queued here. Its own doing.
      this.protocolError(session, `an answer to request ${id} of a session this client replaced by a new greeting`);
      return;
    }
    this.send(session, session.reliable.respond(cmd, id, payload, error));
  }

  /**
   * The peer broke the protocol: count it, log it, close its connection. A greeted client is then like
   * one that vanished: it may reconnect in time, or it is fenced and reclaimed (onDisconnect).
   */
  private protocolError(session: ClientSession | null, reason: string, connection = session?.connection ?? null): void {
    this.counters.protocolErrors++;
    const who = session ? `client ${ridToHex(session.rid)} (${session.state.name})` : `connection from ${connection?.remoteAddress ?? "?"}`;
    this.options.log(`protocol error from ${who}: ${reason}; closing its connection`, { level: "warn" });
    connection?.close(`protocol error: ${reason}`);
  }

  private request(session: ClientSession, cmd: Command, payload: Body): void {
    this.send(session, session.reliable.request(cmd, payload).message);
  }

  // ---------------------------------------------------------------- client messages

  private onClientMessage(session: ClientSession, connection: MessageConnection, message: Message): void {
    if (session.connection !== connection) return;
    const { header, payload } = message;
    const verdict = session.reliable.receive(header);
    if (verdict === "protocol-error") {
      this.protocolError(session, session.reliable.problem ?? "bad header");
      return;
    }
    if (verdict !== "deliver") return; // duplicate, or an answer to something we no longer wait for
    switch (payload.kind) {
      case "lock": {
        // A leaving client's late invalidation answers and stale requests: its entries go with the farewell.
        if (session.state.leaving) return;
        const body = payload.body;
        if (header.response) {
          this.counters.responses++;
          this.hotKeys.count(body.key, "responses");
          const effects = this.locks.onInvalidateResponse(session.rid, body);
          if (!effects.some((e) => e.type === "protocol-error" && e.rid === session.rid)) this.deadlines.answered(session, body.key);
          this.carry(effects);
        } else {
          if (this.overClientLimits(session, body.key)) return;
          this.counters.requests++;
          this.hotKeys.count(body.key, "requests");
          // A request the table answers at once (a cold grant, a refusal) needs no entry in
          // `requestsReceivedAt`: `apply` finds it in `answering`; one that waits gets its entry afterwards.
          const answering = this.answering;
          answering.session = session;
          answering.id = header.id;
          answering.receivedAtMs = performance.now();
          answering.answered = false;
          // The body is the request (its writeSeq is not read); the table keeps none of it but the key.
          this.carry(this.locks.onRequest(session.rid, header.id, body));
          answering.session = null;
          if (!answering.answered) {
            // Bounded: a request the table refuses as a protocol error is never answered (its entry would stay).
            if (session.requestsReceivedAt.size >= this.limits.clientRequestsMax) session.requestsReceivedAt.clear();
            session.requestsReceivedAt.set(header.id, answering.receivedAtMs);
          }
        }
        return;
      }
      case "recover-response":
        this.recovery.onResponse(session, payload.body.locks);
        return;
      case "farewell":
        if (!header.response) this.input({ type: "farewell", rid: session.rid, id: header.id });
        return;
      default:
        this.protocolError(session, `unexpected ${payload.kind} message from a client`);
    }
  }

  // ---------------------------------------------------------------- per-client limits (DESIGN §9; runtime/server-limits.ts)

  /**
   * Requests in flight and lock entries per client: a lock request beyond either limit is a protocol
   * error for that client's connection; the table is not touched. A request on a key the client already
   * has an entry on adds no key, so a client at its entry limit can still release or change modes.
   */
  private overClientLimits(session: ClientSession, key: Key): boolean {
    const load = this.locks.clientLoad(session.rid);
    if (load.requests >= this.limits.clientRequestsMax) {
      clientLimitViolation(this.counters, this.options.log, session, `more than ${this.limits.clientRequestsMax} lock requests in flight`);
      return true;
    }
    if (load.entries >= this.limits.clientLocksMax && !this.locks.hasEntry(session.rid, key)) {
      clientLimitViolation(this.counters, this.options.log, session, `more than ${this.limits.clientLocksMax} lock entries`);
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------- lock table effects

  /** Sends the lock table's effects, in order. */
  private apply(effects: LockServerEffect[]): void {
    const answering = this.answering;
    for (const effect of effects) {
      if (effect.type === "refuted") {
        // A liar's recovery report (core/lock-server.ts): its connection closes, and it is fenced and
        // reclaimed whether or not it is still connected.
        const liar = this.sessions.get(effect.rid);
        if (liar !== undefined) this.protocolError(liar, effect.error.message);
        this.input({ type: "recovery-refuted", rid: effect.rid, reason: effect.error.message });
        continue;
      }
      // The answer to the request being handled goes to its session with no lookup by rid (a bigint's
      // hash is computed per Map lookup) while that session is still the one `sessions` holds.
      const session =
        effect.type === "grant" &&
        effect.requestId === answering.id &&
        answering.session !== null &&
        answering.session.current &&
        effect.rid === answering.session.rid
          ? answering.session
          : this.sessions.get(effect.rid);
      if (!session) continue; // departed: it will be reclaimed (or already was), which re-runs progress (B3)
      switch (effect.type) {
        case "grant": {
          this.counters.grants++;
          this.hotKeys.count(effect.grant.key, "grants");
          let receivedAtMs: number | undefined;
          if (this.answering.session === session && this.answering.id === effect.requestId) {
            this.answering.answered = true;
            receivedAtMs = this.answering.receivedAtMs;
          } else {
            receivedAtMs = session.requestsReceivedAt.get(effect.requestId);
            if (receivedAtMs !== undefined) session.requestsReceivedAt.delete(effect.requestId);
          }
          if (receivedAtMs !== undefined) this.metrics.grantLatencyOf(effect.grant.newMode).observe((performance.now() - receivedAtMs) / 1000);
          const grant = effect.grant;
          // Written out, not `{ ...grant, noQueue: false }` (see "invalidate" below).
          this.respond(session, Command.LOCK, effect.requestId, {
            kind: "lock",
            body: {
              key: grant.key,
              oldMode: grant.oldMode,
              newMode: grant.newMode,
              writeSeq: grant.writeSeq,
              noQueue: false,
              grantTerm: grant.grantTerm,
              grantNo: grant.grantNo,
              grantTag: grant.grantTag,
            },
          });
          break;
        }
        case "invalidate": {
          const invalidation = effect.invalidation;
          this.counters.invalidations++;
          this.hotKeys.count(invalidation.key, "invalidations");
          this.deadlines.sent(session, invalidation.key);
          // Written out, not spread: a spread copy plus a defined field takes a fresh hidden class, which
          // the encoder's field reads then look up in V8's runtime (measured: bench/server-cost.ts).
          this.request(session, Command.LOCK, {
            kind: "lock",
            body: {
              key: invalidation.key,
              oldMode: invalidation.oldMode,
              newMode: invalidation.newMode,
              writeSeq: 0n,
              noQueue: false,
              grantTerm: 0n,
              grantNo: 0,
              grantTag: 0,
            },
          });
          break;
        }
        case "refuse":
          this.counters.refusals++;
          if (this.answering.session === session && this.answering.id === effect.requestId) this.answering.answered = true;
          else session.requestsReceivedAt.delete(effect.requestId);
          this.respond(session, Command.LOCK, effect.requestId, errorBody("the lock is busy"), WireError.EAGAIN);
          break;
        case "protocol-error":
          this.protocolError(session, effect.error.message);
          break;
      }
    }
  }

  // ---------------------------------------------------------------- admin and status (runtime/server-views.ts)

  /** The status answer (`keylock status`; bounded, runtime/server-views.ts). */
  status(): AdminStatus {
    return this.views.status();
  }

  /** What the status page shows of this server (runtime/status-page.ts; bounded, runtime/server-views.ts). */
  operatorStatus(clientsMax: number, hotMax: number): OperatorStatus {
    return this.views.operatorStatus(clientsMax, hotMax);
  }

  /** For tests and benchmarks: the lock table's size. */
  get lockTable(): { keys: number; entries: number } {
    return { keys: this.locks.keyCount, entries: this.locks.entryCount };
  }
}

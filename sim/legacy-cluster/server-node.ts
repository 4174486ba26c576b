/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * The member running the lock server, as src/runtime/server.ts composes the pure machines: the real
 * `LockServer`, `RecoveryTracker`, `FenceTracker` and one real `ReliableSession` per client, fed from
 * simulated sockets, a simulated store, timers on the virtual clock and a simulated fence agent. Each
 * method below names the server.ts method it mirrors; the logic is the same, step for step, so a flaw
 * in how the runtime composes the machines shows up here as a checker violation.
 *
 * Guarantees (as server.ts):
 * - Greetings are classified by `classifyGreeting` (reference §6.11): a reconnect re-attaches the kept
 *   session (exactly-once), a first contact gets a new session and, when the client is pending lock
 *   recovery, a recover request right after the greeting answer; a forgotten or fenced client is
 *   refused EFENCED; a client greeting a new server without a record is refused EFENCED unless it is
 *   resending its farewell.
 * - Persist before you promise: a client's record is inserted (store write) before its greeting is
 *   answered; a farewell is answered after the entries are gone and the record deleted; write seqs are
 *   reserved in the store before they are handed out (`SimWriteSeq` mirrors runtime/write-seq.ts).
 * - Record writes for one client are serialised (server.ts recordOp): an insert never lands after the
 *   delete of that client's reclaim. After its greeting's insert, a client being fenced or reclaimed by
 *   this server is refused EFENCED (a reclaimed one's record is deleted again); a client whose socket
 *   closed during its greeting gets a session and the reconnect timer (it is fenced unless it returns).
 * - Recovery: every recorded client is prepared (greeting + locks) and the table held until all finished
 *   (recover batches, empty batch = done) or were fenced and reclaimed; the recovery deadline fences the
 *   laggards (client_recovery). A disconnected session waits `reconnectTimeoutUs`, then is fenced
 *   (client_reconnect). Fenced → reclaim: record deleted first, then entries removed, recovery finished.
 *   A fence error stops the server; the member starts a new one (new term) after a delay.
 * - A farewell waits for that client's lock recovery (B5). A leaving session (greeted with the farewell
 *   flag, or sent a farewell) ignores every lock message (requests and invalidation answers).
 *
 * What survives a crash: only the store (mounted-client records, the write-seq high-water mark, the
 * last term). A crash loses the lock table, sessions, recovery and fence state and every timer; store
 * writes in flight at the crash are each committed or lost (a coin flip); record writes still queued
 * behind another (recordOp) never started and are lost. A stop (fence error) flushes store writes in
 * flight and queued, then forgets the same volatile state. Every timer and store continuation is
 * tied to the incarnation that started it and is ignored by later ones.
 *
 * Relies on: world.ts for the network, the clock, the checkers and the clients; one server at a time
 * (the sim has a single member, restarted with a strictly greater term unless mutated).
 */
import { InvariantError } from "../../src/core/errors.js";
import { FenceTracker, type FenceReason } from "../../src/core/fencing.js";
import { ridToHex, type Key } from "../../src/core/keys.js";
import { RECOVER_BATCH_LOCKS_MAX, type RecoveredLock, type Rid } from "../../src/core/lock-messages.js";
import { LockServer, type LockServerEffect, type WriteSeqSource } from "../../src/core/lock-server.js";
import { RecoveryTracker } from "../../src/core/recovery.js";
import { classifyGreeting } from "../../src/core/session.js";
import { WireSession } from "../../src/protocol/session.js";
import { Command, WireError, type Body, type Message } from "../../src/protocol/messages.js";
import {
  callMachine,
  fmtDown,
  fmtUp,
  fmtWire,
  type DownMessage,
  type Timer,
  type UpMessage,
} from "./base.js";
import type { SimGreeting, Socket } from "./network.js";
import type { Prng } from "../prng.js";
import type { World } from "./world.js";

export interface ServerConfig {
  /** A disconnected client's session waits this long for it to reconnect, then it is fenced. */
  readonly reconnectTimeoutUs: number;
  /** Every recorded client must greet and recover its locks within this, or it is fenced. */
  readonly recoveryTimeoutUs: number;
  /** Write seqs reserved per store write (runtime/write-seq.ts SEQ_RESERVE_BLOCK). */
  readonly seqBlock: bigint;
  /** A store write completes after uniform [0, storeLatencyMaxUs]. */
  readonly storeLatencyMaxUs: number;
  /** After a crash or stop the member starts a new server after uniform [restartMinUs, restartMaxUs]. */
  readonly restartMinUs: number;
  readonly restartMaxUs: number;
  /** The fence agent answers after uniform [0, fenceDelayMaxUs]. */
  readonly fenceDelayMaxUs: number;
  /** A fence asked for before the world heals fails with this chance (then the server stops, reference §8.4). */
  readonly fenceFailChance: number;
  /** The agent kills the fenced client (the local agent); otherwise it only cuts it off the resource. */
  readonly fenceKills: boolean;
}

/** A mounted-client record (the sim's store keeps what the checkers need). */
export interface StoredClient {
  readonly rid: Rid;
  readonly client: number;
}

/** The durable part of the world: what a server crash does not lose. */
export class SimStore {
  readonly clients = new Map<Rid, StoredClient>();
  seqHighWater = 0n;
  /** The last term a server ran with (the election's persisted term). */
  lastTerm = 0n;
}

interface StoreOp {
  readonly what: string;
  readonly commit: () => void;
  decided: boolean;
}

/** A record write waiting for the previous one of the same client (server.ts recordOp). */
interface QueuedRecordOp {
  readonly what: string;
  readonly commit: () => void;
  readonly then: () => void;
}

/** Mirrors runtime/write-seq.ts ReservedWriteSeq over the sim's store. */
export class SimWriteSeq implements WriteSeqSource {
  #last: bigint;
  #reserved: bigint;
  #reserving = false;
  /** available() answered false since tokens were last in hand (write-seq.ts `starved`). */
  #starved = false;
  #waiters: (() => void)[] = [];
  readonly #block: bigint;
  readonly #node: ServerNode;

  constructor(node: ServerNode, start: bigint, block: bigint) {
    this.#node = node;
    this.#last = start;
    this.#reserved = start;
    this.#block = block;
  }

  get last(): bigint {
    return this.#last;
  }

  get reserved(): bigint {
    return this.#reserved;
  }

  get needsReservation(): boolean {
    return this.#reserved - this.#last < this.#block / 2n;
  }

  available(): boolean {
    if (this.#last < this.#reserved) return true;
    this.#starved = true;
    this.reserve();
    return false;
  }

  next(): bigint {
    if (this.#last >= this.#reserved) {
      throw new InvariantError(
        `write seq ${this.#last + 1n} would pass the reserved high-water mark ${this.#reserved}`,
      );
    }
    this.#last += 1n;
    if (this.needsReservation) this.reserve();
    return this.#last;
  }

  observe(seen: bigint): void {
    if (seen <= this.#last) return;
    this.#last = seen;
    if (this.needsReservation) this.reserve();
  }

  /** Reserves one block above what has been issued; concurrent calls share one store write. */
  reserve(then?: () => void): void {
    if (then !== undefined) this.#waiters.push(then);
    if (this.#reserving) return;
    this.#reserving = true;
    const target = this.#last + this.#block;
    const store = this.#node.store;
    this.#node.storeOp(
      `raise seq high-water to ${target}`,
      () => {
        if (target > store.seqHighWater) store.seqHighWater = target;
      },
      () => {
        if (store.seqHighWater > this.#reserved) this.#reserved = store.seqHighWater;
        this.#reserving = false;
        if (this.needsReservation) this.reserve(); // observe() may have raised `last` meanwhile
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const waiter of waiters) waiter();
        if (this.#starved && this.#last < this.#reserved) {
          this.#starved = false;
          this.#node.onWriteSeqsAvailable();
        }
      },
    );
  }
}

/** server.ts ClientSession. */
interface SimSession {
  readonly rid: Rid;
  readonly client: number;
  readonly reliable: WireSession;
  socket: Socket | null;
  reconnectTimer: Timer | null;
  farewellIds: number[];
  farewellDone: boolean;
  /** The client said farewell (or greeted with the farewell flag): its lock traffic is moot and ignored. */
  leaving: boolean;
}

type SocketState =
  | { readonly kind: "accepted" }
  | { readonly kind: "greeting"; readonly backlog: Message[] }
  | { readonly kind: "session"; readonly session: SimSession };

export type ServerStatus = "down" | "starting" | "up" | "stopping";

export class ServerNode {
  readonly store = new SimStore();
  status: ServerStatus = "down";
  term = 0n;
  /** Bumped by every start, crash and stop; continuations of an older one are ignored. */
  incarnation = 0;
  locks: LockServer;
  recovery = new RecoveryTracker();
  fences = new FenceTracker();
  readonly sessions = new Map<Rid, SimSession>();
  /** Clients known from the store at start (server.ts `records`). */
  readonly records = new Map<Rid, StoredClient>();
  writeSeq: SimWriteSeq;
  readonly #world: World;
  readonly #config: ServerConfig;
  readonly #prng: Prng;
  readonly #sockets = new Map<Socket, SocketState>();
  #recoveryTimer: Timer | null = null;
  /** server.ts `reclaiming`: a reclaim loop is running. */
  #reclaiming = false;
  /** server.ts `recordOps`: per client with a record write in flight, the writes queued behind it. */
  readonly #recordOps = new Map<Rid, QueuedRecordOp[]>();
  /** server.ts `reclaimed`: clients this server reclaimed (refused EFENCED if their greeting's insert lands). */
  readonly #reclaimed = new Set<Rid>();
  readonly #pendingOps = new Set<StoreOp>();
  // Mutation state (see base.ts MUTATIONS).
  /** grant-while-invalidating: invalidations answered by the node itself whose real answer must be swallowed. */
  readonly #fakedAnswers = new Set<string>();
  /** null-compatible-within-client: (client, key) with a null request queued. */
  readonly #ownNullPending = new Set<string>();
  #writeGrants = 0;
  #lastWriteSeqSent = 0n;
  #queuedRequests = 0;

  constructor(world: World, config: ServerConfig, prng: Prng) {
    this.#world = world;
    this.#config = config;
    this.#prng = prng;
    this.writeSeq = new SimWriteSeq(this, 0n, config.seqBlock);
    this.locks = new LockServer({ writeSeq: this.writeSeq });
  }

  get config(): ServerConfig {
    return this.#config;
  }

  /** Accepting connections (server.ts: after `start()` resolved and until `stop()`). */
  get up(): boolean {
    return this.status === "up";
  }

  /** Recovery over and the table resumed: the only time grants and invalidations may be decided. */
  get recoveryDone(): boolean {
    return this.up && this.recovery.finished;
  }

  // ---------------------------------------------------------------- lifecycle (member + server.ts start/stop)

  /** LockServerRuntime.start: reserve write seqs above everything issued, then prepare recovery. */
  start(): void {
    const world = this.#world;
    if (this.status !== "down") throw new InvariantError(`sim: server start while ${this.status}`);
    this.incarnation++;
    const store = this.store;
    // The election gives every server a strictly greater term (B22), persisted before the server starts.
    this.term = world.mutation === "reuse-term" && store.lastTerm > 0n ? store.lastTerm : store.lastTerm + 1n;
    store.lastTerm = this.term;
    this.status = "starting";
    this.recovery = new RecoveryTracker();
    this.fences = new FenceTracker();
    this.sessions.clear();
    this.records.clear();
    this.#sockets.clear();
    this.#fakedAnswers.clear();
    this.#ownNullPending.clear();
    this.#reclaiming = false;
    this.#recordOps.clear();
    this.#reclaimed.clear();
    const start = world.mutation === "reissue-write-seqs" ? 0n : store.seqHighWater;
    this.writeSeq = new SimWriteSeq(this, start, this.#config.seqBlock);
    this.locks = new LockServer({ writeSeq: this.writeSeq });
    world.trace.add(
      `S start term ${this.term}: write seqs from ${start} (stored high-water ${store.seqHighWater})`,
    );
    world.checkers.serverStarted(this.term, start);
    this.writeSeq.reserve(() => {
      this.#startRecovery();
      this.status = "up";
      world.trace.add(
        `S up term ${this.term}${this.recovery.finished ? "" : `, waiting for ${this.recovery.pendingCount} client(s) to recover`}`,
      );
      world.serverUp();
    });
  }

  /** server.ts startRecovery. */
  #startRecovery(): void {
    for (const record of this.store.clients.values()) {
      this.records.set(record.rid, record);
      this.recovery.prepare(record.rid, ["greeting", "locks"]);
    }
    if (this.records.size > 0) this.locks.holdForRecovery();
    this.#world.checkers.recoveryBegan(this.locks.recovering);
    if (this.recovery.begin()) return;
    this.#recoveryTimer = this.#timer(this.#config.recoveryTimeoutUs, () => this.#onRecoveryTimeout());
  }

  /**
   * The process dies: volatile state is gone, every socket ends abruptly (clients notice after up to
   * `detectMaxUs`, a silent death), store writes in flight commit or not. The member restarts it.
   */
  crash(detectMaxUs: number, lateChance: number): void {
    const world = this.#world;
    if (this.status === "down") return;
    world.trace.add(`S crash (term ${this.term})`);
    world.checkers.coverage.serverCrashes++;
    for (const op of this.#pendingOps) {
      op.decided = true;
      const committed = this.#prng.chance(0.5);
      world.trace.add(`S store write "${op.what}" ${committed ? "committed" : "lost"} at the crash`);
      if (committed) op.commit();
    }
    this.#pendingOps.clear();
    for (const queue of this.#recordOps.values()) {
      for (const op of queue) world.trace.add(`S store write "${op.what}" never started: lost at the crash`);
    }
    this.#recordOps.clear();
    for (const socket of this.#sockets.keys()) {
      world.network.close(socket, {
        graceful: false,
        lateChance,
        clientNoticeUs: this.#prng.int(0, detectMaxUs),
      });
    }
    this.#down();
  }

  /** server.ts fatal → stop: connections closed, recovery and fence state forgotten (B36, B38). */
  #fatal(reason: string): void {
    const world = this.#world;
    if (this.status === "stopping" || this.status === "down") return;
    world.trace.add(`S stopping the lock server: ${reason}`);
    world.checkers.coverage.serverStops++;
    this.status = "stopping";
    for (const op of this.#pendingOps) {
      op.decided = true;
      op.commit(); // flushed before the stop completes (B26)
    }
    this.#pendingOps.clear();
    // Record writes queued behind those run after them, still before the stop completes.
    for (const queue of this.#recordOps.values()) {
      for (const op of queue) {
        world.trace.add(`S store write "${op.what}" flushed at the stop`);
        op.commit();
      }
    }
    this.#recordOps.clear();
    for (const socket of this.#sockets.keys()) {
      world.network.close(socket, { graceful: true, clientNoticeUs: 0 });
    }
    this.recovery.shutdown();
    this.fences.stop();
    this.#down();
  }

  #down(): void {
    const world = this.#world;
    this.status = "down";
    this.incarnation++;
    this.#recoveryTimer = null;
    this.#sockets.clear();
    world.checkers.serverStopped();
    const delayUs = this.#prng.int(this.#config.restartMinUs, this.#config.restartMaxUs);
    world.trace.add(`S member: new server in ${delayUs}us`);
    world.clock.schedule(delayUs, () => {
      if (this.status === "down") this.start();
    });
  }

  /** A store write that completes after the store latency; `then` runs only in the same incarnation. */
  storeOp(what: string, commit: () => void, then: () => void): void {
    const op: StoreOp = { what, commit, decided: false };
    this.#pendingOps.add(op);
    const incarnation = this.incarnation;
    this.#world.clock.schedule(this.#prng.int(0, this.#config.storeLatencyMaxUs), () => {
      if (op.decided) return;
      op.decided = true;
      this.#pendingOps.delete(op);
      commit();
      if (incarnation === this.incarnation) then();
    });
  }

  /**
   * server.ts recordOp: a store write of one client's record, started once the previous one of that
   * client completed, so an insert can never land after its reclaim's delete.
   */
  #recordOp(rid: Rid, what: string, commit: () => void, then: () => void): void {
    const queue = this.#recordOps.get(rid);
    if (queue !== undefined) {
      queue.push({ what, commit, then });
      return;
    }
    this.#recordOps.set(rid, []);
    const run = (op: QueuedRecordOp): void => {
      this.storeOp(op.what, op.commit, () => {
        const next = this.#recordOps.get(rid)?.shift();
        if (next === undefined) this.#recordOps.delete(rid);
        else run(next);
        op.then();
      });
    };
    run({ what, commit, then });
  }

  #timer(delayUs: number, run: () => void): Timer {
    const incarnation = this.incarnation;
    return this.#world.clock.timer(delayUs, () => {
      if (incarnation === this.incarnation) run();
    });
  }

  // ---------------------------------------------------------------- sockets and greetings (server.ts accept/onGreeting)

  /** A client connected (the TCP accept): the socket is this server's until it ends. */
  accept(socket: Socket): void {
    if (!this.up) throw new InvariantError(`sim: ${socket.name} accepted while the server is ${this.status}`);
    this.#sockets.set(socket, { kind: "accepted" });
  }

  /** The first packet on a socket: the client's greeting. */
  receiveGreeting(socket: Socket, greeting: SimGreeting): void {
    const world = this.#world;
    const index = world.clientIndexOf(greeting.rid);
    const name = world.clients[index]!.name;
    if (this.#sockets.get(socket)?.kind !== "accepted") {
      world.trace.add(`S <- ${name} greeting on ${socket.name}: old socket, ignored`);
      return;
    }
    this.#sockets.set(socket, { kind: "greeting", backlog: [] });
    world.trace.add(
      `S <- ${name} greeting on ${socket.name} last term ${greeting.lastServerTerm}${greeting.farewell ? " farewell" : ""}`,
    );
    this.#onGreeting(socket, greeting, index);
  }

  receiveMessage(socket: Socket, message: Message): void {
    const world = this.#world;
    const state = this.#sockets.get(socket);
    if (state === undefined) {
      world.trace.add(`S <- ${socket.name} ${fmtWire(message)}: old socket, ignored`);
      world.checkers.coverage.staleDeliveries++;
      return;
    }
    if (state.kind === "accepted")
      throw new InvariantError(`sim: ${socket.name} sent ${fmtWire(message)} before its greeting`);
    if (state.kind === "greeting") {
      state.backlog.push(message);
      return;
    }
    this.#onClientMessage(state.session, socket, message);
  }

  /** server.ts onGreeting, after the greeting was validated. */
  #onGreeting(socket: Socket, greeting: SimGreeting, index: number): void {
    const world = this.#world;
    const rid = greeting.rid;
    const refuse = (code: "EFENCED" | "ENOTLEADER", reason: string): void => {
      world.trace.add(`S refuse ${world.clients[index]!.name} ${code}: ${reason}`);
      world.network.sendDown(socket, { kind: "greeting-refused", code, reason });
      this.#closeSocket(socket, reason);
    };
    const answer = (): void => {
      world.network.sendDown(socket, { kind: "greeting-response", serverTerm: this.term });
    };
    if (greeting.lastServerTerm > this.term) {
      // The client already met a newer server: this one is stale and must not serve it.
      refuse("ENOTLEADER", `this server (term ${this.term}) is older than one the client already met`);
      return;
    }
    const existing = this.sessions.get(rid);
    const kind = classifyGreeting(greeting, { term: this.term, hasSession: existing !== undefined });
    if (this.fences.has(rid)) {
      refuse("EFENCED", "this client is being fenced");
      return;
    }
    switch (kind) {
      case "forgotten":
        refuse("EFENCED", "this server forgot the client (it did not reconnect in time and was fenced)");
        return;
      case "reconnect": {
        const session = existing!;
        world.trace.add(`S ${world.clients[index]!.name} reconnects (term ${this.term}): resume its session`);
        world.checkers.greetingAccepted(index, kind, greeting.farewell);
        this.#attach(session, socket);
        answer();
        const kept = session.reliable.attach();
        world.checkers.coverage.resent += kept.length;
        for (const message of kept) this.#transmit(session, message);
        this.#flushBacklog(socket, session);
        return;
      }
      case "farewell-retry": {
        world.checkers.greetingAccepted(index, kind, greeting.farewell);
        const session = this.#newSession(rid, index, socket, greeting.farewell, true);
        world.checkers.coverage.farewellRetries++;
        answer();
        session.reliable.attach();
        this.#flushBacklog(socket, session);
        return;
      }
      case "new-client":
      case "first-contact": {
        const known = this.records.has(rid) || this.recovery.isPending(rid);
        const proceed = (): void => {
          if (!this.up) return;
          if (this.fences.has(rid) || this.#reclaimed.has(rid)) {
            // Fenced while its greeting was being recorded: it must not come back, and its record must not either.
            const refuseFenced = (): void => refuse("EFENCED", "this client was fenced while it greeted");
            if (this.#reclaimed.has(rid)) {
              this.#recordOp(
                rid,
                `delete client ${world.clients[index]!.name}`,
                () => this.store.clients.delete(rid),
                refuseFenced,
              );
            } else refuseFenced();
            return;
          }
          // The client's greeting socket is still "greeting" until the server noticed it closed (isClosed).
          const closed = this.#sockets.get(socket)?.kind !== "greeting";
          world.checkers.greetingAccepted(index, kind, greeting.farewell);
          if (existing) this.#dropSession(existing, "replaced by a first-contact greeting");
          const session = this.#newSession(rid, index, socket, greeting.farewell);
          if (closed) {
            // Gone before we could answer: it has a record now, so it must reconnect in time or be fenced.
            world.trace.add(`S ${world.clients[index]!.name}: ${kind} (term ${this.term}), but ${socket.name} closed`);
            this.#onDisconnect(session, socket);
            return;
          }
          world.trace.add(`S ${world.clients[index]!.name}: ${kind} (term ${this.term})`);
          answer();
          session.reliable.attach();
          this.recovery.finish(rid, ["greeting"]);
          if (this.recovery.isPending(rid, "locks")) this.#requestRecovery(session, null);
          this.#flushBacklog(socket, session);
        };
        if (kind === "new-client" || known) {
          // Persist before promising (B21: an existing record is success). Serialised with this rid's reclaim.
          this.#recordOp(
            rid,
            `insert client ${world.clients[index]!.name}`,
            () => this.store.clients.set(rid, { rid, client: index }),
            proceed,
          );
          return;
        }
        if (!greeting.farewell && !this.store.clients.has(rid)) {
          // A client greeting a new server without a record was reclaimed (fenced) by an earlier server.
          refuse("EFENCED", "no record of this client: it was fenced and its locks were reclaimed");
          return;
        }
        proceed();
        return;
      }
    }
  }

  /** The socket now belongs to `session`; messages that came with the greeting are handled now, in order. */
  #flushBacklog(socket: Socket, session: SimSession): void {
    const state = this.#sockets.get(socket);
    this.#sockets.set(socket, { kind: "session", session });
    if (state?.kind === "greeting")
      for (const message of state.backlog) this.#onClientMessage(session, socket, message);
  }

  #newSession(rid: Rid, client: number, socket: Socket, leaving: boolean, continuesPredecessor = false): SimSession {
    const session: SimSession = {
      rid,
      client,
      reliable: new WireSession({ continuesPredecessor }),
      socket: null,
      reconnectTimer: null,
      farewellIds: [],
      farewellDone: false,
      leaving,
    };
    this.sessions.set(rid, session);
    this.#attach(session, socket);
    return session;
  }

  /** server.ts attach. */
  #attach(session: SimSession, socket: Socket): void {
    session.reconnectTimer?.cancel();
    session.reconnectTimer = null;
    const previous = session.socket;
    session.socket = socket;
    if (previous !== null && previous !== socket)
      this.#closeSocket(previous, "replaced by a newer connection from the same client");
  }

  /** server.ts dropSession. */
  #dropSession(session: SimSession, why: string): void {
    session.reconnectTimer?.cancel();
    if (session.socket !== null) this.#closeSocket(session.socket, why);
    if (this.sessions.get(session.rid) === session) this.sessions.delete(session.rid);
  }

  /** connection.close(reason) by the server: graceful; its onClose (server.ts onDisconnect) runs next. */
  #closeSocket(socket: Socket, why: string): void {
    const world = this.#world;
    if (!socket.open) return;
    world.trace.add(`S close ${socket.name} (${world.clients[socket.client]!.name}): ${why}`);
    world.network.close(socket, { graceful: true, clientNoticeUs: 0 });
    const incarnation = this.incarnation;
    world.clock.schedule(0, () => {
      if (incarnation === this.incarnation) this.socketClosed(socket);
    });
  }

  /** The server noticed a socket ended (server.ts onClose → onDisconnect). */
  socketClosed(socket: Socket): void {
    const state = this.#sockets.get(socket);
    if (state === undefined) return;
    this.#sockets.delete(socket);
    if (state.kind === "session") this.#onDisconnect(state.session, socket);
  }

  /** server.ts onDisconnect. */
  #onDisconnect(session: SimSession, socket: Socket): void {
    const world = this.#world;
    if (session.socket !== socket) return; // an older connection replaced by a reconnect
    session.socket = null;
    session.reliable.detach();
    if (!this.up) return;
    if (session.farewellDone) {
      if (this.sessions.get(session.rid) === session) this.sessions.delete(session.rid);
      return;
    }
    const name = world.clients[session.client]!.name;
    world.trace.add(
      `S ${name} disconnected: waiting ${this.#config.reconnectTimeoutUs}us for it to reconnect`,
    );
    session.reconnectTimer = this.#timer(this.#config.reconnectTimeoutUs, () => {
      session.reconnectTimer = null;
      if (session.socket !== null || this.sessions.get(session.rid) !== session) return;
      this.#fence(session.rid, "client_reconnect");
    });
  }

  // ---------------------------------------------------------------- sending

  #transmit(session: SimSession, message: Message | null): void {
    if (message === null || session.socket === null) return; // kept for the next attach
    this.#world.network.sendDown(session.socket, { kind: "message", message });
  }

  #respond(
    session: SimSession,
    cmd: Command,
    id: number,
    payload: Body,
    error: WireError = WireError.NONE,
  ): void {
    // server.ts respond: an answer for an id this session does not owe (the client replaced its session by a
    // new greeting while its request was queued) is a protocol error there; honest clients never cause it.
    if (!session.reliable.owes(id)) {
      this.#world.checkers.protocolError(session.client, `an answer to request ${id} of a replaced session`);
    }
    this.#transmit(session, session.reliable.respond(cmd, id, payload, error));
  }

  #request(session: SimSession, cmd: Command, payload: Body): number {
    const { id, message } = session.reliable.request(cmd, payload);
    this.#transmit(session, message);
    return id;
  }

  // ---------------------------------------------------------------- client messages (server.ts onClientMessage)

  #onClientMessage(session: SimSession, socket: Socket, message: Message): void {
    const world = this.#world;
    if (session.socket !== socket) return;
    const { header, payload } = message;
    const name = world.clients[session.client]!.name;
    const verdict = session.reliable.receive(header);
    // server.ts closes the connection of a peer whose header is refused; honest sim clients never cause one.
    if (verdict === "protocol-error") world.checkers.protocolError(session.client, session.reliable.problem ?? "bad header");
    if (verdict !== "deliver") {
      world.trace.add(`S <- ${name} ${fmtWire(message)}: ${verdict}, dropped`);
      if (verdict === "duplicate") world.checkers.coverage.duplicatesDropped++;
      return;
    }
    switch (payload.kind) {
      case "lock": {
        const body = payload.body;
        if (session.leaving) {
          // A leaving client's late invalidation answers (B13) and stale requests: its entries go with the farewell.
          world.trace.add(`S <- ${name} ${fmtWire(message)}: the client is leaving, ignored`);
          world.checkers.notes.leavingLockMessages++;
          return;
        }
        if (header.response) {
          const up: UpMessage = {
            kind: "invalidate-response",
            requestId: header.id,
            response: { key: body.key, oldMode: body.oldMode, newMode: body.newMode },
          };
          world.trace.add(`S <- ${name} ${fmtUp(up)}`);
          world.checkers.upDelivered(session.client, up);
          const tag = `${session.client}:${body.key}`;
          if (world.mutation === "grant-while-invalidating" && this.#fakedAnswers.delete(tag)) {
            world.trace.add(`S mutation: swallow real ${name} response (already answered itself)`);
            return;
          }
          this.apply(
            callMachine("LockServer.onInvalidateResponse", () =>
              this.locks.onInvalidateResponse(session.rid, up.response),
            ),
          );
        } else {
          const request = {
            key: body.key,
            oldMode: body.oldMode,
            newMode: body.newMode,
            noQueue: body.noQueue,
          };
          const up: UpMessage = { kind: "request", requestId: header.id, request };
          world.trace.add(`S <- ${name} ${fmtUp(up)}`);
          world.checkers.upDelivered(session.client, up);
          if (world.mutation === "null-compatible-within-client" && request.newMode === "null") {
            this.#ownNullPending.add(`${session.client}:${request.key}`);
          }
          const locks = this.locks;
          const handle = (): void => {
            if (locks !== this.locks) return; // that server is gone
            this.apply(
              callMachine("LockServer.onRequest", () => locks.onRequest(session.rid, header.id, request)),
            );
          };
          if (world.mutation === "reorder-requests" && !request.noQueue && ++this.#queuedRequests % 3 === 0) {
            world.trace.add(`S mutation: set request#${header.id} of ${name} aside for 5ms`);
            world.clock.schedule(5_000, handle);
            return;
          }
          handle();
        }
        return;
      }
      case "recover-response": {
        const up: UpMessage = { kind: "recover-response", requestId: header.id, locks: payload.body.locks };
        world.trace.add(`S <- ${name} ${fmtUp(up)}`);
        this.#onRecoverResponse(session, payload.body.locks);
        return;
      }
      case "farewell":
        world.trace.add(`S <- ${name} ${header.response ? "farewell response?" : `farewell#${header.id}`}`);
        if (!header.response) this.#onFarewell(session, header.id);
        return;
      default:
        throw new InvariantError(`sim: unexpected ${payload.kind} message from ${name}`);
    }
  }

  // ---------------------------------------------------------------- recovery

  #requestRecovery(session: SimSession, after: Key | null): void {
    const id = this.#request(session, Command.LOCK_RECOVER, { kind: "recover-request", body: { after } });
    this.#world.trace.add(
      `S -> ${this.#world.clients[session.client]!.name} ${fmtDown({ kind: "recover-request", requestId: id, after })}`,
    );
  }

  /** server.ts onRecoverResponse. */
  #onRecoverResponse(session: SimSession, locks: readonly RecoveredLock[]): void {
    const world = this.#world;
    if (!this.recovery.isPending(session.rid, "locks")) {
      world.checkers.notes.unaskedBatches++;
      if (session.socket !== null)
        this.#closeSocket(session.socket, "a lock recovery batch nobody asked for");
      return;
    }
    if (locks.length === 0) {
      this.#finishRecovery(session.rid);
      return;
    }
    world.checkers.coverage.recoverBatches++;
    world.checkers.coverage.recoveredLocks += locks.length;
    world.checkers.recoveredLocks(session.client, locks);
    this.apply(callMachine("LockServer.onRecoverBatch", () => this.locks.onRecoverBatch(session.rid, locks)));
    if (locks.length > RECOVER_BATCH_LOCKS_MAX) {
      if (session.socket !== null)
        this.#closeSocket(
          session.socket,
          `a recovery batch of ${locks.length} locks (at most ${RECOVER_BATCH_LOCKS_MAX})`,
        );
      return;
    }
    this.#requestRecovery(session, locks[locks.length - 1]!.key);
  }

  /** server.ts finishRecovery. */
  #finishRecovery(rid: Rid): void {
    const world = this.#world;
    if (this.recovery.finish(rid, ["greeting", "locks"])) this.#onRecoveryFinished();
    else if (world.mutation === "resume-before-recovery" && this.locks.recovering) {
      world.trace.add(
        `S mutation: resume the lock table while ${this.recovery.pendingCount} client(s) still recover`,
      );
      this.apply(callMachine("LockServer.resumeAfterRecovery", () => this.locks.resumeAfterRecovery()));
    }
    const session = this.sessions.get(rid);
    if (session && session.farewellIds.length > 0) this.#runFarewell(session);
  }

  /** server.ts onRecoveryFinished. */
  #onRecoveryFinished(): void {
    const world = this.#world;
    this.#recoveryTimer?.cancel();
    this.#recoveryTimer = null;
    world.trace.add(`S all clients recovered (term ${this.term})`);
    world.checkers.coverage.recoveries++;
    // Recovered write seqs may have raised the counter above the reserved block: the lock table then finds
    // no token available, so write grants wait for the reservation that observe() started.
    if (!this.up) return;
    world.checkers.recoveryFinished();
    this.apply(callMachine("LockServer.resumeAfterRecovery", () => this.locks.resumeAfterRecovery()));
  }

  /** server.ts writeSeq onAvailable: a reservation landed after the lock table found no token. */
  onWriteSeqsAvailable(): void {
    if (!this.up) return;
    this.apply(callMachine("LockServer.onWriteSeqsAvailable", () => this.locks.onWriteSeqsAvailable()));
  }

  /** server.ts onRecoveryTimeout. */
  #onRecoveryTimeout(): void {
    this.#recoveryTimer = null;
    if (!this.up) return;
    for (const rid of this.recovery.pendingRids()) {
      this.#world.trace.add(`S ${this.#nameOf(rid)} did not recover its locks in time; fencing it`);
      this.#fence(rid, "client_recovery");
    }
  }

  // ---------------------------------------------------------------- fencing and reclaim

  /** server.ts fence; the agent is simulated (delay, outcome, kill or cut off). */
  #fence(rid: Rid, reason: FenceReason): void {
    const world = this.#world;
    if (!this.up) return;
    if (!this.fences.start({ rid, address: this.#nameOf(rid), reason }, world.clock.nowUs / 1000)) return; // B37
    const session = this.sessions.get(rid);
    if (session) this.#dropSession(session, `fencing (${reason})`);
    const index = world.clientIndexOf(rid);
    world.trace.add(`S fencing ${world.clients[index]!.name} (${reason})`);
    world.checkers.fenceStarted(index);
    if (reason === "client_reconnect") world.checkers.coverage.reconnectFences++;
    else world.checkers.coverage.recoveryFences++;
    const incarnation = this.incarnation;
    // A fence asked for during the faulty phase may fail; once healed, agents succeed.
    const mayFail = !world.healed;
    world.clock.schedule(this.#prng.int(0, this.#config.fenceDelayMaxUs), () => {
      const failed = mayFail && this.#prng.chance(this.#config.fenceFailChance);
      if (!failed) world.fenceAgentSucceeded(index, this.#config.fenceKills);
      else world.trace.add(`fence agent: fencing ${world.clients[index]!.name} failed`);
      if (incarnation !== this.incarnation || !this.up) return;
      if (failed) {
        world.checkers.coverage.fenceErrors++;
        this.fences.onError(rid, "the fence agent failed");
        this.#fatal(`fencing ${world.clients[index]!.name} failed`);
        return;
      }
      this.fences.onFenced(rid);
      this.#reclaimFenced();
    });
  }

  /** server.ts reclaimFenced: one reclaim loop at a time; a fence finished meanwhile is picked up after it. */
  #reclaimFenced(): void {
    if (this.#reclaiming) return;
    this.#reclaiming = true;
    const incarnation = this.incarnation;
    this.#reclaimFencedOnce(() => {
      if (incarnation !== this.incarnation) return;
      this.#reclaiming = false;
      if (this.up && this.fences.next() !== undefined) this.#reclaimFenced();
    });
  }

  /** server.ts reclaimFencedOnce: reclaim every fenced rid in turn; a fence error stops the server. */
  #reclaimFencedOnce(done: () => void): void {
    const incarnation = this.incarnation;
    const step = (): void => {
      if (incarnation !== this.incarnation) return;
      const request = this.fences.next();
      if (request === undefined) {
        done();
        return;
      }
      if (request.state === "error") {
        this.#fatal(`fencing ${ridToHex(request.rid)} failed: ${request.error ?? "unknown error"}`);
        return;
      }
      this.#reclaim(request.rid, `fenced (${request.reason})`, () => {
        if (!this.up) return;
        this.fences.free(request.rid);
        this.#finishRecovery(request.rid);
        step();
      });
    };
    step();
  }

  /**
   * server.ts reclaim: the record first (so no later server can take the client back: it would be
   * refused as fenced), then the entries, with progress on every touched key. Idempotent.
   */
  #reclaim(rid: Rid, why: string, then: () => void): void {
    const world = this.#world;
    const index = world.clientIndexOf(rid);
    world.trace.add(`S reclaim ${world.clients[index]!.name}: ${why}`);
    world.checkers.coverage.reclaims++;
    const session = this.sessions.get(rid);
    if (session) this.#dropSession(session, why);
    this.#recordOp(
      rid,
      `delete client ${world.clients[index]!.name}`,
      () => this.store.clients.delete(rid),
      () => {
        this.records.delete(rid);
        this.#reclaimed.add(rid);
        world.checkers.clientGone(index, "reclaimed");
        this.apply(callMachine("LockServer.onClientGone", () => this.locks.onClientGone(rid)));
        world.checkers.departed(index, "reclaimed");
        then();
      },
    );
  }

  // ---------------------------------------------------------------- farewell

  #onFarewell(session: SimSession, id: number): void {
    session.leaving = true;
    session.farewellIds.push(id);
    if (this.recovery.isPending(session.rid, "locks"))
      this.#world.checkers.coverage.farewellsDuringRecovery++;
    this.#runFarewell(session);
  }

  /** server.ts runFarewell: once the client's lock recovery finished (B5): entries, then record, then answer. */
  #runFarewell(session: SimSession): void {
    const world = this.#world;
    const waits =
      world.mutation !== "farewell-skips-recovery" && this.recovery.isPending(session.rid, "locks");
    if (waits || session.farewellIds.length === 0) return;
    const ids = session.farewellIds.splice(0);
    world.trace.add(`S farewell of ${world.clients[session.client]!.name}: forget it`);
    world.checkers.clientGone(session.client, "farewell");
    this.apply(callMachine("LockServer.onClientGone", () => this.locks.onClientGone(session.rid)));
    this.storeOp(
      `delete client ${world.clients[session.client]!.name}`,
      () => this.store.clients.delete(session.rid),
      () => {
        this.records.delete(session.rid);
        if (this.recovery.finish(session.rid, ["greeting", "locks"])) this.#onRecoveryFinished();
        session.farewellDone = true;
        for (const farewellId of ids) {
          world.trace.add(
            `S -> ${world.clients[session.client]!.name} ${fmtDown({ kind: "farewell-response", requestId: farewellId })}`,
          );
          this.#respond(session, Command.FAREWELL, farewellId, { kind: "farewell", body: {} });
        }
      },
    );
  }

  // ---------------------------------------------------------------- lock table effects (server.ts apply)

  /** Sends the lock table's effects, in order; the checkers see every decision, sent or not. */
  apply(effects: readonly LockServerEffect[]): void {
    const world = this.#world;
    for (const effect of effects) {
      const index = world.clientIndexOf(effect.rid);
      const name = world.clients[index]!.name;
      const session = this.sessions.get(effect.rid);
      // A departed client's message goes nowhere: it will be reclaimed (or already was), which re-runs progress (B3).
      const dropped = session === undefined ? " (no session: dropped)" : "";
      switch (effect.type) {
        case "grant": {
          let grant = effect.grant;
          if (world.mutation === "null-compatible-within-client" && grant.newMode === "null") {
            this.#ownNullPending.delete(`${index}:${grant.key}`);
          }
          if (grant.newMode === "write" || grant.newMode === "write_only") {
            this.#writeGrants++;
            if (
              world.mutation === "reuse-write-seq" &&
              this.#writeGrants % 4 === 0 &&
              this.#lastWriteSeqSent > 0n
            ) {
              world.trace.add(`S mutation: stamp grant with old write seq ${this.#lastWriteSeqSent}`);
              grant = { ...grant, writeSeq: this.#lastWriteSeqSent };
            }
            this.#lastWriteSeqSent = grant.writeSeq;
          }
          const message: DownMessage = { kind: "grant", requestId: effect.requestId, grant };
          world.trace.add(`S -> ${name} ${fmtDown(message)}${dropped}`);
          world.checkers.downSent(index, message);
          if (session)
            this.#respond(session, Command.LOCK, effect.requestId, {
              kind: "lock",
              body: { ...grant, noQueue: false },
            });
          break;
        }
        case "refuse": {
          const message: DownMessage = {
            kind: "refuse",
            requestId: effect.requestId,
            key: effect.key,
            code: effect.code,
          };
          world.trace.add(`S -> ${name} ${fmtDown(message)}${dropped}`);
          world.checkers.downSent(index, message);
          if (session) {
            this.#respond(
              session,
              Command.LOCK,
              effect.requestId,
              { kind: "error", body: { message: "the lock is busy" } },
              WireError.EAGAIN,
            );
          }
          break;
        }
        case "invalidate": {
          const inv = effect.invalidation;
          const tag = `${index}:${inv.key}`;
          if (
            world.mutation === "null-compatible-within-client" &&
            inv.newMode === "null" &&
            this.#ownNullPending.has(tag)
          ) {
            world.trace.add(
              `S mutation: treat ${name}'s own ${inv.oldMode} as compatible with its null request; answer invalidation itself`,
            );
            this.apply(
              callMachine("LockServer.onInvalidateResponse", () =>
                this.locks.onInvalidateResponse(effect.rid, inv),
              ),
            );
            break;
          }
          const requestId = session
            ? this.#request(session, Command.LOCK, {
                kind: "lock",
                body: { ...inv, writeSeq: 0n, noQueue: false },
              })
            : 0;
          const message: DownMessage = { kind: "invalidate", requestId, invalidation: inv };
          world.trace.add(`S -> ${name} ${fmtDown(message)}${dropped}`);
          world.checkers.downSent(index, message);
          if (world.mutation === "grant-while-invalidating") {
            this.#fakedAnswers.add(tag);
            world.trace.add(`S mutation: answer invalidate#${requestId} itself`);
            this.apply(
              callMachine("LockServer.onInvalidateResponse", () =>
                this.locks.onInvalidateResponse(effect.rid, inv),
              ),
            );
          }
          break;
        }
        case "protocol-error":
          world.trace.add(`S protocol-error for ${name}: ${effect.error.message}`);
          world.checkers.protocolError(index, effect.error.message);
          if (session?.socket) this.#closeSocket(session.socket, effect.error.message);
          break;
      }
    }
  }

  #nameOf(rid: Rid): string {
    return this.#world.clients[this.#world.clientIndexOf(rid)]!.name;
  }
}

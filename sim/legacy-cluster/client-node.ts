/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * One application process: the real `ClientLocks` and one real `ReliableSession`, driven the way
 * src/client/connection.ts and src/client/client.ts drive them, plus a small application (a cache of a
 * shared resource and an invalidation callback taking virtual time).
 *
 * Guarantees (as the real client):
 * - One logical connection across sockets and servers (connection.ts): every socket starts with a
 *   greeting carrying the last server term seen (0n before any) and the farewell flag; a greeting answer
 *   from another term is a new server: `epoch` increments and `resetForNewServer()` drops what was owed
 *   to the dead one; then `attach()` resends everything kept, before anything new. After a lost socket
 *   or a failed attempt it retries after `RECONNECT_DELAY_US` (100 ms virtual).
 * - Only the current socket is listened to: a packet from an older socket (a dead server's, delivered
 *   late) is ignored, as connection.ts does with `connection !== this.connection`.
 * - Lock messages go to the machine as client.ts hands them: grants and refusals by the request id the
 *   session gave the request; invalidations under a local id remembered with the epoch they came in, and
 *   an answer owed to an older epoch (a dead server) is dropped; recover requests are answered from
 *   `ClientLocks.recoverBatch` with at most `recoverBatchMax` locks (forced to 1 in some seeds).
 * - EFENCED on a greeting (LockClient.onFenced): the machine is reset (waiters fail EFENCED, handles
 *   become orphans), `generation` increments so every earlier handle is invalid, and the client stops
 *   reconnecting. The application checks a handle's generation before using it (LockHandle.isValid).
 * - A process that dies (`crash()`, or killed by the fence agent) does nothing any more: every callback
 *   scheduled by it checks `alive` first.
 * Relies on: world.ts calling `receive`/`socketClosed` for this client's sockets only; the machine's own
 * contract (src/core/client-locks.ts).
 */
import { ClientLocks, type ClientLockEffect, type WaiterId } from "../../src/core/client-locks.js";
import { InvariantError } from "../../src/core/errors.js";
import type { Key } from "../../src/core/keys.js";
import type { LockInvalidation, RecoveredLock, Rid } from "../../src/core/lock-messages.js";
import type { LockMode } from "../../src/core/modes.js";
import { WireSession } from "../../src/protocol/session.js";
import { Command, WireError, type Body, type Message } from "../../src/protocol/messages.js";
import {
  callMachine,
  fmtDown,
  fmtKey,
  fmtUp,
  fmtWire,
  type CallbackConfig,
  type DownMessage,
  type Waiter,
} from "./base.js";
import type { DownPacket, Socket } from "./network.js";
import type { Prng } from "../prng.js";
import type { World } from "./world.js";

/** connection.ts RECONNECT_DELAY_MS, in virtual microseconds. */
export const RECONNECT_DELAY_US = 100_000;

export interface ClientConfig {
  readonly idleLockLimit: number;
  readonly callback: CallbackConfig;
  /** Locks per recovery batch (client.ts uses RECOVER_BATCH_LOCKS_MAX; 1 forces the rare many-batch path). */
  readonly recoverBatchMax: number;
}

export class ClientNode {
  readonly index: number;
  readonly rid: Rid;
  readonly name: string;
  locks: ClientLocks;
  readonly waiters = new Map<WaiterId, Waiter>();
  /** Application cache: key → resource version read under a read-capable handle (see checkers.ts). */
  readonly cache = new Map<Key, number>();
  /** Application invalidation callbacks running now: invalidationId → what it is for. */
  readonly callbacks = new Map<number, { key: Key; from: LockMode; to: LockMode }>();
  /** close() was called: shut down, farewell sent. */
  leaving = false;
  /** The farewell completed (or the client was fenced while leaving); the machine was reset. */
  left = false;
  /** The process runs: false once it crashed or the fence agent killed it. */
  alive = true;
  /** A server refused it EFENCED: it reset its locks and stopped (LockClient.onFenced). */
  fenced = false;
  /** A fence agent cut it off the shared resource without killing it: its resource accesses fail. */
  cutOff = false;
  /** LockClient.generation: bumped when it learns EFENCED; handles of an older generation are invalid. */
  generation = 0;
  /**
   * Keys whose mode this client lowered on an invalidation of a dead server (its answer dropped) and that
   * no grant or current invalidation refreshed since: the server may still grant more (checkers.ts finding 3).
   */
  readonly staleLowered = new Set<Key>();
  /** Connection attempts fail until then (a partition, or a slow return after a server crash). */
  partitionUntilUs = 0;
  // connection.ts
  /** The term of the server last greeted (0n before any). */
  serverTerm = 0n;
  /** Increments every time a greeting reaches a new server. */
  epoch = 0;
  readonly session = new WireSession();
  /** The greeted socket, and the one being greeted. */
  socket: Socket | null = null;
  connecting: Socket | null = null;
  #destroyed = false;
  #farewellId: number | null = null;
  #reconnectScheduled = false;
  // client.ts
  readonly #lockRequests = new Map<number, Key>();
  readonly #invalidations = new Map<number, { wireId: number; epoch: number }>();
  #nextInvalidationId = 1;
  // the application
  readonly #world: World;
  readonly #prng: Prng;
  readonly #config: ClientConfig;
  #nextWaiterId = 0;
  #grantedEffects = 0;
  #inMachine = false;
  /** early-invalidation-response: local invalidation ids this node already answered itself. */
  readonly #answeredEarly = new Set<number>();

  constructor(world: World, index: number, rid: Rid, config: ClientConfig, prng: Prng) {
    this.#world = world;
    this.index = index;
    this.rid = rid;
    this.name = `c${index}`;
    this.#prng = prng;
    this.#config = config;
    this.locks = new ClientLocks({ idleLockLimit: config.idleLockLimit });
  }

  /** Alive, not fenced, not gone: the application still works. */
  get acting(): boolean {
    return this.alive && !this.fenced && !this.left;
  }

  // ---------------------------------------------------------------- connection (connection.ts)

  /** One connection attempt: a socket to the server and a greeting, or a failure and a retry later. */
  connect(): void {
    const world = this.#world;
    if (!this.alive || this.#destroyed || this.socket !== null || this.connecting !== null) return;
    const server = world.server;
    if (!server.up || world.clock.nowUs < this.partitionUntilUs) {
      world.trace.add(
        `${this.name} connect failed (${server.up ? "unreachable" : `server ${server.status}`})`,
      );
      this.#scheduleReconnect();
      return;
    }
    const socket = world.network.open(this.index);
    server.accept(socket);
    this.connecting = socket;
    const greeting = { rid: this.rid, lastServerTerm: this.serverTerm, farewell: this.#farewellId !== null };
    world.trace.add(
      `${this.name} -> S greeting on ${socket.name} last term ${greeting.lastServerTerm}${greeting.farewell ? " farewell" : ""}`,
    );
    world.network.sendUp(socket, { kind: "greeting", greeting });
  }

  #scheduleReconnect(): void {
    if (this.#reconnectScheduled) return;
    this.#reconnectScheduled = true;
    this.#world.clock.schedule(RECONNECT_DELAY_US, () => {
      this.#reconnectScheduled = false;
      this.connect();
    });
  }

  /** A packet from the server on `socket`. */
  receive(socket: Socket, packet: DownPacket): void {
    const world = this.#world;
    if (!this.alive) return;
    switch (packet.kind) {
      case "greeting-response":
      case "greeting-refused":
        if (socket !== this.connecting) {
          world.trace.add(`${this.name} <- S ${packet.kind} on ${socket.name}: old socket, ignored`);
          world.checkers.coverage.staleDeliveries++;
          return;
        }
        this.connecting = null;
        if (packet.kind === "greeting-response") this.#onGreetingResponse(socket, packet.serverTerm);
        else {
          world.trace.add(`${this.name} <- S greeting refused ${packet.code}: ${packet.reason}`);
          world.network.close(socket, { graceful: true });
          if (packet.code === "EFENCED") this.#onFenced(packet.reason);
          else this.#scheduleReconnect();
        }
        return;
      case "message":
        if (socket !== this.socket) {
          world.trace.add(`${this.name} <- ${socket.name} ${fmtWire(packet.message)}: old socket, ignored`);
          world.checkers.coverage.staleDeliveries++;
          return;
        }
        this.#onMessage(packet.message);
        return;
    }
  }

  /** This client noticed that `socket` ended (connection.ts onClose). */
  socketClosed(socket: Socket): void {
    const world = this.#world;
    if (!this.alive) return;
    if (socket === this.connecting) {
      this.connecting = null;
      world.trace.add(`${this.name} ${socket.name} closed during the greeting`);
      this.#scheduleReconnect();
      return;
    }
    if (socket !== this.socket) return;
    this.socket = null;
    this.session.detach();
    world.trace.add(`${this.name} lost ${socket.name}`);
    if (this.#destroyed) return;
    this.#scheduleReconnect();
  }

  /** connection.ts greet, after the answer arrived. */
  #onGreetingResponse(socket: Socket, serverTerm: bigint): void {
    const world = this.#world;
    const newServer = serverTerm !== this.serverTerm;
    const first = this.serverTerm === 0n;
    this.serverTerm = serverTerm;
    if (newServer) {
      this.epoch++;
      this.session.resetForNewServer();
    }
    this.socket = socket;
    const kept = this.session.attach();
    world.trace.add(
      `${this.name} greeted term ${serverTerm} on ${socket.name}${first ? "" : newServer ? " (new server)" : " (same server)"}, resend ${kept.length}`,
    );
    if (world.mutation === "no-resend" && !first && kept.length > 0) {
      world.trace.add(`${this.name} mutation: do not resend ${kept.length} kept messages`);
      return;
    }
    if (!first) world.checkers.coverage.resent += kept.length;
    for (const message of kept) world.network.sendUp(socket, { kind: "message", message });
    // client.ts onReconnect: a new server drops invalidations the dead one queued and that never started.
    if (newServer && !first) this.#call("ClientLocks.onNewServer", () => this.locks.onNewServer());
  }

  #transmit(message: Message | null): void {
    if (message !== null && this.socket !== null)
      this.#world.network.sendUp(this.socket, { kind: "message", message });
  }

  #respond(cmd: Command, id: number, payload: Body): void {
    this.#transmit(this.session.respond(cmd, id, payload));
  }

  // ---------------------------------------------------------------- messages (client.ts onMessage)

  #onMessage(message: Message): void {
    const world = this.#world;
    const { header, payload } = message;
    const verdict = this.session.receive(header);
    if (verdict === "protocol-error") {
      // connection.ts closes the connection and reconnects; an honest server never causes it.
      throw new InvariantError(`sim: the server sent ${this.name} a refused header: ${this.session.problem}`);
    }
    if (verdict !== "deliver") {
      world.trace.add(`${this.name} <- S ${fmtWire(message)}: ${verdict}, dropped`);
      if (verdict === "duplicate") world.checkers.coverage.duplicatesDropped++;
      return;
    }
    if (header.cmd === Command.FAREWELL && header.response) {
      world.trace.add(`${this.name} <- S ${fmtDown({ kind: "farewell-response", requestId: header.id })}`);
      if (this.#farewellId === header.id) this.#onFarewellDone();
      return;
    }
    if (header.cmd === Command.LOCK) {
      if (header.response) {
        const key = this.#lockRequests.get(header.id);
        if (key === undefined) return; // not ours any more (answered before a reconnect)
        this.#lockRequests.delete(header.id);
        if (header.error === WireError.EAGAIN) {
          const down: DownMessage = { kind: "refuse", requestId: header.id, key, code: "EAGAIN" };
          world.trace.add(`${this.name} <- S ${fmtDown(down)}`);
          world.checkers.downDelivered(this.index, down);
          this.#call("ClientLocks.onRefuse", () => this.locks.onRefuse(key, "EAGAIN"));
        } else if (payload.kind === "lock") {
          const b = payload.body;
          const down: DownMessage = {
            kind: "grant",
            requestId: header.id,
            grant: { key: b.key, oldMode: b.oldMode, newMode: b.newMode, writeSeq: b.writeSeq },
          };
          world.trace.add(`${this.name} <- S ${fmtDown(down)}`);
          world.checkers.downDelivered(this.index, down);
          this.staleLowered.delete(b.key);
          this.#call("ClientLocks.onGrant", () => this.locks.onGrant(down.grant));
        } else {
          throw new InvariantError(`sim: ${this.name} got a failed lock response ${fmtWire(message)}`);
        }
      } else if (payload.kind === "lock") {
        const b = payload.body;
        const invalidation: LockInvalidation = { key: b.key, oldMode: b.oldMode, newMode: b.newMode };
        const localId = this.#nextInvalidationId++;
        this.#invalidations.set(localId, { wireId: header.id, epoch: this.epoch });
        world.trace.add(
          `${this.name} <- S ${fmtDown({ kind: "invalidate", requestId: header.id, invalidation })}`,
        );
        if (world.mutation === "early-invalidation-response") {
          world.trace.add(`${this.name} mutation: answer invalidate#${header.id} at once`);
          this.#answeredEarly.add(localId);
          world.checkers.invalidateResponseSent(this.index, invalidation);
          this.#respond(Command.LOCK, header.id, {
            kind: "lock",
            body: { ...invalidation, writeSeq: 0n, noQueue: false },
          });
        }
        this.#call("ClientLocks.onInvalidate", () => this.locks.onInvalidate(localId, invalidation));
      }
      return;
    }
    if (header.cmd === Command.LOCK_RECOVER && !header.response && payload.kind === "recover-request") {
      const after = payload.body.after;
      world.trace.add(
        `${this.name} <- S ${fmtDown({ kind: "recover-request", requestId: header.id, after })}`,
      );
      let locks: RecoveredLock[] = callMachine("ClientLocks.recoverBatch", () =>
        this.locks.recoverBatch(after, this.#config.recoverBatchMax),
      );
      if (world.mutation === "recover-lowered-mode") {
        // B7: report what the lock is lowered to now, not what it held before the invalidation in progress.
        locks = locks.map((l) => {
          const lowered = this.locks.view(l.key)?.mode ?? l.mode;
          if (lowered !== l.mode)
            world.trace.add(`${this.name} mutation: report ${fmtKey(l.key)} as ${lowered}, not ${l.mode}`);
          return { ...l, mode: lowered };
        });
      }
      world.trace.add(
        `${this.name} -> S ${fmtUp({ kind: "recover-response", requestId: header.id, locks })}`,
      );
      this.#respond(Command.LOCK_RECOVER, header.id, { kind: "recover-response", body: { locks } });
      return;
    }
    throw new InvariantError(`sim: ${this.name} got an unexpected ${fmtWire(message)}`);
  }

  // ---------------------------------------------------------------- the end of a client

  /**
   * Graceful close (the application released its handles first): shut the machine down (waiters fail
   * ESHUTDOWN, queued invalidations are answered without callbacks), then a farewell request; its answer
   * resets the machine (`left` becomes true). Mirrors LockClient.close / ClientConnection.farewell.
   */
  leave(): void {
    const world = this.#world;
    if (this.leaving) throw new InvariantError(`sim: ${this.name} leaves twice`);
    this.leaving = true;
    world.trace.add(`${this.name} close: shutdown, then farewell`);
    world.checkers.clientLeaving(this.index);
    this.#call("ClientLocks.shutdown", () => this.locks.shutdown("ESHUTDOWN"));
    if (this.fenced) {
      // doClose: a fenced client sends no farewell; nothing is left to say goodbye to.
      this.left = true;
      return;
    }
    const { id, message } = this.session.request(Command.FAREWELL, { kind: "farewell", body: {} });
    this.#farewellId = id;
    world.trace.add(`${this.name} -> S ${fmtUp({ kind: "farewell", requestId: id })}`);
    this.#transmit(message);
    world.afterFarewellSent(this.index);
  }

  #onFarewellDone(): void {
    const world = this.#world;
    this.#farewellId = null;
    // The server forgot us: drop everything (callbacks still running are voided by the machine).
    this.left = true;
    this.#destroyed = true;
    this.#call("ClientLocks.reset", () => this.locks.reset("ESHUTDOWN"));
    world.checkers.clientLeft(this.index);
    if (this.socket !== null) {
      world.network.close(this.socket, { graceful: true, serverNoticeUs: this.#prng.int(0, 200) });
      this.socket = null;
      this.session.detach();
    }
  }

  /** LockClient.onFenced (a greeting refused EFENCED): forget every lock; handles become invalid. */
  #onFenced(reason: string): void {
    const world = this.#world;
    this.fenced = true;
    this.#destroyed = true;
    this.generation++;
    world.trace.add(`${this.name} fenced: ${reason}`);
    world.checkers.clientFenced(this.index);
    this.#call("ClientLocks.reset", () => this.locks.reset("EFENCED"));
    if (this.#farewellId !== null) {
      // The farewell waiter resolves: close() completes (nothing left to say goodbye to).
      this.#farewellId = null;
      this.left = true;
    }
  }

  /** The process dies: nothing of it acts any more; the server sees its sockets end. */
  crash(why: string): void {
    const world = this.#world;
    if (!this.alive) return;
    this.alive = false;
    world.trace.add(`${this.name} dies: ${why}`);
    world.checkers.clientDied(this.index);
    for (const socket of [this.socket, this.connecting]) {
      if (socket !== null)
        world.network.close(socket, { graceful: false, serverNoticeUs: this.#prng.int(0, 1_000) });
    }
    this.socket = null;
    this.connecting = null;
  }

  /** The fence agent cut this (live) client off the shared resource without killing it. */
  cutOffByFence(): void {
    if (!this.alive || this.cutOff) return;
    this.cutOff = true;
    this.#world.trace.add(`${this.name} cut off the resource by the fence agent (still running)`);
    this.#world.checkers.clientCutOff(this.index);
  }

  /** A reset fault: the current socket ends abruptly; connection attempts fail for `partitionUs`. */
  resetConnection(partitionUs: number, lateChance: number, noticeMaxUs: number): void {
    const world = this.#world;
    if (!this.alive) return;
    this.partitionUntilUs = Math.max(this.partitionUntilUs, world.clock.nowUs + partitionUs);
    const socket = this.socket ?? this.connecting;
    world.trace.add(
      `${this.name} connection reset${socket === null ? " (not connected)" : ` (${socket.name})`}${partitionUs > 0 ? `, unreachable for ${partitionUs}us` : ""}`,
    );
    if (socket === null) return;
    world.network.close(socket, {
      graceful: false,
      lateChance,
      clientNoticeUs: this.#prng.int(0, noticeMaxUs),
      serverNoticeUs: this.#prng.int(0, noticeMaxUs),
    });
  }

  // ---------------------------------------------------------------- the application's calls

  /** Starts an acquire; `onResolve` runs (synchronously, inside an event) when it is granted or fails. */
  acquire(
    owner: string,
    key: Key,
    mode: Waiter["mode"],
    nonblock: boolean,
    onResolve: (waiter: Waiter) => void,
  ): Waiter {
    const world = this.#world;
    const id = ++this.#nextWaiterId;
    const waiter: Waiter = {
      id,
      client: this.index,
      owner,
      key,
      mode,
      nonblock,
      aborted: false,
      state: "waiting",
      writeSeq: 0n,
      failCode: undefined,
      fake: false,
      lost: false,
      generation: this.generation,
      onResolve,
    };
    this.waiters.set(id, waiter);
    world.trace.add(
      `${this.name}/${owner} acquire w${id} ${fmtKey(key)} ${mode}${nonblock ? " nonblock" : ""}`,
    );
    world.checkers.acquireStarted(waiter);
    if (world.mutation === "shared-write-handles" && mode === "write") {
      const held = [...this.waiters.values()].find(
        (w) => w !== waiter && w.key === key && w.mode === "write" && w.state === "granted",
      );
      if (held !== undefined) {
        world.trace.add(`${this.name} mutation: w${id} shares w${held.id}'s write handle`);
        waiter.fake = true;
        this.#resolveGranted(waiter, held.writeSeq);
        return waiter;
      }
    }
    this.#call(`ClientLocks.acquire(w${id})`, () => this.locks.acquire(id, key, mode, { nonblock }));
    return waiter;
  }

  release(waiter: Waiter): void {
    const world = this.#world;
    if (waiter.state !== "granted")
      throw new InvariantError(`sim: release of w${waiter.id} in state ${waiter.state}`);
    waiter.state = "released";
    world.trace.add(
      `${this.name}/${waiter.owner} release w${waiter.id} ${fmtKey(waiter.key)} ${waiter.mode}`,
    );
    world.checkers.released(waiter);
    if (waiter.fake) return;
    this.#call(`ClientLocks.release(w${waiter.id})`, () => this.locks.release(waiter.id));
  }

  abort(waiter: Waiter): void {
    const world = this.#world;
    if (waiter.state !== "waiting")
      throw new InvariantError(`sim: abort of w${waiter.id} in state ${waiter.state}`);
    waiter.aborted = true;
    world.trace.add(`${this.name}/${waiter.owner} abort w${waiter.id} ${fmtKey(waiter.key)}`);
    this.#call(`ClientLocks.abort(w${waiter.id})`, () => this.locks.abort(waiter.id));
  }

  /** Whether the application may use this handle on the resource now (LockHandle.isValid, and the resource's own fence). */
  #mayUse(waiter: Waiter, what: string): boolean {
    const world = this.#world;
    if (waiter.generation !== this.generation) {
      world.trace.add(
        `${this.name}/${waiter.owner} skips ${what} under w${waiter.id}: the handle is invalid (EFENCED)`,
      );
      return false;
    }
    if (this.cutOff) {
      world.trace.add(
        `${this.name}/${waiter.owner} ${what} under w${waiter.id} refused by the resource: fenced`,
      );
      world.checkers.coverage.fencedAccesses++;
      return false;
    }
    return true;
  }

  /**
   * The application reads the shared resource under `waiter`'s read or write handle: from its cache when
   * it has one (the checker compares it with the resource), then caches what the resource holds.
   */
  appRead(waiter: Waiter): void {
    const world = this.#world;
    if (!this.#mayUse(waiter, "read")) return;
    const r = world.resource(waiter.key);
    const cached = this.cache.get(waiter.key);
    world.trace.add(
      `${this.name}/${waiter.owner} read ${fmtKey(waiter.key)} under w${waiter.id}: ` +
        `${cached === undefined ? "cache miss" : `cached v${cached}`}, resource v${r.version}`,
    );
    world.checkers.cacheRead(waiter, cached, r);
    this.cache.set(waiter.key, r.version);
  }

  /**
   * The application writes the shared resource under `waiter`'s write or write_only handle, with the
   * handle's writeSeq as fencing token. A write handle keeps its cache current (write-through); a
   * write_only writer never reads, so it never touches the cache.
   */
  appWrite(waiter: Waiter): void {
    const world = this.#world;
    if (!this.#mayUse(waiter, "write")) return;
    const r = world.resource(waiter.key);
    world.trace.add(
      `${this.name}/${waiter.owner} write ${fmtKey(waiter.key)} under w${waiter.id} token=${waiter.writeSeq} -> v${r.version + 1}`,
    );
    world.checkers.fencedWrite(waiter, r);
    r.version++;
    if (waiter.writeSeq > r.maxToken) r.maxToken = waiter.writeSeq;
    if (waiter.mode === "write") {
      if (waiter.writeSeq > r.maxWriteToken) r.maxWriteToken = waiter.writeSeq;
      if (this.cache.has(waiter.key)) this.cache.set(waiter.key, r.version);
    }
  }

  // ---------------------------------------------------------------- the machine's effects (client.ts apply)

  #call(where: string, fn: () => ClientLockEffect[]): void {
    if (this.#inMachine)
      throw new InvariantError(`sim: re-entered ${this.name}'s machine from its own effects (${where})`);
    this.#inMachine = true;
    let effects: ClientLockEffect[];
    try {
      effects = callMachine(where, fn);
    } finally {
      this.#inMachine = false;
    }
    this.#apply(effects);
  }

  #apply(effects: readonly ClientLockEffect[]): void {
    const world = this.#world;
    for (const effect of effects) {
      switch (effect.type) {
        case "send-request": {
          const { id, message } = this.session.request(Command.LOCK, {
            kind: "lock",
            body: { ...effect.request, writeSeq: 0n },
          });
          this.#lockRequests.set(id, effect.request.key);
          world.trace.add(
            `${this.name} -> S ${fmtUp({ kind: "request", requestId: id, request: effect.request })}${message === null || this.socket === null ? " (offline: kept)" : ""}`,
          );
          world.checkers.requestSent(this.index, id, effect.request);
          this.#transmit(message);
          break;
        }
        case "send-invalidate-response": {
          const origin = this.#invalidations.get(effect.requestId);
          this.#invalidations.delete(effect.requestId);
          if (this.#answeredEarly.delete(effect.requestId)) {
            world.trace.add(
              `${this.name} mutation: swallow the machine's answer to invalidation ${effect.requestId}`,
            );
            break;
          }
          // An answer owed to a server that has since been replaced is dropped (client.ts): the new server
          // rebuilt its table from our recovery report and re-sends whatever invalidation it still needs.
          if (origin === undefined || origin.epoch !== this.epoch) {
            world.trace.add(
              `${this.name} drops its answer to an invalidation of a dead server (${fmtKey(effect.response.key)} ${effect.response.oldMode}->${effect.response.newMode})`,
            );
            world.checkers.coverage.answersToDeadServers++;
            this.staleLowered.add(effect.response.key);
            break;
          }
          world.trace.add(
            `${this.name} -> S ${fmtUp({ kind: "invalidate-response", requestId: origin.wireId, response: effect.response })}`,
          );
          world.checkers.invalidateResponseSent(this.index, effect.response);
          this.staleLowered.delete(effect.response.key);
          this.#respond(Command.LOCK, origin.wireId, {
            kind: "lock",
            body: { ...effect.response, writeSeq: 0n, noQueue: false },
          });
          break;
        }
        case "invalidate":
          this.#startCallback(effect.invalidationId, effect.key, effect.from, effect.to);
          break;
        case "granted": {
          const waiter = this.#waiter(effect.waiterId, "granted");
          this.#grantedEffects++;
          if (world.mutation === "swallow-grant" && this.#grantedEffects % 7 === 0 && !waiter.lost) {
            world.trace.add(
              `${this.name} mutation: swallow granted w${waiter.id} (the app never hears of it)`,
            );
            waiter.lost = true;
            break;
          }
          this.#resolveGranted(waiter, effect.writeSeq, effect.mode);
          break;
        }
        case "failed": {
          const waiter = this.#waiter(effect.waiterId, "failed");
          if (waiter.state !== "waiting") world.checkers.resolvedTwice(waiter, `failed ${effect.code}`);
          waiter.state = "failed";
          waiter.failCode = effect.code;
          world.trace.add(
            `${this.name}/${waiter.owner} failed w${waiter.id} ${fmtKey(waiter.key)} ${effect.code}: ${effect.reason}`,
          );
          world.checkers.failed(waiter, effect.code, effect.reason);
          waiter.onResolve(waiter);
          break;
        }
      }
    }
  }

  #waiter(id: WaiterId, what: string): Waiter {
    const waiter = this.waiters.get(id);
    if (waiter === undefined) {
      this.#world.checkers.unknownWaiter(this.index, id, what);
      throw new InvariantError("unreachable: unknownWaiter throws");
    }
    return waiter;
  }

  #resolveGranted(waiter: Waiter, writeSeq: bigint, mode: LockMode = waiter.mode): void {
    const world = this.#world;
    if (waiter.state !== "waiting") world.checkers.resolvedTwice(waiter, "granted");
    waiter.state = "granted";
    waiter.writeSeq = writeSeq;
    waiter.generation = this.generation;
    world.trace.add(
      `${this.name}/${waiter.owner} granted w${waiter.id} ${fmtKey(waiter.key)} ${mode} seq=${writeSeq}`,
    );
    world.checkers.granted(waiter, mode);
    waiter.onResolve(waiter);
  }

  /** The application's invalidation callback: takes random virtual time, then drops the cache unless it is write→read. */
  #startCallback(invalidationId: number, key: Key, from: LockMode, to: LockMode): void {
    const world = this.#world;
    const cfg = this.#config.callback;
    const durationUs = this.#prng.chance(cfg.slowChance)
      ? this.#prng.int(cfg.maxUs, cfg.slowMaxUs)
      : this.#prng.int(0, cfg.maxUs);
    this.callbacks.set(invalidationId, { key, from, to });
    world.trace.add(
      `${this.name} app callback#${invalidationId} ${fmtKey(key)} ${from}->${to} (takes ${durationUs}us)`,
    );
    world.checkers.callbackStarted(this.index, key, from, to);
    world.clock.schedule(durationUs, () => {
      if (!this.alive) return;
      if (to === "null") this.cache.delete(key);
      this.callbacks.delete(invalidationId);
      world.trace.add(
        `${this.name} app callback#${invalidationId} done${to === "null" ? " (cache dropped)" : " (cache kept)"}`,
      );
      this.#call(`ClientLocks.invalidationDone(${invalidationId})`, () =>
        this.locks.invalidationDone(invalidationId),
      );
    });
  }
}

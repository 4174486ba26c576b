/**
 * The simulated world (DESIGN §5, STYLE "TigerBeetle and FoundationDB"): a virtual clock with one event
 * queue, a network, one server node running the real `LockServer`, and client nodes each running the real
 * `ClientLocks` plus a small application (a cache of a shared resource and an invalidation callback).
 * Nothing here reads a real clock or a real timer, and every random draw comes from a `Prng` fork, so a
 * run is a pure function of its seed and options.
 *
 * Guarantees:
 * - Time: `Clock` runs events in (time, insertion) order; time never goes backwards; ties run in the
 *   order they were scheduled. Times are integer virtual microseconds (`...Us`).
 * - Network: each client has one connection with two directions (client→server "up", server→client
 *   "down"). Within one direction delivery is FIFO (a message is never delivered before one sent earlier
 *   on the same direction); each message draws its own random delay, so deliveries on different
 *   connections, and the two directions of one connection, interleave arbitrarily. No loss, no
 *   duplication in the healthy network; `resetConnection` and `dropFilter` are the hooks for faults.
 * - Effects of one machine call are carried out in the order returned (the machines require it), and
 *   the world never re-enters a machine while carrying out its effects: application work that calls a
 *   machine again (release, abort, invalidationDone) is always a separately scheduled event.
 * - Every step that changes anything appends one line to the `Trace`; the checkers see every message and
 *   every effect before it leaves its node (see checkers.ts), and `afterEvent` runs after every event.
 *
 * Relies on: the machines being deterministic (no clock, no randomness: DESIGN §5), and Map iteration
 * being insertion-ordered (it is, in JavaScript).
 *
 * Hooks for later work (crash/restart, recovery, connection resets; kept as objects for that reason):
 * - `Network.resetConnection(client)` drops everything in flight on that connection (both directions) and
 *   starts a new epoch; a session layer (resend of unanswered requests) would sit in `ClientNode.#sendUp`
 *   and `ServerNode.#send`, the one place each node hands a message to the network.
 * - `ServerNode.crash()` drops deliveries until `restart()`, which builds a new LockServer with the same
 *   WriteSeqSource (the persisted high-water mark) and calls `holdForRecovery()`. Recovery would add a
 *   `ServerNode` method that pulls `ClientLocks.recoverBatch` batches over the network into
 *   `onRecoverBatch`, then `resumeAfterRecovery()`. These are mechanisms only: the current workload never
 *   crashes the server, and without a session layer (resend after reconnect) it would not yet be sound.
 * - Clients close gracefully through `ClientNode.leave()`: shutdown, a farewell message (the last on its
 *   connection), `onClientGone` at the server, the farewell response, reset.
 */
import { ClientLocks, type ClientLockEffect, type WaiterId } from "../src/core/client-locks.js";
import { InvariantError, KeylockError } from "../src/core/errors.js";
import { keyToText, ridToHex, type Key } from "../src/core/keys.js";
import type { LockGrant, LockInvalidation, LockRequest, Rid } from "../src/core/lock-messages.js";
import {
  LockServer,
  WriteSeqCounter,
  type LockServerEffect,
  type WriteSeqSource,
} from "../src/core/lock-server.js";
import type { LockMode } from "../src/core/modes.js";
import type { Checkers } from "./checkers.js";
import { fnv1a, type Prng } from "./prng.js";

// ---------------------------------------------------------------------------------------------------
// Mutations: deliberately wrong rules, applied inside the simulator only, to show the checkers can fail.

/**
 * - `grant-while-invalidating`: the server node answers every invalidation itself at once (as if the
 *   holder had already downgraded) and swallows the holder's real answer. Grants overtake invalidations.
 * - `null-compatible-within-client`: a client's own null (shrink) request is treated as compatible with
 *   its own grant: the server node answers the resulting self-invalidation itself, so the client drops
 *   its grant without its application ever being told to drop its cache.
 * - `shared-write-handles`: a client hands out a second write handle on a key while one is held (the
 *   reference's "one grant serves every local writer", which DESIGN §4 forbids).
 * - `reuse-write-seq`: the server node stamps some write grants with the previous write grant's token.
 * - `swallow-grant`: a client loses one "granted" notification: the application never sees its handle,
 *   so it never releases it.
 * - `early-invalidation-response`: a client answers every invalidation the moment it arrives, before its
 *   handles drained and its application callback ran (the machine's own later answer is swallowed).
 * - `reorder-requests`: the server node sets every third queued request aside for a while before the
 *   lock table sees it, so later requests overtake it (a server that does not keep arrival order).
 */
export const MUTATIONS = [
  "none",
  "grant-while-invalidating",
  "null-compatible-within-client",
  "shared-write-handles",
  "reuse-write-seq",
  "swallow-grant",
  "early-invalidation-response",
  "reorder-requests",
] as const;
export type Mutation = (typeof MUTATIONS)[number];

export function isMutation(value: string): value is Mutation {
  return (MUTATIONS as readonly string[]).includes(value);
}

// ---------------------------------------------------------------------------------------------------
// Clock

interface SimEvent {
  readonly atUs: number;
  readonly seq: number;
  readonly run: () => void;
}

/** Virtual time and the single event queue (a binary min-heap on (atUs, seq)). */
export class Clock {
  nowUs = 0;
  #heap: SimEvent[] = [];
  #seq = 0;

  schedule(delayUs: number, run: () => void): void {
    if (!(delayUs >= 0)) throw new InvariantError(`Clock.schedule: negative or NaN delay ${delayUs}`);
    this.scheduleAt(this.nowUs + Math.round(delayUs), run);
  }

  scheduleAt(atUs: number, run: () => void): void {
    if (atUs < this.nowUs)
      throw new InvariantError(`Clock.scheduleAt: ${atUs}us is in the past (now ${this.nowUs}us)`);
    const heap = this.#heap;
    const event: SimEvent = { atUs, seq: this.#seq++, run };
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = event;
  }

  get pending(): number {
    return this.#heap.length;
  }

  /** Runs the earliest event; false when the queue is empty. */
  step(): boolean {
    const heap = this.#heap;
    const top = heap[0];
    if (top === undefined) return false;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && before(heap[right]!, heap[left]!) ? right : left;
        if (!before(heap[child]!, last)) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    this.nowUs = top.atUs;
    top.run();
    return true;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atUs < b.atUs || (a.atUs === b.atUs && a.seq < b.seq);
}

// ---------------------------------------------------------------------------------------------------
// Trace

/** The run's event log: a ring of the last lines (for violation reports), a running hash, and optionally every line. */
export class Trace {
  static readonly TAIL_LINES = 30;
  readonly #ring: string[] = [];
  #next = 0;
  #count = 0;
  #hash = 0x811c9dc5;
  readonly all: string[] | undefined;
  readonly #clock: Clock;

  constructor(clock: Clock, keepAll: boolean) {
    this.#clock = clock;
    this.all = keepAll ? [] : undefined;
  }

  add(text: string): void {
    const line = `${formatUs(this.#clock.nowUs)} ${text}`;
    this.#hash = fnv1a(line, this.#hash);
    this.#hash = fnv1a("\n", this.#hash);
    if (this.#ring.length < Trace.TAIL_LINES) this.#ring.push(line);
    else this.#ring[this.#next] = line;
    this.#next = (this.#next + 1) % Trace.TAIL_LINES;
    this.#count++;
    this.all?.push(line);
  }

  get count(): number {
    return this.#count;
  }

  /** FNV-1a over every line so far, as 8 hex digits: equal for equal runs. */
  get hash(): string {
    return this.#hash.toString(16).padStart(8, "0");
  }

  tail(): string[] {
    if (this.#ring.length < Trace.TAIL_LINES) return [...this.#ring];
    return [...this.#ring.slice(this.#next), ...this.#ring.slice(0, this.#next)];
  }
}

/** Virtual time as milliseconds with microsecond digits: "t=12.345ms". */
export function formatUs(us: number): string {
  return `t=${(us / 1000).toFixed(3)}ms`;
}

export function fmtKey(key: Key): string {
  return keyToText(key);
}

// ---------------------------------------------------------------------------------------------------
// Messages and the network

/** Client → server. A farewell is the last message a leaving client sends on its connection. */
export type UpMessage =
  | { readonly kind: "request"; readonly requestId: number; readonly request: LockRequest }
  | { readonly kind: "invalidate-response"; readonly requestId: number; readonly response: LockInvalidation }
  | { readonly kind: "farewell" };

/** Server → client. The farewell response is sent once the server forgot the client. */
export type DownMessage =
  | { readonly kind: "grant"; readonly requestId: number; readonly grant: LockGrant }
  | { readonly kind: "refuse"; readonly requestId: number; readonly key: Key; readonly code: "EAGAIN" }
  | { readonly kind: "invalidate"; readonly requestId: number; readonly invalidation: LockInvalidation }
  | { readonly kind: "farewell-response" };

export function fmtUp(message: UpMessage): string {
  switch (message.kind) {
    case "request": {
      const r = message.request;
      return `request#${message.requestId} ${fmtKey(r.key)} ${r.oldMode}->${r.newMode}${r.noQueue ? " noqueue" : ""}`;
    }
    case "invalidate-response": {
      const r = message.response;
      return `inv-response#${message.requestId} ${fmtKey(r.key)} ${r.oldMode}->${r.newMode}`;
    }
    case "farewell":
      return "farewell";
  }
}

export function fmtDown(message: DownMessage): string {
  switch (message.kind) {
    case "grant": {
      const g = message.grant;
      return `grant#${message.requestId} ${fmtKey(g.key)} ${g.oldMode}->${g.newMode} seq=${g.writeSeq}`;
    }
    case "refuse":
      return `refuse#${message.requestId} ${fmtKey(message.key)} ${message.code}`;
    case "invalidate": {
      const i = message.invalidation;
      return `invalidate#${message.requestId} ${fmtKey(i.key)} ${i.oldMode}->${i.newMode}`;
    }
    case "farewell-response":
      return "farewell-response";
  }
}

export interface NetworkConfig {
  /** Usual one-way delay, drawn uniformly in [delayMinUs, delayMaxUs]. */
  readonly delayMinUs: number;
  readonly delayMaxUs: number;
  /** With this probability a message is slow instead: uniform in [delayMaxUs, spikeMaxUs]. */
  readonly spikeChance: number;
  readonly spikeMaxUs: number;
}

type Direction = "up" | "down";

interface Connection {
  epoch: number;
  /** Latest scheduled delivery time per direction: a later message is never delivered before it (FIFO). */
  upLastUs: number;
  downLastUs: number;
  inFlightUp: number;
  inFlightDown: number;
}

/**
 * Per-client connections with FIFO directions and random delays. The world registers the two delivery
 * handlers. `dropFilter` (fault injection) may drop a message at send time; `resetConnection` drops what
 * is in flight. Neither is used by the healthy workload.
 */
export class Network {
  readonly #clock: Clock;
  readonly #prng: Prng;
  readonly #config: NetworkConfig;
  readonly #connections: Connection[] = [];
  deliverUp: (client: number, message: UpMessage) => void = () => {};
  deliverDown: (client: number, message: DownMessage) => void = () => {};
  dropFilter:
    ((client: number, direction: Direction, message: UpMessage | DownMessage) => boolean) | undefined;

  constructor(clock: Clock, prng: Prng, config: NetworkConfig, clients: number) {
    this.#clock = clock;
    this.#prng = prng;
    this.#config = config;
    for (let i = 0; i < clients; i++)
      this.#connections.push({ epoch: 0, upLastUs: 0, downLastUs: 0, inFlightUp: 0, inFlightDown: 0 });
  }

  sendUp(client: number, message: UpMessage): void {
    this.#send(client, "up", message);
  }

  sendDown(client: number, message: DownMessage): void {
    this.#send(client, "down", message);
  }

  /** Messages sent and not yet delivered, over every connection. */
  get inFlight(): number {
    let n = 0;
    for (const c of this.#connections) n += c.inFlightUp + c.inFlightDown;
    return n;
  }

  /** Drops everything in flight on one connection, both directions (hook for connection-reset faults). */
  resetConnection(client: number): void {
    const c = this.#conn(client);
    c.epoch++;
    c.inFlightUp = 0;
    c.inFlightDown = 0;
  }

  #conn(client: number): Connection {
    const c = this.#connections[client];
    if (c === undefined) throw new InvariantError(`Network: no connection for client ${client}`);
    return c;
  }

  #drawDelayUs(): number {
    const cfg = this.#config;
    if (this.#prng.chance(cfg.spikeChance)) return this.#prng.int(cfg.delayMaxUs, cfg.spikeMaxUs);
    return this.#prng.int(cfg.delayMinUs, cfg.delayMaxUs);
  }

  #send(client: number, direction: Direction, message: UpMessage | DownMessage): void {
    const c = this.#conn(client);
    if (this.dropFilter?.(client, direction, message) === true) return;
    const epoch = c.epoch;
    const wantedUs = this.#clock.nowUs + this.#drawDelayUs();
    let atUs: number;
    if (direction === "up") {
      atUs = Math.max(wantedUs, c.upLastUs);
      c.upLastUs = atUs;
      c.inFlightUp++;
    } else {
      atUs = Math.max(wantedUs, c.downLastUs);
      c.downLastUs = atUs;
      c.inFlightDown++;
    }
    // Equal times keep FIFO: the clock breaks ties by scheduling order.
    this.#clock.scheduleAt(atUs, () => {
      if (c.epoch !== epoch) return; // dropped by a reset
      if (direction === "up") {
        c.inFlightUp--;
        this.deliverUp(client, message as UpMessage);
      } else {
        c.inFlightDown--;
        this.deliverDown(client, message as DownMessage);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Machine calls

/** A machine threw: always a finding (an InvariantError is a bug report from the machine itself). */
export class MachineThrew extends Error {
  constructor(
    readonly where: string,
    readonly original: unknown,
  ) {
    const text =
      original instanceof KeylockError || original instanceof Error
        ? `${original.name}: ${original.message}`
        : String(original);
    super(`${where} threw ${text}`);
    this.name = "MachineThrew";
  }
}

function callMachine<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof MachineThrew) throw error;
    if (error instanceof SimAbort) throw error;
    throw new MachineThrew(where, error);
  }
}

/** Thrown by checkers (see checkers.ts `Violation`) and anything else that must stop the run at once. */
export class SimAbort extends Error {}

// ---------------------------------------------------------------------------------------------------
// Server node

/**
 * The member running the lock server. Receives client messages, calls the LockServer, tells the checkers
 * about every effect, and sends the effects in order. Invalidations get a per-connection request id
 * (the session layer's job in production); the client echoes it in its response.
 */
export class ServerNode {
  server: LockServer;
  /** The persisted write-seq high-water mark: survives crash/restart. (reuse-write-seq tampers with grants, not with this.) */
  readonly writeSeq: WriteSeqSource & { readonly last: bigint };
  #up = true;
  readonly #world: World;
  readonly #nextInvalidationId: number[];
  /** grant-while-invalidating: invalidations answered by the node itself whose real answer must be swallowed. */
  readonly #fakedAnswers = new Set<string>();
  /** null-compatible-within-client: (client, key) with a null request queued. */
  readonly #ownNullPending = new Set<string>();
  /** Clients whose farewell was processed: their connection is closed. */
  readonly #gone = new Set<number>();
  #writeGrants = 0;
  #lastWriteSeqSent = 0n;
  #queuedRequests = 0;

  constructor(world: World) {
    this.#world = world;
    this.writeSeq = new WriteSeqCounter(0n);
    this.server = new LockServer({ writeSeq: this.writeSeq });
    this.#nextInvalidationId = world.clients.map(() => 0);
  }

  get up(): boolean {
    return this.#up;
  }

  /** A message from client `index` arrives. */
  receive(index: number, message: UpMessage): void {
    const world = this.#world;
    const client = world.clients[index]!;
    if (this.#gone.has(index)) {
      // The driver closed the connection after the farewell; anything later on it is ignored.
      world.trace.add(`S <- ${client.name} ${fmtUp(message)} (after its farewell: ignored)`);
      return;
    }
    world.trace.add(`S <- ${client.name} ${fmtUp(message)}`);
    world.checkers.upDelivered(index, message);
    if (!this.#up) return; // crashed: the message is lost with the server
    if (message.kind === "farewell") {
      this.clientGone(index);
      this.#send(index, { kind: "farewell-response" });
      return;
    }
    if (message.kind === "request") {
      if (world.mutation === "null-compatible-within-client" && message.request.newMode === "null") {
        this.#ownNullPending.add(`${index}:${message.request.key}`);
      }
      const handle = (): void =>
        this.apply(
          callMachine("LockServer.onRequest", () =>
            this.server.onRequest(client.rid, message.requestId, message.request),
          ),
        );
      if (
        world.mutation === "reorder-requests" &&
        !message.request.noQueue &&
        ++this.#queuedRequests % 3 === 0
      ) {
        world.trace.add(`S mutation: set request#${message.requestId} of ${client.name} aside for 5ms`);
        world.clock.schedule(5_000, handle);
        return;
      }
      handle();
    } else {
      const tag = `${index}:${message.response.key}`;
      if (world.mutation === "grant-while-invalidating" && this.#fakedAnswers.delete(tag)) {
        world.trace.add(`S mutation: swallow real ${client.name} response (already answered itself)`);
        return;
      }
      this.apply(
        callMachine("LockServer.onInvalidateResponse", () =>
          this.server.onInvalidateResponse(client.rid, message.response),
        ),
      );
    }
  }

  /** Farewell / reclaim: the client left; its entries go and waiting requests may be granted. */
  clientGone(index: number): void {
    const client = this.#world.clients[index]!;
    this.#gone.add(index);
    this.#world.trace.add(`S client gone ${client.name}`);
    this.#world.checkers.clientGone(index);
    this.apply(callMachine("LockServer.onClientGone", () => this.server.onClientGone(client.rid)));
  }

  /** Hook: the server process dies. Everything in its memory is gone; deliveries are dropped until restart. */
  crash(): void {
    this.#up = false;
    this.#world.trace.add("S crash");
  }

  /** Hook: a new server instance with the persisted write-seq high-water mark, holding for recovery. */
  restart(): void {
    this.server = new LockServer({ writeSeq: this.writeSeq });
    this.server.holdForRecovery();
    this.#up = true;
    this.#world.trace.add("S restart (holding for recovery)");
  }

  /** Carries out server effects in order; checkers see each before it is sent. */
  apply(effects: readonly LockServerEffect[]): void {
    const world = this.#world;
    for (const effect of effects) {
      const index = world.clientIndexOf(effect.rid);
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
          this.#send(index, message);
          break;
        }
        case "refuse":
          this.#send(index, {
            kind: "refuse",
            requestId: effect.requestId,
            key: effect.key,
            code: effect.code,
          });
          break;
        case "invalidate": {
          const inv = effect.invalidation;
          const tag = `${index}:${inv.key}`;
          if (
            world.mutation === "null-compatible-within-client" &&
            inv.newMode === "null" &&
            this.#ownNullPending.has(tag)
          ) {
            world.trace.add(
              `S mutation: treat ${world.clients[index]!.name}'s own ${inv.oldMode} as compatible with its null request; answer invalidation itself`,
            );
            this.apply(
              callMachine("LockServer.onInvalidateResponse", () =>
                this.server.onInvalidateResponse(effect.rid, inv),
              ),
            );
            break;
          }
          const requestId = ++this.#nextInvalidationId[index]!;
          this.#send(index, { kind: "invalidate", requestId, invalidation: inv });
          if (world.mutation === "grant-while-invalidating") {
            this.#fakedAnswers.add(tag);
            world.trace.add(`S mutation: answer invalidate#${requestId} itself`);
            this.apply(
              callMachine("LockServer.onInvalidateResponse", () =>
                this.server.onInvalidateResponse(effect.rid, inv),
              ),
            );
          }
          break;
        }
        case "protocol-error":
          world.trace.add(`S protocol-error for ${world.clients[index]!.name}: ${effect.error.message}`);
          world.checkers.protocolError(index, effect.error.message);
          break;
      }
    }
  }

  #send(index: number, message: DownMessage): void {
    const world = this.#world;
    world.trace.add(`S -> ${world.clients[index]!.name} ${fmtDown(message)}`);
    world.checkers.downSent(index, message);
    world.network.sendDown(index, message);
  }
}

// ---------------------------------------------------------------------------------------------------
// Client node

export type WaiterState = "waiting" | "granted" | "failed" | "released";

/** What the application knows about one acquire call. */
export interface Waiter {
  readonly id: WaiterId;
  readonly client: number;
  readonly owner: string;
  readonly key: Key;
  readonly mode: "read" | "write" | "write_only";
  readonly nonblock: boolean;
  aborted: boolean;
  state: WaiterState;
  writeSeq: bigint;
  failCode: string | undefined;
  /** shared-write-handles mutation: granted by the sim, not by the machine. */
  fake: boolean;
  /** swallow-grant mutation: the machine granted it but the application never heard. */
  lost: boolean;
  readonly onResolve: (waiter: Waiter) => void;
}

export interface CallbackConfig {
  /** App invalidation callback duration: uniform in [0, maxUs], or with slowChance in [maxUs, slowMaxUs]. */
  readonly maxUs: number;
  readonly slowChance: number;
  readonly slowMaxUs: number;
}

/** One application process: the real ClientLocks plus an application cache of the shared resource. */
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
  /** The farewell response arrived and the machine was reset. */
  left = false;
  readonly #world: World;
  readonly #prng: Prng;
  readonly #callbackConfig: CallbackConfig;
  #nextRequestId = 0;
  #nextWaiterId = 0;
  #grantedEffects = 0;
  #inMachine = false;
  /** early-invalidation-response: invalidation request ids this node already answered itself. */
  readonly #answeredEarly = new Set<number>();

  constructor(
    world: World,
    index: number,
    rid: Rid,
    idleLockLimit: number,
    prng: Prng,
    callbackConfig: CallbackConfig,
  ) {
    this.#world = world;
    this.index = index;
    this.rid = rid;
    this.name = `c${index}`;
    this.#prng = prng;
    this.#callbackConfig = callbackConfig;
    this.locks = new ClientLocks({ idleLockLimit });
  }

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

  /**
   * The application reads the shared resource under `waiter`'s read or write handle: from its cache when
   * it has one (the checker compares it with the resource), then caches what the resource holds.
   */
  appRead(waiter: Waiter): void {
    const world = this.#world;
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

  /** A message from the server arrives. */
  receive(message: DownMessage): void {
    const world = this.#world;
    if (this.left)
      throw new InvariantError(`sim: ${this.name} got ${fmtDown(message)} after its farewell response`);
    world.trace.add(`${this.name} <- S ${fmtDown(message)}`);
    world.checkers.downDelivered(this.index, message);
    switch (message.kind) {
      case "farewell-response":
        // The server forgot us: drop everything (callbacks still running are voided by the machine).
        this.left = true;
        this.#call("ClientLocks.reset", () => this.locks.reset("ESHUTDOWN"));
        world.checkers.clientLeft(this.index);
        break;
      case "grant":
        this.#call("ClientLocks.onGrant", () => this.locks.onGrant(message.grant));
        break;
      case "refuse":
        this.#call("ClientLocks.onRefuse", () => this.locks.onRefuse(message.key, message.code));
        break;
      case "invalidate":
        if (world.mutation === "early-invalidation-response") {
          world.trace.add(`${this.name} mutation: answer invalidate#${message.requestId} at once`);
          this.#answeredEarly.add(message.requestId);
          this.#sendInvalidateResponse(message.requestId, message.invalidation);
        }
        this.#call("ClientLocks.onInvalidate", () =>
          this.locks.onInvalidate(message.requestId, message.invalidation),
        );
        break;
    }
  }

  /**
   * Graceful close (the application released its handles first): shut the machine down (waiters fail
   * ESHUTDOWN, queued invalidations are answered without callbacks), then send the farewell as the
   * connection's last message. The farewell response resets the machine (`left` becomes true).
   */
  leave(): void {
    const world = this.#world;
    if (this.leaving) throw new InvariantError(`sim: ${this.name} leaves twice`);
    this.leaving = true;
    world.trace.add(`${this.name} close: shutdown, then farewell`);
    world.checkers.clientLeaving(this.index);
    this.#call("ClientLocks.shutdown", () => this.locks.shutdown("ESHUTDOWN"));
    this.#sendUp({ kind: "farewell" });
  }

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
          const requestId = ++this.#nextRequestId;
          this.#sendUp({ kind: "request", requestId, request: effect.request }, () =>
            world.checkers.requestSent(this.index, requestId, effect.request),
          );
          break;
        }
        case "send-invalidate-response":
          if (this.#answeredEarly.delete(effect.requestId)) {
            world.trace.add(
              `${this.name} mutation: swallow the machine's answer to invalidate#${effect.requestId}`,
            );
            break;
          }
          this.#sendInvalidateResponse(effect.requestId, effect.response);
          break;
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

  #sendInvalidateResponse(requestId: number, response: LockInvalidation): void {
    this.#sendUp({ kind: "invalidate-response", requestId, response }, () =>
      this.#world.checkers.invalidateResponseSent(this.index, response),
    );
  }

  /** The one place this node hands a message to the network: traced, then checked, then sent. */
  #sendUp(message: UpMessage, check?: () => void): void {
    this.#world.trace.add(`${this.name} -> S ${fmtUp(message)}`);
    check?.();
    this.#world.network.sendUp(this.index, message);
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
    world.trace.add(
      `${this.name}/${waiter.owner} granted w${waiter.id} ${fmtKey(waiter.key)} ${mode} seq=${writeSeq}`,
    );
    world.checkers.granted(waiter, mode);
    waiter.onResolve(waiter);
  }

  /** The application's invalidation callback: takes random virtual time, then drops the cache unless it is write→read. */
  #startCallback(invalidationId: number, key: Key, from: LockMode, to: LockMode): void {
    const world = this.#world;
    const cfg = this.#callbackConfig;
    const durationUs = this.#prng.chance(cfg.slowChance)
      ? this.#prng.int(cfg.maxUs, cfg.slowMaxUs)
      : this.#prng.int(0, cfg.maxUs);
    this.callbacks.set(invalidationId, { key, from, to });
    world.trace.add(
      `${this.name} app callback#${invalidationId} ${fmtKey(key)} ${from}->${to} (takes ${durationUs}us)`,
    );
    world.checkers.callbackStarted(this.index, key, from, to);
    world.clock.schedule(durationUs, () => {
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

// ---------------------------------------------------------------------------------------------------
// The world

export interface WorldConfig {
  readonly clients: number;
  readonly idleLockLimit: number;
  readonly network: NetworkConfig;
  readonly callback: CallbackConfig;
  readonly mutation: Mutation;
  readonly keepTrace: boolean;
}

/** Shared simulated resource per key: what the cache-coherence and fencing checks compare against. */
export interface Resource {
  version: number;
  /** Highest fencing token any accepted write carried. */
  maxToken: bigint;
  /** Highest token an accepted exclusive (write-mode) write carried. */
  maxWriteToken: bigint;
}

export class World {
  readonly clock = new Clock();
  readonly trace: Trace;
  readonly network: Network;
  readonly clients: ClientNode[] = [];
  readonly server: ServerNode;
  readonly checkers: Checkers;
  readonly mutation: Mutation;
  readonly resources = new Map<Key, Resource>();
  readonly #ridToIndex = new Map<Rid, number>();

  constructor(config: WorldConfig, prng: Prng, makeCheckers: (world: World) => Checkers) {
    this.mutation = config.mutation;
    this.trace = new Trace(this.clock, config.keepTrace);
    this.network = new Network(this.clock, prng.fork("network"), config.network, config.clients);
    const ridPrng = prng.fork("rids");
    for (let i = 0; i < config.clients; i++) {
      let rid = ridPrng.u64NonZero();
      while (this.#ridToIndex.has(rid)) rid = ridPrng.u64NonZero();
      this.#ridToIndex.set(rid, i);
      this.clients.push(
        new ClientNode(this, i, rid, config.idleLockLimit, prng.fork(`callbacks.${i}`), config.callback),
      );
    }
    this.checkers = makeCheckers(this);
    this.server = new ServerNode(this);
    this.network.deliverUp = (client, message) => this.server.receive(client, message);
    this.network.deliverDown = (client, message) => this.clients[client]!.receive(message);
    for (const c of this.clients) this.trace.add(`${c.name} rid=${ridToHex(c.rid)}`);
  }

  clientIndexOf(rid: Rid): number {
    const index = this.#ridToIndex.get(rid);
    if (index === undefined) throw new InvariantError(`sim: server addressed unknown rid ${ridToHex(rid)}`);
    return index;
  }

  resource(key: Key): Resource {
    let r = this.resources.get(key);
    if (r === undefined) {
      r = { version: 0, maxToken: 0n, maxWriteToken: 0n };
      this.resources.set(key, r);
    }
    return r;
  }
}

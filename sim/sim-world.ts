/**
 * The simulated world the production drivers run in (issue 10, STYLE "TigerBeetle and FoundationDB"):
 * simulated processes, each an io/world.ts `World` (clock, timers, transport, randomness), over one
 * event queue (base.ts Clock), one seeded PRNG (prng.ts), a simulated network, MemoryStore instances on
 * one MemoryDatabase with latency, outages and crashes, and a fence agent that kills simulated processes.
 * The real LockServerRuntime (runtime/server.ts) and LockClient (client/) run here unchanged, and so does
 * the member driver (runtime/member.ts, over `SimDatagrams`: election.ts, cluster.ts).
 *
 * Guarantees:
 * - Deterministic: `run()` takes one event at a time and, before the next, lets every pending promise
 *   callback and nextTick run to the end (it waits for a setImmediate, which Node runs only after both
 *   queues are empty). The drivers reach time, timers, sockets and randomness only through the world, so
 *   nothing else can interleave: the same seed gives the same trace.
 * - Connections are byte-faithful: every message is encoded and decoded by the real codec
 *   (protocol/codec.ts). A hostile peer (hostile-peer.ts) may send raw bytes instead (`sendRaw`: garbage,
 *   lying lengths, a frame cut in two), which the receiving end's real FrameDecoder takes as a stream, and
 *   read raw bytes (`startRaw`), or stop reading (`reading = false`: what arrives is counted, never
 *   delivered, and past SEND_QUEUE_BYTES_MAX the sender closes as io/tcp.ts does). They are reliable and
 *   ordered while open (TCP); with `coalesceChance`, a frame sent while another is in flight may arrive in
 *   the same read (handled in one synchronous run, as TCP delivers several frames in one chunk); a reset
 *   loses what is in flight but for a random prefix, and each side learns of it after its own delay. A
 *   partition between two
 *   processes resets their connections and makes connects between them time out until it heals.
 * - A killed process never runs again: its timers do not fire, its connections reset, messages to it are
 *   dropped, and its store calls never answer (a write it had in flight lands or not, by the PRNG).
 *   Promise chains it had started may still settle, but reach nothing outside it.
 * - Datagrams (`SimDatagrams`, io/world.ts `Datagrams`): unreliable like UDP — each one is lost, duplicated
 *   or delayed (so reordered) by the PRNG, and dropped while its direction is blocked (partitions,
 *   one-way ones included); it reaches whichever live process has the destination address bound when it
 *   arrives. A stalled process gets its timers and datagrams when the stall ends, datagrams first (B41).
 * - Store calls take a random latency; during an outage they fail with StoreError EIO (or hang, by the
 *   PRNG); the MemoryDatabase outlives every process (the durable store).
 * Relies on: the drivers taking their world from io/world.ts (no direct Date.now, setTimeout, sockets or
 * Math.random on the paths the simulator runs) and MemoryStore applying each call atomically.
 */
import { FrameDecoder, encodeMessage } from "../src/protocol/codec.js";
import type { Message } from "../src/protocol/messages.js";
import type { ConnectionHandlers } from "../src/io/tcp.js";
import type {
  Clock as WorldClock,
  DatagramSocket,
  DatagramSource,
  Datagrams,
  MessageConnection,
  Timer as WorldTimer,
  Transport,
  World,
} from "../src/io/world.js";
import type { FenceAgent, FenceTarget } from "../src/io/fence.js";
import { MemoryDatabase, MemoryStore } from "../src/store/memory.js";
import { StoreError, type Store } from "../src/store/store.js";
import { SEND_QUEUE_BYTES_MAX } from "../src/core/limits.js";
import { Clock, Timer, Trace, fmtWire } from "./base.js";
import { Prng, fnv1a } from "./prng.js";

/** Events at one virtual instant beyond which a run is stopped as a livelock (a 0 ms timer re-armed forever). */
const SAME_TIME_EVENTS_MAX = 100_000;

/** Virtual wall clock at time 0 (2026-01-01): records carry plausible times. */
const EPOCH_MS = 1_767_225_600_000;

export interface NetworkConfig {
  /** One-way delay per message, uniform in [delayMinUs, delayMaxUs]; with spikeChance up to spikeMaxUs. */
  readonly delayMinUs: number;
  readonly delayMaxUs: number;
  readonly spikeChance: number;
  readonly spikeMaxUs: number;
  /** At a reset, the chance that a prefix of what is in flight still arrives. */
  readonly lateChance: number;
  /**
   * The chance that a frame sent while an earlier one of the same direction is still in flight arrives in
   * the same read as it (TCP coalescing: the receiver handles both in one synchronous run). 0 or absent: never.
   */
  readonly coalesceChance?: number;
}

export const DEFAULT_NETWORK: NetworkConfig = { delayMinUs: 50, delayMaxUs: 400, spikeChance: 0.02, spikeMaxUs: 20_000, lateChance: 0.3 };

/** One world: the queue, the PRNG, the trace, the network and the durable store. */
export class SimWorld {
  readonly queue = new Clock();
  readonly prng: Prng;
  readonly trace: Trace;
  readonly network: SimNetwork;
  /** The members' store; its grant-tag key comes from the seed (a stream of its own: no other draw moves). */
  readonly database: MemoryDatabase;
  readonly processes: SimProcess[] = [];
  /** Set by a checker (or anything) to stop `run()` at once; reported by the caller. */
  stopped: string | null = null;

  constructor(
    readonly seed: number,
    options: { keepTrace?: boolean; network?: NetworkConfig } = {},
  ) {
    this.prng = new Prng(seed);
    const keyStream = new Prng(fnv1a(`grant-tag key ${seed}`));
    this.database = new MemoryDatabase({ randomBytes: (size) => Uint8Array.from({ length: size }, () => keyStream.u32() & 0xff) });
    this.trace = new Trace(this.queue, options.keepTrace === true);
    this.network = new SimNetwork(this, options.network ?? DEFAULT_NETWORK, this.prng.fork("network"));
  }

  get nowUs(): number {
    return this.queue.nowUs;
  }

  /** A new process; `name` appears in traces and addresses. */
  spawn(name: string): SimProcess {
    const process = new SimProcess(this, name, this.prng.fork(`process ${name}`));
    this.processes.push(process);
    return process;
  }

  /** Schedules `run` after `delayUs` (world-level: not owned by any process). */
  at(delayUs: number, run: () => void): void {
    this.queue.schedule(delayUs, run);
  }

  /**
   * Runs events until the queue is empty, virtual time passes `untilUs`, or `stopped` is set, letting every
   * promise callback and nextTick settle after each event. Returns the number of events run.
   */
  async run(untilUs: number): Promise<number> {
    let events = 0;
    let sameTime = 0;
    await settle();
    while (this.stopped === null) {
      const next = this.queue.nextAtUs;
      if (next === undefined || next > untilUs) break;
      sameTime = next === this.queue.nowUs ? sameTime + 1 : 0;
      if (sameTime > SAME_TIME_EVENTS_MAX) {
        this.stopped = `livelock: more than ${SAME_TIME_EVENTS_MAX} events at t=${next}us without time passing`;
        break;
      }
      this.queue.step();
      events++;
      await settle();
    }
    return events;
  }
}

/** Resolves once Node ran every nextTick and promise callback queued so far (and those they queued). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------------
// Processes

/** A simulated process: the `World` its drivers see. Dies once (`kill`), never to run again. */
export class SimProcess implements World {
  alive = true;
  /** Clock rate (skew): this process's ms pass `rate` times as fast as virtual ms (1: no skew). */
  rate = 1;
  /** A stalled process (a GC pause, SIGSTOP) runs none of its timers or datagrams until then (µs). */
  stalledUntilUs = 0;
  readonly clock: WorldClock;
  readonly transport: Transport;
  readonly random: () => number;
  /** Connections this process holds an end of (reset when it dies). */
  readonly ends = new Set<SimEnd>();
  readonly #onKill: (() => void)[] = [];

  constructor(
    readonly world: SimWorld,
    readonly name: string,
    readonly prng: Prng,
  ) {
    const queue = world.queue;
    this.clock = {
      now: () => EPOCH_MS + Math.floor(queue.nowUs / 1000),
      monotonicMs: () => (queue.nowUs * this.rate) / 1000,
      setTimeout: (run, delayMs) => {
        const timer = new Timer();
        if (!this.alive) {
          timer.cancel();
          return timer;
        }
        queue.schedule((Math.max(0, delayMs) * 1000) / this.rate, () => this.whenAwake(() => !timer.cancelled && run()));
        return timer;
      },
      // After the events already due now (datagrams that arrived during a stall are queued before it: B41).
      defer: (run) => queue.schedule(0, () => this.whenAwake(run)),
      clearTimeout: (timer: WorldTimer | null | undefined) => {
        if (timer instanceof Timer) timer.cancel();
      },
    };
    this.transport = { connect: (server, timeoutMs) => world.network.connect(this, server, timeoutMs) };
    this.random = () => prng.float();
  }

  /** Runs `run` now if this process is alive and not stalled; once its stall ends if stalled; never if dead. */
  whenAwake(run: () => void): void {
    if (!this.alive) return;
    if (this.stalledUntilUs > this.world.queue.nowUs) {
      this.world.queue.scheduleAt(this.stalledUntilUs, () => this.whenAwake(run));
      return;
    }
    run();
  }

  /** Called once when this process dies. */
  onKill(run: () => void): void {
    this.#onKill.push(run);
  }

  /** The process dies at once: no timer of it fires again, its connections reset, its store calls hang. */
  kill(why: string): void {
    if (!this.alive) return;
    this.alive = false;
    this.world.trace.add(`${this.name} killed: ${why}`);
    for (const end of [...this.ends]) this.world.network.reset(end.link, "peer process died");
    for (const run of this.#onKill.splice(0)) run();
  }

  /** Sleeps in virtual time (for workloads); never resolves once the process died. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }
}

// ---------------------------------------------------------------------------------------------------
// Network

interface Listener {
  readonly process: SimProcess;
  readonly onConnection: (connection: MessageConnection) => void;
}

/** One direction's in-flight frames (FIFO: a later frame is never delivered before an earlier one). */
interface Flight {
  lastUs: number;
  readonly frames: { cancelled: boolean }[];
  /** The last read scheduled and not yet delivered, which a coalesced frame joins. */
  pending: { frames: Uint8Array[]; entries: { cancelled: boolean }[] } | null;
}

class Link {
  open = true;
  readonly client: SimEnd;
  readonly server: SimEnd;
  constructor(
    readonly id: number,
    clientProcess: SimProcess,
    serverProcess: SimProcess,
    serverAddress: string,
  ) {
    this.client = new SimEnd(this, clientProcess, serverAddress);
    this.server = new SimEnd(this, serverProcess, `${clientProcess.name}:${10_000 + id}`);
    this.client.peer = this.server;
    this.server.peer = this.client;
  }
}

/** One end of a simulated connection: the MessageConnection a driver holds. */
export class SimEnd implements MessageConnection {
  peer!: SimEnd;
  #handlers: ConnectionHandlers | null = null;
  #closed = false;
  #closeReason = "";
  /** Frames that arrived before `start`. */
  readonly #early: Uint8Array[] = [];
  readonly #decoder = new FrameDecoder();
  readonly outbound: Flight = { lastUs: 0, frames: [], pending: null };
  /** A raw end (a hostile peer's): bytes as they arrive, no decoding. */
  #raw: { onBytes(bytes: Uint8Array): void; onClose(reason: string): void } | null = null;
  /** false: this end stopped reading; what arrives is only counted (bounded, see `receive`). */
  reading = true;
  #unreadBytes = 0;

  constructor(
    readonly link: Link,
    readonly process: SimProcess,
    readonly remoteAddress: string,
  ) {
    process.ends.add(this);
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  start(handlers: ConnectionHandlers): void {
    this.#handlers = handlers;
    if (this.#closed) {
      handlers.onClose(this.#closeReason);
      return;
    }
    for (const frame of this.#early.splice(0)) this.receive(frame);
  }

  /** Starts a raw end: `onBytes` gets each chunk as it arrives (nothing decoded), `onClose` once. */
  startRaw(handlers: { onBytes(bytes: Uint8Array): void; onClose(reason: string): void }): void {
    this.#raw = handlers;
    this.start({ onMessage: () => undefined, onClose: (reason) => handlers.onClose(reason) });
  }

  /** Sends bytes as they are (a hostile peer's frames, garbage, a partial frame): the peer decodes a stream. */
  sendRaw(bytes: Uint8Array): boolean {
    if (this.#closed || !this.link.open) return false;
    this.process.world.network.carry(this, bytes);
    return true;
  }

  send(message: Message): boolean {
    if (this.#closed || !this.link.open) return false;
    let frame: Uint8Array;
    try {
      frame = encodeMessage(message);
    } catch (error) {
      this.close(`cannot encode outgoing message: ${(error as Error).message}`);
      return false;
    }
    this.process.world.network.carry(this, frame);
    return true;
  }

  /** A frame arrived from the peer. */
  receive(frame: Uint8Array): void {
    if (this.#closed || !this.process.alive) return;
    if (this.#handlers === null) {
      this.#early.push(frame);
      return;
    }
    if (!this.reading) {
      // Not read: the sender's queue grows; past the bound it gives up on this peer (io/tcp.ts flush).
      this.#unreadBytes += frame.length;
      if (this.#unreadBytes > SEND_QUEUE_BYTES_MAX) this.peer.close(`peer is not reading: more than ${SEND_QUEUE_BYTES_MAX} bytes queued`);
      return;
    }
    if (this.#raw !== null) {
      this.#raw.onBytes(frame);
      return;
    }
    let messages: Message[];
    try {
      messages = this.#decoder.push(frame);
    } catch (error) {
      this.close(`malformed input: ${(error as Error).message}`);
      return;
    }
    for (const message of messages) {
      if (this.#closed) return;
      this.process.world.trace.add(`${this.peer.process.name} -> ${this.process.name} link ${this.link.id}: ${fmtWire(message)}`);
      this.#handlers.onMessage(message);
    }
  }

  /** Graceful: what was sent is still delivered, then the peer learns of the close. */
  close(reason: string): void {
    if (this.#closed) return;
    this.process.world.network.end(this, reason, true);
  }

  destroy(reason: string): void {
    if (this.#closed) return;
    this.process.world.network.end(this, reason, false);
  }

  /** This side learns the connection ended (once). */
  closed(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    this.process.ends.delete(this);
    if (this.process.alive) this.#handlers?.onClose(reason);
  }
}

export class SimNetwork {
  readonly #listeners = new Map<string, Listener>();
  /** Pairs of process names that cannot reach each other, until the given time. */
  readonly #partitions = new Map<string, number>();
  #nextLink = 1;
  resets = 0;
  /** Called with every chunk a connection carries (hostile-peer.ts records honest traffic as its corpus). */
  readonly taps: ((from: SimEnd, bytes: Uint8Array) => void)[] = [];

  constructor(
    readonly world: SimWorld,
    readonly config: NetworkConfig,
    readonly prng: Prng,
  ) {}

  listen(process: SimProcess, address: string, onConnection: (connection: MessageConnection) => void): () => void {
    const listener: Listener = { process, onConnection };
    this.#listeners.set(address, listener);
    process.onKill(() => this.#unlisten(address, listener));
    return () => this.#unlisten(address, listener);
  }

  #unlisten(address: string, listener: Listener): void {
    if (this.#listeners.get(address) === listener) this.#listeners.delete(address);
  }

  /** `a` and `b` cannot reach each other for `forUs`: their connections reset, connects time out. */
  partition(a: SimProcess, b: SimProcess, forUs: number): void {
    const key = pairKey(a.name, b.name);
    this.#partitions.set(key, Math.max(this.#partitions.get(key) ?? 0, this.world.nowUs + forUs));
    this.world.trace.add(`partition ${a.name} | ${b.name} for ${forUs}us`);
    for (const end of [...a.ends]) if (end.link.server.process === b || end.link.client.process === b) this.reset(end.link, "partitioned");
  }

  #partitioned(a: SimProcess, b: SimProcess): boolean {
    return (this.#partitions.get(pairKey(a.name, b.name)) ?? -1) > this.world.nowUs;
  }

  connect(from: SimProcess, server: string, timeoutMs: number): Promise<MessageConnection> {
    return new Promise((resolve, reject) => {
      if (!from.alive) return; // a dead process waits forever
      const delayUs = this.#delayUs();
      this.world.queue.schedule(delayUs, () => {
        if (!from.alive) return;
        const listener = this.#listeners.get(server);
        if (listener === undefined || !listener.process.alive) {
          this.world.queue.schedule(this.#delayUs(), () => reject(new Error(`connect ECONNREFUSED ${server}`)));
          return;
        }
        if (this.#partitioned(from, listener.process)) {
          this.world.queue.schedule(Math.max(0, timeoutMs * 1000 - delayUs), () =>
            reject(new Error(`connect to ${server} timed out after ${timeoutMs} ms`)),
          );
          return;
        }
        const link = new Link(this.#nextLink++, from, listener.process, server);
        this.world.trace.add(`connect ${from.name} -> ${server} (link ${link.id})`);
        listener.onConnection(link.server);
        this.world.queue.schedule(this.#delayUs(), () => {
          if (link.open && from.alive) resolve(link.client);
          else reject(new Error(`connection to ${server} reset while connecting`));
        });
      });
    });
  }

  /** Carries one frame from `end` to its peer after a delay, in order. */
  carry(end: SimEnd, frame: Uint8Array): void {
    for (const tap of this.taps) tap(end, frame);
    const flight = end.outbound;
    const entry = { cancelled: false };
    flight.frames.push(entry);
    const coalesce = this.config.coalesceChance ?? 0;
    if (coalesce > 0 && flight.pending !== null && this.prng.chance(coalesce)) {
      // Arrives in the same read as the frame ahead of it.
      flight.pending.frames.push(frame);
      flight.pending.entries.push(entry);
      return;
    }
    const atUs = Math.max(this.world.nowUs + this.#delayUs(), flight.lastUs);
    flight.lastUs = atUs;
    const read = { frames: [frame], entries: [entry] };
    if (coalesce > 0) flight.pending = read;
    this.world.queue.scheduleAt(atUs, () => {
      if (flight.pending === read) flight.pending = null;
      for (let i = 0; i < read.frames.length; i++) {
        flight.frames.shift();
        if (!read.entries[i]!.cancelled) end.peer.receive(read.frames[i]!);
      }
    });
  }

  /** One side ends the connection: graceful (the rest is delivered first) or abrupt. */
  end(end: SimEnd, reason: string, graceful: boolean): void {
    const link = end.link;
    if (!link.open) {
      end.closed(reason);
      return;
    }
    link.open = false;
    end.closed(reason);
    const peer = end.peer;
    if (!graceful) for (const entry of end.outbound.frames) entry.cancelled = true;
    const atUs = Math.max(this.world.nowUs + this.#delayUs(), graceful ? end.outbound.lastUs : 0);
    this.world.queue.scheduleAt(atUs, () => peer.closed("peer closed the connection"));
  }

  /** The connection resets (a network fault): in-flight frames are lost but for a random prefix; each side learns after a delay. */
  reset(link: Link, why: string): void {
    if (!link.open) return;
    link.open = false;
    this.resets++;
    this.world.trace.add(`reset link ${link.id} (${link.client.process.name} - ${link.server.process.name}): ${why}`);
    for (const end of [link.client, link.server]) {
      const frames = end.outbound.frames;
      const keep = this.prng.chance(this.config.lateChance) ? this.prng.int(0, frames.length) : 0;
      for (let i = keep; i < frames.length; i++) frames[i]!.cancelled = true;
      this.world.queue.schedule(this.#delayUs(), () => end.closed(`connection reset: ${why}`));
    }
  }

  #delayUs(): number {
    const c = this.config;
    if (this.prng.chance(c.spikeChance)) return this.prng.int(c.delayMaxUs, c.spikeMaxUs);
    return this.prng.int(c.delayMinUs, c.delayMaxUs);
  }
}

function pairKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

// ---------------------------------------------------------------------------------------------------
// Store

export interface StoreFaults {
  /** Latency of a store call, uniform in [minUs, maxUs]. */
  readonly latencyMinUs: number;
  readonly latencyMaxUs: number;
  /** During an outage: the chance a call hangs (else it fails EIO after its latency). */
  readonly hangChance: number;
}

export const DEFAULT_STORE_FAULTS: StoreFaults = { latencyMinUs: 100, latencyMaxUs: 1_500, hangChance: 0.3 };

/**
 * The durable store as one process sees it: the world's MemoryDatabase through a MemoryStore, each call
 * applied after a random latency and answered after another (a crash between the two leaves the write
 * durable but unanswered). `outageUntilUs` makes calls fail EIO or hang.
 */
export class SimStore {
  outageUntilUs = 0;

  constructor(
    readonly world: SimWorld,
    readonly faults: StoreFaults = DEFAULT_STORE_FAULTS,
  ) {}

  /** A Store for `process`: calls from a dead process never answer. */
  for(process: SimProcess, wrap: (store: Store) => Store = (s) => s): Store {
    const inner = wrap(new MemoryStore(this.world.database));
    const prng = process.prng.fork("store");
    const queue = this.world.queue;
    const latency = (): number => prng.int(this.faults.latencyMinUs, this.faults.latencyMaxUs);
    return new Proxy(inner, {
      get: (target, property, receiver) => {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== "function" || property === "close") return value;
        const method = value as (...args: unknown[]) => Promise<unknown>;
        return (...args: unknown[]) =>
          new Promise((resolve, reject) => {
            if (!process.alive) return;
            queue.schedule(latency(), () => {
              if (queue.nowUs < this.outageUntilUs) {
                if (prng.chance(this.faults.hangChance)) return;
                if (process.alive) reject(new StoreError("EIO", `simulated store outage (${String(property)})`));
                return;
              }
              let result: Promise<unknown>;
              try {
                result = method.apply(target, args);
              } catch (error) {
                result = Promise.reject(error instanceof Error ? error : new Error(String(error)));
              }
              result.then(
                (v) => queue.schedule(latency(), () => process.alive && resolve(v)),
                (e: unknown) => queue.schedule(latency(), () => process.alive && reject(e instanceof Error ? e : new Error(String(e)))),
              );
            });
          });
      },
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Fencing

/**
 * Fences by killing the simulated process registered for the target's rid (reference §5.6: the fence
 * agent's word is final). `failChance` makes a fence fail (the server then stops, as with a real agent);
 * `kills: false` reports success without killing (a misconfigured agent: the stress profile).
 */
export class SimFenceAgent implements FenceAgent {
  readonly name = "simulated";
  readonly owners = new Map<bigint, SimProcess>();
  failChance = 0;
  kills = true;
  fenced = 0;
  /** A fence takes 200 µs up to this long (a slow agent: power switches, cloud APIs). */
  delayMaxUs = 5_000;

  constructor(
    readonly world: SimWorld,
    readonly prng: Prng,
  ) {}

  fence(target: FenceTarget): Promise<void> {
    return new Promise((resolve, reject) => {
      this.world.queue.schedule(this.prng.int(200, this.delayMaxUs), () => {
        if (this.prng.chance(this.failChance)) {
          this.world.trace.add(`fence of ${target.rid.toString(16)} failed`);
          reject(new Error(`simulated fence agent failed for ${target.rid.toString(16)}`));
          return;
        }
        this.fenced++;
        const owner = this.owners.get(target.rid);
        if (this.kills) owner?.kill(`fenced (${target.reason})`);
        resolve();
      });
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Datagrams

export interface DatagramFaults {
  /** Chance a datagram is lost, or delivered twice. */
  lossRate: number;
  duplicateRate: number;
  /** Delay per datagram, uniform in [delayMinUs, delayMaxUs]; with spikeChance up to spikeMaxUs (reordering). */
  delayMinUs: number;
  delayMaxUs: number;
  spikeChance: number;
  spikeMaxUs: number;
}

export const QUIET_DATAGRAMS: Readonly<DatagramFaults> = {
  lossRate: 0,
  duplicateRate: 0,
  delayMinUs: 50,
  delayMaxUs: 2_000,
  spikeChance: 0,
  spikeMaxUs: 0,
};

interface Bound {
  readonly process: SimProcess;
  readonly onMessage: (bytes: Uint8Array, from: DatagramSource) => void;
}

/**
 * The simulated datagram network (see the module contract). `faults` may be changed at any time (a run
 * heals by setting it quiet); `block` cuts one direction between two hosts until `heal`.
 */
export class SimDatagrams {
  faults: DatagramFaults = { ...QUIET_DATAGRAMS };
  readonly #bound = new Map<string, Bound>();
  readonly #blocked = new Set<string>();
  sent = 0;
  dropped = 0;
  /** Sees every datagram a process sends (checkers decode them), before loss. */
  tap: ((from: DatagramSource, to: DatagramSource, bytes: Uint8Array) => void) | null = null;

  constructor(
    readonly world: SimWorld,
    readonly prng: Prng,
  ) {}

  /** The `Datagrams` a process binds through. */
  for(process: SimProcess): Datagrams {
    return {
      bind: (local, onMessage) => {
        const key = `${local.address}:${local.port}`;
        const taken = this.#bound.get(key);
        if (taken !== undefined && taken.process.alive) {
          const error: NodeJS.ErrnoException = new Error(`bind EADDRINUSE ${key}`);
          error.code = "EADDRINUSE";
          return Promise.reject(error);
        }
        const bound: Bound = { process, onMessage };
        this.#bound.set(key, bound);
        let open = true;
        const unbind = (): void => {
          open = false;
          if (this.#bound.get(key) === bound) this.#bound.delete(key);
        };
        process.onKill(unbind);
        const from: DatagramSource = { address: local.address, port: local.port };
        const socket: DatagramSocket = {
          send: (bytes, port, address, done) => {
            done(null);
            if (open && process.alive) this.#send(from, { address, port }, Uint8Array.from(bytes));
          },
          close: () => {
            unbind();
            return Promise.resolve();
          },
        };
        return Promise.resolve(socket);
      },
    };
  }

  /** Datagrams from host `from` to host `to` are dropped until `heal`. */
  block(from: string, to: string): void {
    this.#blocked.add(`${from}>${to}`);
  }

  heal(): void {
    this.#blocked.clear();
  }

  get blocked(): string[] {
    return [...this.#blocked];
  }

  #send(from: DatagramSource, to: DatagramSource, bytes: Uint8Array): void {
    this.sent++;
    this.tap?.(from, to, bytes);
    const f = this.faults;
    if (this.#blocked.has(`${from.address}>${to.address}`) || this.prng.chance(f.lossRate)) {
      this.dropped++;
      return;
    }
    const copies = this.prng.chance(f.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const delayUs = this.prng.chance(f.spikeChance) ? this.prng.int(f.delayMaxUs, Math.max(f.delayMaxUs, f.spikeMaxUs)) : this.prng.int(f.delayMinUs, f.delayMaxUs);
      this.world.queue.schedule(delayUs, () => this.deliver(from, to, bytes));
    }
  }

  /**
   * Hands `bytes` to whoever has `to` bound now (as if sent from `from`: a hostile sender may claim any
   * source); a stalled receiver gets it when it wakes. Returns whether a live process had `to` bound.
   */
  deliver(from: DatagramSource, to: DatagramSource, bytes: Uint8Array): boolean {
    const bound = this.#bound.get(`${to.address}:${to.port}`);
    if (bound === undefined || !bound.process.alive) return false;
    bound.process.whenAwake(() => {
      if (this.#bound.get(`${to.address}:${to.port}`) === bound) bound.onMessage(Uint8Array.from(bytes), from);
    });
    return true;
  }
}

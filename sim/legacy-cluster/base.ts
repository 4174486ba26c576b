/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * What every part of the simulator shares: the mutation list, the virtual clock and its timers, the
 * trace, the lock messages as the checkers see them, and the "a machine threw" wrapper. Nothing here
 * knows about nodes or the network, so every other sim module can import it without import cycles.
 *
 * Guarantees:
 * - Time: `Clock` runs events in (time, insertion) order; time never goes backwards; ties run in the
 *   order they were scheduled. Times are integer virtual microseconds (`...Us`).
 * - A `Timer` is an event that can be cancelled (the drivers' clearTimeout): a cancelled timer's
 *   callback never runs.
 * - The trace keeps a running hash of every line, so two runs of one seed compare by hash.
 * Relies on: nothing but the core's errors and key helpers.
 */
import { InvariantError, KeylockError } from "../../src/core/errors.js";
import { keyToText, type Key } from "../../src/core/keys.js";
import type { LockGrant, LockInvalidation, LockRequest, RecoveredLock } from "../../src/core/lock-messages.js";
import type { LockMode } from "../../src/core/modes.js";
import type { WaiterId } from "../../src/core/client-locks.js";
import type { Message } from "../../src/protocol/messages.js";
import { fnv1a } from "../prng.js";

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
 * Failure and recovery (reference §10):
 * - `recover-lowered-mode` (B7): a client reports, in lock recovery, the mode an invalidation in progress
 *   already lowered to, instead of the mode it held before: the new server grants a conflicting mode
 *   while the application is still flushing.
 * - `reissue-write-seqs` (B4): a new server starts its write seqs from 0 instead of above the stored
 *   high-water mark (only recovery's reported seqs raise it).
 * - `farewell-skips-recovery` (B5): the server answers a farewell without waiting for that client's lock
 *   recovery, so a recovery batch arriving meanwhile re-creates entries for a departed client.
 * - `no-resend`: after a reconnect the client does not resend what its session kept (unanswered requests,
 *   unacknowledged responses): messages lost with the old socket stay lost.
 * - `reuse-term` (B22): a restarted server keeps its predecessor's term, so reconnecting clients look
 *   like "reconnects to the same server" to a server that has no session for them.
 * - `resume-before-recovery`: the server resumes the lock table as soon as the first client finished its
 *   lock recovery, while others are still pending.
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
  "recover-lowered-mode",
  "reissue-write-seqs",
  "farewell-skips-recovery",
  "no-resend",
  "reuse-term",
  "resume-before-recovery",
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

  /** A cancellable event (the drivers' setTimeout/clearTimeout). */
  timer(delayUs: number, run: () => void): Timer {
    const timer = new Timer();
    this.schedule(delayUs, () => {
      if (!timer.cancelled) run();
    });
    return timer;
  }

  get pending(): number {
    return this.#heap.length;
  }

  /** When the earliest event is due; undefined when the queue is empty. */
  get nextAtUs(): number | undefined {
    return this.#heap[0]?.atUs;
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

export class Timer {
  cancelled = false;
  cancel(): void {
    this.cancelled = true;
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
// Lock messages as the checkers see them (the wire carries them in session frames, see network.ts)

/**
 * Client → server, as the lock table sees it. `requestId` is the id the client's session gave the
 * request (a response repeats the id of the server's request it answers).
 */
export type UpMessage =
  | { readonly kind: "request"; readonly requestId: number; readonly request: LockRequest }
  | { readonly kind: "invalidate-response"; readonly requestId: number; readonly response: LockInvalidation }
  | {
      readonly kind: "recover-response";
      readonly requestId: number;
      readonly locks: readonly RecoveredLock[];
    }
  | { readonly kind: "farewell"; readonly requestId: number };

/** Server → client. The farewell response is sent once the server forgot the client. */
export type DownMessage =
  | { readonly kind: "grant"; readonly requestId: number; readonly grant: LockGrant }
  | { readonly kind: "refuse"; readonly requestId: number; readonly key: Key; readonly code: "EAGAIN" }
  | { readonly kind: "invalidate"; readonly requestId: number; readonly invalidation: LockInvalidation }
  | { readonly kind: "recover-request"; readonly requestId: number; readonly after: Key | null }
  | { readonly kind: "farewell-response"; readonly requestId: number };

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
    case "recover-response":
      return `recover-response#${message.requestId} [${message.locks.map((l) => `${fmtKey(l.key)}:${l.mode}${l.writeSeq > 0n ? `@${l.writeSeq}` : ""}`).join(" ")}]`;
    case "farewell":
      return `farewell#${message.requestId}`;
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
    case "recover-request":
      return `recover-request#${message.requestId} after ${message.after === null ? "(start)" : fmtKey(message.after)}`;
    case "farewell-response":
      return `farewell-response#${message.requestId}`;
  }
}

// ---------------------------------------------------------------------------------------------------
// The application's view of one acquire call, and the shared resource

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
  /** The client's fencing generation when granted (LockHandle.isValid): stale once it learned EFENCED. */
  generation: number;
  readonly onResolve: (waiter: Waiter) => void;
}

/** Shared simulated resource per key: what the cache-coherence and fencing checks compare against. */
export interface Resource {
  version: number;
  /** Highest fencing token any accepted write carried. */
  maxToken: bigint;
  /** Highest token an accepted exclusive (write-mode) write carried. */
  maxWriteToken: bigint;
}

export interface CallbackConfig {
  /** App invalidation callback duration: uniform in [0, maxUs], or with slowChance in [maxUs, slowMaxUs]. */
  readonly maxUs: number;
  readonly slowChance: number;
  readonly slowMaxUs: number;
}

/** A mode the checkers and traces print; `LockMode` re-exported for convenience. */
export type { LockMode };

// ---------------------------------------------------------------------------------------------------
// Machine calls

/** Thrown by checkers (see checkers.ts `Violation`) and anything else that must stop the run at once. */
export class SimAbort extends Error {}

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

export function callMachine<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof MachineThrew) throw error;
    if (error instanceof SimAbort) throw error;
    throw new MachineThrew(where, error);
  }
}

/** One wire message for the trace. */
export function fmtWire(message: Message): string {
  const h = message.header;
  const p = message.payload;
  let what: string;
  switch (p.kind) {
    case "lock":
      what = `LOCK ${fmtKey(p.body.key)} ${p.body.oldMode}->${p.body.newMode}`;
      break;
    case "recover-request":
      what = "LOCK_RECOVER";
      break;
    case "recover-response":
      what = `LOCK_RECOVER ${p.body.locks.length} locks`;
      break;
    default:
      what = p.kind;
  }
  return `${h.response ? "response" : "request"}#${h.id} seq=${h.seq} ack=${h.ack} ${what}`;
}

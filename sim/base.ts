/**
 * What the simulators share below the world: the virtual clock and its timers (the one event queue of
 * sim-world.ts), the run's trace, and how a wire message reads in it. Nothing here knows about servers,
 * clients or the network, so every sim module can import it without import cycles.
 *
 * Guarantees:
 * - Time: `Clock` runs events in (time, insertion) order; time never goes backwards; ties run in the
 *   order they were scheduled. Times are integer virtual microseconds (`...Us`).
 * - A `Timer` is an event that can be cancelled (the drivers' clearTimeout): a cancelled timer's
 *   callback never runs.
 * - The trace keeps a running hash of every line, so two runs of one seed compare by hash.
 * Relies on: nothing but the core's errors and key helpers.
 */
import { InvariantError } from "../src/core/errors.js";
import { keyToText } from "../src/core/keys.js";
import type { Message } from "../src/protocol/messages.js";
import { fnv1a } from "./prng.js";

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

/** One wire message for the trace. */
export function fmtWire(message: Message): string {
  const h = message.header;
  const p = message.payload;
  let what: string;
  switch (p.kind) {
    case "lock":
      what = `LOCK ${keyToText(p.body.key)} ${p.body.oldMode}->${p.body.newMode}`;
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

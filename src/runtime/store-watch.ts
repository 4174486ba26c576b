/**
 * Decides when a lock server's store is unreachable (DESIGN §9 "Store outages": a member that cannot
 * reach its store within a bound resigns cleanly so another can serve). The server runs every store call
 * through `watch.store`, a view of the real store that times each call.
 *
 * Guarantees:
 * - `onUnreachable(reason)` is called at most once, when a call has been outstanding for `unreachableMs`
 *   (the store hangs), or when calls have kept failing for `unreachableMs` with no success in between
 *   (a failure at least `unreachableMs` after the first failure of the run; callers that retry, like the
 *   write seq reservation, produce such runs). A success ends a run of failures, and so does a refusal
 *   that only a reachable store can give (StoreError EINVAL, EEXIST, ENOTFORMATTED: e.g. a client record
 *   with a field out of range), so no peer can make a server resign by getting its input refused.
 * - `unreachable` is a promise that rejects with the same reason then (for racing the server's start).
 * - After `close()` no callback runs and no timer is left.
 * - Results and errors pass through unchanged: the watch only observes.
 * Relies on: a monotonic clock (performance.now, or the world's clock: io/world.ts); the owner stopping its use of the store when told.
 */
import { realClock, type Clock, type Timer } from "../io/world.js";
import { StoreError, type Store } from "../store/store.js";

interface PendingCall {
  readonly what: string;
  readonly sinceMs: number;
}

export class StoreWatch {
  readonly store: Store;
  readonly unreachable: Promise<never>;
  private rejectUnreachable!: (error: Error) => void;
  private readonly pendingCalls = new Set<PendingCall>();
  private failingSinceMs: number | null = null;
  private timer: Timer | null = null;
  private fired = false;
  private closed = false;

  constructor(
    inner: Store,
    private readonly unreachableMs: number,
    private readonly onUnreachable: (reason: string) => void,
    private readonly clock: Clock = realClock,
  ) {
    this.unreachable = new Promise<never>((_, reject) => (this.rejectUnreachable = reject));
    this.unreachable.catch(() => undefined);
    // Every method except `url` and `close` is timed; `close` belongs to the store's owner.
    this.store = new Proxy(inner, {
      get: (target, property, receiver) => {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== "function" || property === "close") return value;
        const method = value as (...args: unknown[]) => Promise<unknown>;
        return (...args: unknown[]) => this.track(String(property), () => method.apply(target, args));
      },
    });
  }

  /** Calls in flight, for status and tests. */
  get outstanding(): number {
    return this.pendingCalls.size;
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private track<T>(what: string, call: () => Promise<T>): Promise<T> {
    const entry: PendingCall = { what, sinceMs: this.clock.monotonicMs() };
    this.pendingCalls.add(entry);
    this.arm();
    let result: Promise<T>;
    try {
      result = call();
    } catch (error) {
      result = Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return result.then(
      (value) => {
        this.pendingCalls.delete(entry);
        this.failingSinceMs = null;
        return value;
      },
      (error: unknown) => {
        this.pendingCalls.delete(entry);
        if (error instanceof StoreError && error.code !== "EIO") {
          this.failingSinceMs = null; // the store answered
          throw error;
        }
        const now = this.clock.monotonicMs();
        if (this.failingSinceMs === null) this.failingSinceMs = now;
        else if (now - this.failingSinceMs >= this.unreachableMs) {
          const detail = error instanceof Error ? error.message : String(error);
          this.fire(`store calls have failed for ${Math.round(now - this.failingSinceMs)} ms (last: ${what}: ${detail})`);
        }
        throw error;
      },
    );
  }

  /** Arms the timer for the oldest outstanding call. */
  private arm(): void {
    if (this.timer !== null || this.closed || this.fired) return;
    let oldest: PendingCall | null = null;
    for (const call of this.pendingCalls) if (oldest === null || call.sinceMs < oldest.sinceMs) oldest = call;
    if (oldest === null) return;
    const delayMs = Math.max(0, oldest.sinceMs + this.unreachableMs - this.clock.monotonicMs());
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      const now = this.clock.monotonicMs();
      for (const call of this.pendingCalls) {
        // The very sum arm() waited for: `now - sinceMs >= unreachableMs` can miss it by a rounding error
        // and re-arm a 0 ms timer forever (found by the simulator, whose clock stands still between events).
        if (call.sinceMs + this.unreachableMs <= now) {
          this.fire(`store call ${call.what} has not answered for ${Math.round(now - call.sinceMs)} ms`);
          return;
        }
      }
      this.arm();
    }, Math.ceil(delayMs));
  }

  private fire(detail: string): void {
    if (this.fired || this.closed) return;
    this.fired = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    const reason = `the store is unreachable: ${detail} (bound ${this.unreachableMs} ms)`;
    this.rejectUnreachable(new Error(reason));
    this.onUnreachable(reason);
  }
}

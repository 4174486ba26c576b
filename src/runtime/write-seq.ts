/**
 * The fencing-token sequence of a running server (DESIGN §4: "the seq is persisted as a high-water mark
 * reserved in blocks ahead of use, and raised to the max write_seq that clients report in recovery";
 * DESIGN §9 "Store outages").
 *
 * Guarantees:
 * - `next()` strictly increases and never returns a value above the durably reserved high-water mark,
 *   so a restarted server (which starts above the stored mark) never reissues a token (B4, B22). It is
 *   only called after `available()` answered true (core/lock-server.ts); calling it without a token in
 *   hand is our bug (InvariantError), never a peer's doing.
 * - No token is ever reserved or issued above WRITE_SEQ_MAX (core/limits.ts): reaching it is reported
 *   once through `onExhausted` (the server stops with that reason), never an overflow.
 * - When less than half a block remains (after `next()` or `observe()`), or `available()` found none,
 *   the next block is reserved in the background. A reservation that fails is retried with back-off
 *   (SEQ_RESERVE_RETRY_MIN_MS doubling up to SEQ_RESERVE_RETRY_MAX_MS), each failure reported through
 *   `onError`, until it succeeds or the sequence is closed; deciding that the store is unreachable is the
 *   owner's job (runtime/store-watch.ts), not this module's.
 * - After `available()` answered false, `onAvailable` is called once tokens are in hand again, so the
 *   owner can feed `LockServer.onWriteSeqsAvailable()` (grants wait meanwhile; nothing is changed).
 * - `observe(seen)` raises the counter (recovery: clients report write seqs the store may not know yet).
 * - After `close()` nothing is retried and no callback runs.
 * Relies on: `raiseSeqHighWater` being durable before it resolves, and idempotent (a retry after an
 * unknown outcome only raises the mark again); one server per store at a time (election and fencing).
 */
import { InvariantError } from "../core/errors.js";
import { WRITE_SEQ_MAX } from "../core/limits.js";
import type { WriteSeqSource } from "../core/lock-server.js";
import type { Store } from "../store/store.js";
import { SEQ_RESERVE_BLOCK } from "../core/limits.js";
import { realClock, type Clock, type Timer } from "../io/world.js";
export { SEQ_RESERVE_BLOCK };

/** The first retry of a failed reservation waits this long; each further one twice as long... */
export const SEQ_RESERVE_RETRY_MIN_MS = 50;
/** ...up to this. */
export const SEQ_RESERVE_RETRY_MAX_MS = 1_000;

export interface WriteSeqHooks {
  /** Tokens are in hand again after `available()` answered false. */
  onAvailable?: () => void;
  /** A reservation attempt failed (it is retried). */
  onError?: (error: Error) => void;
  /** WRITE_SEQ_MAX is reached: no token can ever be issued again by any server of this store. */
  onExhausted?: (reason: string) => void;
}

export class ReservedWriteSeq implements WriteSeqSource {
  private last: bigint;
  private reserved: bigint;
  /** reserved − halfBlock, kept with `reserved` (`raiseReserved`): `needsReservation` is one comparison. */
  private reserveAbove: bigint;
  private reserving: Promise<void> | null = null;
  private retryTimer: Timer | null = null;
  private failures = 0;
  /** `available()` answered false since tokens were last in hand: call onAvailable when they are. */
  private starved = false;
  private exhaustedReported = false;
  private closed = false;
  private hooks: WriteSeqHooks = {};
  /** blockSize / 2n, computed once (`next()` asks `needsReservation` per token). */
  private readonly halfBlock: bigint;

  private constructor(
    private readonly store: Store,
    start: bigint,
    readonly blockSize: bigint,
    private readonly clock: Clock,
  ) {
    this.last = start;
    this.reserved = start;
    this.halfBlock = blockSize / 2n;
    this.reserveAbove = start - this.halfBlock;
  }

  /**
   * Starts above everything the store says was ever reserved, and reserves the first block with one store
   * write (a failure rejects: the server does not start).
   */
  static async open(store: Store, blockSize: bigint = SEQ_RESERVE_BLOCK, clock: Clock = realClock): Promise<ReservedWriteSeq> {
    if (blockSize < 2n) throw new RangeError(`a write seq block of ${blockSize} is too small (at least 2)`);
    const highWater = await store.readSeqHighWater();
    const seq = new ReservedWriteSeq(store, highWater, blockSize, clock);
    if (highWater < WRITE_SEQ_MAX) {
      const stored = await store.raiseSeqHighWater(seq.target());
      seq.raiseReserved(stored);
    }
    return seq;
  }

  /** Sets the owner's callbacks (the server, once it exists). */
  attach(hooks: WriteSeqHooks): void {
    this.hooks = hooks;
  }

  get lastIssued(): bigint {
    return this.last;
  }

  get reservedUpTo(): bigint {
    return this.reserved;
  }

  /** Whether a reservation is in flight or waiting to be retried. */
  get pending(): boolean {
    return this.reserving !== null || this.retryTimer !== null;
  }

  /** Fewer than half a block of tokens is left: reserved − last < halfBlock, i.e. last > reserved − halfBlock. */
  get needsReservation(): boolean {
    return this.last > this.reserveAbove;
  }

  /** `reserved` rises to `stored` (never falls), and `reserveAbove` with it. */
  private raiseReserved(stored: bigint): void {
    if (stored <= this.reserved) return;
    this.reserved = stored;
    this.reserveAbove = stored - this.halfBlock;
  }

  available(): boolean {
    if (this.last < this.reserved) return true;
    this.starved = true;
    this.ensureReserving();
    return false;
  }

  next(): bigint {
    if (this.last >= this.reserved) {
      throw new InvariantError(`write seq ${this.last + 1n} would pass the reserved high-water mark ${this.reserved}`);
    }
    this.last += 1n;
    if (this.needsReservation) this.ensureReserving();
    return this.last;
  }

  observe(seen: bigint): void {
    if (seen <= this.last) return;
    this.last = seen;
    if (this.needsReservation) this.ensureReserving();
  }

  /** Stops retrying; later landings change nothing and call nobody. */
  close(): void {
    this.closed = true;
    if (this.retryTimer !== null) this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private target(): bigint {
    const wanted = this.last + this.blockSize;
    return wanted > WRITE_SEQ_MAX ? WRITE_SEQ_MAX : wanted;
  }

  /** Starts a reservation unless one is in flight or waiting for its retry. */
  private ensureReserving(): void {
    if (this.closed || this.pending) return;
    if (this.last >= WRITE_SEQ_MAX || this.reserved >= WRITE_SEQ_MAX) {
      if (this.last >= this.reserved) this.reportExhausted();
      return;
    }
    const target = this.target();
    this.reserving = this.store.raiseSeqHighWater(target).then(
      (stored) => {
        this.reserving = null;
        this.raiseReserved(stored);
        this.failures = 0;
        if (this.closed) return;
        if (this.needsReservation) this.ensureReserving(); // observe() may have raised `last` meanwhile
        if (this.starved && this.last < this.reserved) {
          this.starved = false;
          this.hooks.onAvailable?.();
        }
      },
      (error: unknown) => {
        this.reserving = null;
        if (this.closed) return;
        this.failures++;
        this.hooks.onError?.(error instanceof Error ? error : new Error(String(error)));
        const delayMs = Math.min(SEQ_RESERVE_RETRY_MAX_MS, SEQ_RESERVE_RETRY_MIN_MS * 2 ** Math.min(this.failures - 1, 16));
        this.retryTimer = this.clock.setTimeout(() => {
          this.retryTimer = null;
          this.ensureReserving();
        }, delayMs);
      },
    );
  }

  private reportExhausted(): void {
    if (this.exhaustedReported) return;
    this.exhaustedReported = true;
    this.hooks.onExhausted?.(
      `fencing tokens exhausted: write seq ${this.last} reached the bound ${WRITE_SEQ_MAX} (WRITE_SEQ_MAX); no write lock can be granted`,
    );
  }
}

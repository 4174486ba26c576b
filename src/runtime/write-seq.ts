/**
 * The fencing-token sequence of a running server (DESIGN §4: "the seq is persisted as a high-water mark
 * reserved in blocks ahead of use, and raised to the max write_seq that clients report in recovery").
 *
 * Guarantees:
 * - `next()` strictly increases and never returns a value above the durably reserved high-water mark,
 *   so a restarted server (which starts above the stored mark) never reissues a token (B4, B22).
 * - When less than half a block remains, the next block is reserved in the background; the driver asks
 *   `needsReservation` before feeding messages to the lock table and waits for `reserve()` if so.
 * - `observe(seen)` raises the counter (recovery: clients report write seqs the store may not know yet).
 * Relies on: `raiseSeqHighWater` being durable before it resolves; one server per store at a time
 * (the election and fencing guarantee it).
 */
import { InvariantError } from "../core/errors.js";
import type { WriteSeqSource } from "../core/lock-server.js";
import type { Store } from "../store/store.js";

export const SEQ_RESERVE_BLOCK = 1_000_000n;

export class ReservedWriteSeq implements WriteSeqSource {
  private last: bigint;
  private reserved: bigint;
  private reserving: Promise<void> | null = null;

  private constructor(
    private readonly store: Store,
    start: bigint,
  ) {
    this.last = start;
    this.reserved = start;
  }

  /** Starts above everything the store says was ever reserved, and reserves the first block. */
  static async open(store: Store): Promise<ReservedWriteSeq> {
    const highWater = await store.readSeqHighWater();
    const seq = new ReservedWriteSeq(store, highWater);
    await seq.reserve();
    return seq;
  }

  get lastIssued(): bigint {
    return this.last;
  }

  get needsReservation(): boolean {
    return this.reserved - this.last < SEQ_RESERVE_BLOCK / 2n;
  }

  next(): bigint {
    if (this.last >= this.reserved) {
      throw new InvariantError(`write seq ${this.last + 1n} would pass the reserved high-water mark ${this.reserved}`);
    }
    this.last += 1n;
    if (this.needsReservation) void this.reserve().catch(() => undefined);
    return this.last;
  }

  observe(seen: bigint): void {
    if (seen <= this.last) return;
    this.last = seen;
  }

  /** Reserves one block above what has been issued; concurrent calls share one store write. */
  reserve(): Promise<void> {
    if (this.reserving) return this.reserving;
    const target = this.last + SEQ_RESERVE_BLOCK;
    this.reserving = this.store
      .raiseSeqHighWater(target)
      .then((stored) => {
        if (stored > this.reserved) this.reserved = stored;
      })
      .finally(() => {
        this.reserving = null;
      });
    return this.reserving;
  }
}

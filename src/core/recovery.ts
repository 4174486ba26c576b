/**
 * The recovery tracker (reference §5.1–5.3): which clients a new server still waits for, and for what.
 * Five calls: `prepare` every recorded client, `begin` the wait, `finish` parts as clients greet and
 * report their locks (or are fenced and reclaimed), and `shutdown` when the server stops; `isPending` and
 * `pendingRids` answer questions. Pure: the driver owns the recovery deadline and the lock-table hold.
 *
 * Guarantees:
 * - A rid is pending while it has any part left: "greeting" (it has not greeted this server yet) or
 *   "locks" (it has not finished reporting its locks). `prepare` ORs parts in; `finish` clears them,
 *   and a rid with no part left is no longer pending.
 * - Finished ⇔ begun AND nothing pending. Before `begin` nothing is finished, however many rids finish,
 *   so a client finishing while others are still being prepared cannot end recovery early.
 * - Exactly one call reports the end: `begin()` returns true when nothing is pending at that moment, or
 *   else exactly one later `finish()` returns true, the one that cleared the last part. Finishing a rid or
 *   part that is not pending changes nothing and returns false, so replays (a second empty batch, a
 *   reclaim after the client finished anyway) are harmless.
 * - `pendingRids()` lists the rids still pending, ascending: the driver fences them when the deadline
 *   passes (reference §5.6; a rid listed there is fenced even if it finishes meanwhile).
 * - `shutdown()` forgets everything (B36: no recovery state outlives a server); afterwards the tracker
 *   is as new, never finished, with nothing pending.
 *
 * Relies on: the driver preparing every recorded client before `begin()` and before accepting clients
 * (reference §5.2: messages cannot arrive before then); `prepare` after `begin` is a bug and throws, as
 * does a second `begin`.
 *
 * Across failover: nothing here survives a server. The next server builds a new tracker from the
 * persistent client records, so a client that was half-way through recovery with a dead server simply
 * recovers again from the start.
 */
import { invariant } from "./errors.js";

export type RecoveryPart = "greeting" | "locks";

/** The parts as bits, like the reference's GREETING = 1, LOCKS = 2. */
const PART_BITS: Readonly<Record<RecoveryPart, number>> = { greeting: 1, locks: 2 };

function bitsOf(parts: readonly RecoveryPart[]): number {
  let bits = 0;
  for (const part of parts) {
    const bit = PART_BITS[part];
    invariant(bit !== undefined, () => `unknown recovery part ${String(part)}`);
    bits |= bit;
  }
  return bits;
}

export class RecoveryTracker {
  /** rid → bits of the parts still pending; a rid with no bits is removed. */
  readonly #pending = new Map<bigint, number>();
  #begun = false;

  /** Before `begin()`: the rid must finish `parts` (ORed into what it already must finish). */
  prepare(rid: bigint, parts: readonly RecoveryPart[]): void {
    invariant(!this.#begun, () => `recovery of rid ${rid} prepared after recovery began`);
    const bits = bitsOf(parts);
    if (bits === 0) return;
    this.#pending.set(rid, (this.#pending.get(rid) ?? 0) | bits);
  }

  /** Starts the wait; returns true when nothing is pending (recovery finished at once). */
  begin(): boolean {
    invariant(!this.#begun, "recovery began twice");
    this.#begun = true;
    return this.#pending.size === 0;
  }

  /**
   * Clears `parts` for rid; returns true exactly once: when this call made recovery finished. Finishing
   * a rid or part that is not pending is a no-op (false).
   */
  finish(rid: bigint, parts: readonly RecoveryPart[]): boolean {
    const bits = this.#pending.get(rid);
    if (bits === undefined) return false;
    const left = bits & ~bitsOf(parts);
    if (left === bits) return false;
    if (left !== 0) {
      this.#pending.set(rid, left);
      return false;
    }
    this.#pending.delete(rid);
    return this.#begun && this.#pending.size === 0;
  }

  /** Whether rid is pending `part`, or any part when none is given. */
  isPending(rid: bigint, part?: RecoveryPart): boolean {
    const bits = this.#pending.get(rid) ?? 0;
    return part === undefined ? bits !== 0 : (bits & bitsOf([part])) !== 0;
  }

  /** Rids still pending (any part), ascending. */
  pendingRids(): bigint[] {
    return [...this.#pending.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** How many rids are still pending (for "waiting for N clients"). */
  get pendingCount(): number {
    return this.#pending.size;
  }

  get begun(): boolean {
    return this.#begun;
  }

  get finished(): boolean {
    return this.#begun && this.#pending.size === 0;
  }

  /** Server stop: forget everything (B36). */
  shutdown(): void {
    this.#pending.clear();
    this.#begun = false;
  }
}

/**
 * The invalidation deadline's decision (DESIGN §9 limits), pure: given a client's invalidations that are
 * still unanswered and when each was sent, is the client overdue, and if not, when to look again. The
 * driver (runtime/server-limits.ts) keeps one timer per client and asks this when it fires.
 *
 * Guarantees:
 * - Only the oldest outstanding invalidation counts (the first in `outstanding`'s order): a client is
 *   overdue exactly when it has left that one unanswered for `timeoutMs` or longer, and then the answer
 *   names its key and how long it waited.
 * - Otherwise the answer is to wait the rest of that invalidation's time (always > 0 ms), or nothing to
 *   do when none is outstanding.
 * - No clock, no timers: the same inputs give the same answer.
 * Relies on: `outstanding` iterating oldest first (a Map in insertion order: a key is added when its
 * invalidation is sent and deleted when answered), times from one clock, `timeoutMs` > 0.
 */

export type InvalidationCheck<K> =
  /** Nothing outstanding: no deadline to keep. */
  | { readonly kind: "none" }
  /** The oldest is not overdue yet: look again in `delayMs`. */
  | { readonly kind: "wait"; readonly delayMs: number }
  /** The oldest, `key`, has waited `waitedMs` >= the limit: the client is treated as vanished. */
  | { readonly kind: "overdue"; readonly key: K; readonly waitedMs: number };

/** Checks a client's outstanding invalidations (key → sent at, ms) at `nowMs` against `timeoutMs`. */
export function checkInvalidations<K>(outstanding: ReadonlyMap<K, number>, nowMs: number, timeoutMs: number): InvalidationCheck<K> {
  const oldest = outstanding.entries().next();
  if (oldest.done === true) return { kind: "none" };
  const [key, sentAtMs] = oldest.value;
  const waitedMs = nowMs - sentAtMs;
  if (waitedMs < timeoutMs) return { kind: "wait", delayMs: timeoutMs - waitedMs };
  return { kind: "overdue", key, waitedMs };
}

/**
 * The hottest keys by lock messages, for the status page: a bounded "Space-Saving" summary (Metwally et
 * al.), so a lock table of a million keys costs the same as one of ten.
 *
 * Guarantees:
 * - Memory is bounded by `capacity` tracked keys whatever the traffic; each message costs one Map
 *   lookup, plus one scan of the tracked keys when an untracked key replaces the least counted one.
 * - Any key with more than (total messages / capacity) messages is tracked, and a tracked key's
 *   `total` overestimates its true count by at most its `error` (the count of the key it replaced).
 *   The per-kind counts are exact since the key was (last) tracked.
 * - `top(n)` sorts only the tracked keys; it never touches the lock table.
 * Relies on: keys being compared by value (core/keys.ts: a Key is a string).
 */
import type { Key } from "../core/keys.js";

export type HotKeyMessage = "requests" | "invalidations" | "grants" | "responses";

export interface HotKeyRow {
  key: Key;
  /** Messages counted for this key (an overestimate by at most `error`). */
  total: number;
  error: number;
  requests: number;
  invalidations: number;
  grants: number;
  responses: number;
}

/** Keys tracked by default: the status page shows the top 20 of them. */
export const HOT_KEYS_TRACKED = 128;

export class HotKeys {
  private readonly rows = new Map<Key, HotKeyRow>();
  /** The tracked row with the lowest total, or null when unknown (found by a scan when needed). */
  private least: HotKeyRow | null = null;

  constructor(readonly capacity = HOT_KEYS_TRACKED) {}

  count(key: Key, kind: HotKeyMessage): void {
    let row = this.rows.get(key);
    if (row === undefined) {
      if (this.rows.size < this.capacity) {
        row = { key, total: 0, error: 0, requests: 0, invalidations: 0, grants: 0, responses: 0 };
        this.rows.set(key, row);
      } else {
        const least = this.least ?? this.findLeast();
        this.rows.delete(least.key);
        row = { key, total: least.total, error: least.total, requests: 0, invalidations: 0, grants: 0, responses: 0 };
        this.rows.set(key, row);
        this.least = null;
      }
    } else if (row === this.least) {
      this.least = null;
    }
    row.total++;
    row[kind]++;
  }

  /** The `n` keys with the most messages, most first. */
  top(n: number): HotKeyRow[] {
    return [...this.rows.values()].sort((a, b) => b.total - a.total).slice(0, n).map((row) => ({ ...row }));
  }

  get tracked(): number {
    return this.rows.size;
  }

  private findLeast(): HotKeyRow {
    let least: HotKeyRow | null = null;
    for (const row of this.rows.values()) if (least === null || row.total < least.total) least = row;
    this.least = least;
    return least!;
  }
}

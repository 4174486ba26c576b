/**
 * The hottest keys by lock messages, for the status page: a bounded "Space-Saving" summary (Metwally et
 * al.), so a lock table of a million keys costs the same as one of ten.
 *
 * Guarantees:
 * - Memory is bounded by `capacity` tracked keys whatever the traffic; each message costs one Map
 *   lookup (none when it counts the same key as the message before: a request and its grant), and an untracked key replaces a least counted one found by a rotating cursor (a step or
 *   two under spread-out traffic; a rescan of the tracked keys only when the least total has grown).
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
  private readonly rows: HotKeyRow[] = [];
  private readonly index = new Map<Key, HotKeyRow>();
  /** Where the search for a least counted row resumes (a rotating cursor over `rows`). */
  private cursor = 0;
  /** A lower bound of the least total among `rows` (exact right after a rescan). */
  private floor = 0;
  /** The row counted last (null before any): tried before the index. */
  private last: HotKeyRow | null = null;

  constructor(readonly capacity = HOT_KEYS_TRACKED) {}

  count(key: Key, kind: HotKeyMessage): void {
    // A request and its grant (or an invalidation and its answer) count the same key one after the
    // other: the row counted last is checked first (rows' keys are distinct, so it is that key's row).
    const last = this.last;
    let row = last !== null && last.key === key ? last : this.index.get(key);
    if (row === undefined) {
      if (this.rows.length < this.capacity) {
        row = { key, total: 0, error: 0, requests: 0, invalidations: 0, grants: 0, responses: 0 };
        this.rows.push(row);
      } else {
        // Space-Saving: the new key takes over a least counted row, inheriting its count as the error.
        row = this.leastCounted();
        this.index.delete(row.key);
        row.key = key;
        row.error = row.total;
        row.requests = row.invalidations = row.grants = row.responses = 0;
      }
      this.index.set(key, row);
    }
    this.last = row;
    row.total++;
    // A switch, not `row[kind]++`: a keyed access by four names is a megamorphic lookup on every message.
    switch (kind) {
      case "requests":
        row.requests++;
        break;
      case "invalidations":
        row.invalidations++;
        break;
      case "grants":
        row.grants++;
        break;
      case "responses":
        row.responses++;
        break;
    }
  }

  /** The `n` keys with the most messages, most first. */
  top(n: number): HotKeyRow[] {
    return [...this.rows].sort((a, b) => b.total - a.total).slice(0, n).map((row) => ({ ...row }));
  }

  get tracked(): number {
    return this.rows.length;
  }

  /**
   * A row with the least total. Totals only grow, so a row at or below `floor` is a least one; the cursor
   * resumes where the last search stopped, so under spread-out traffic (many rows share the least total)
   * a search takes a step or two. A full pass without one raises `floor` to the exact least total.
   */
  private leastCounted(): HotKeyRow {
    const rows = this.rows;
    for (let steps = 0; ; steps++) {
      if (steps === rows.length) {
        let least = Infinity;
        for (const row of rows) if (row.total < least) least = row.total;
        this.floor = least;
        steps = 0;
      }
      const row = rows[this.cursor]!;
      this.cursor = this.cursor + 1 === rows.length ? 0 : this.cursor + 1;
      if (row.total <= this.floor) return row;
    }
  }
}

/**
 * The hottest keys by lock messages, for the status page: a bounded "Space-Saving" summary (Metwally et
 * al.), so a lock table of a million keys costs the same as one of ten.
 *
 * Guarantees:
 * - Memory is bounded by `capacity` tracked keys whatever the traffic; each message costs one lookup
 *   in an index of its own (none when it counts the same key as the message before: a request and its
 *   grant), and an untracked key replaces a least counted one found by a rotating cursor (a step or
 *   two under spread-out traffic; a rescan of the tracked keys only when the least total has grown).
 * - The index is an open-addressing table of row numbers (linear probing, at most half full, deletion
 *   by backward shift) over a 32-bit hash of the key seeded at random per process, so colliding keys
 *   cannot be chosen from outside; a lookup is bounded by the table's size whatever the keys. Under
 *   spread-out traffic (a fresh key per message) a replacement is one deletion and one insertion in
 *   it with no allocation, where a Map deleted and inserted, and rehashed its deleted slots every
 *   `capacity` replacements (V8's runtime; measured, bench/server-cost.ts: ~700 instructions per fresh
 *   key, Map operations and rehashing).
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
  /** `hashes[r]`: the hash of rows[r].key. */
  private readonly hashes: Int32Array;
  /** The index: per slot, a row number + 1 (0 = empty); a power of two ≥ 2 × capacity slots. */
  private readonly slots: Int32Array;
  private readonly mask: number;
  private readonly seed = (Math.random() * 0x100000000) | 0;
  /** Where the search for a least counted row resumes (a rotating cursor over `rows`). */
  private cursor = 0;
  /** A lower bound of the least total among `rows` (exact right after a rescan). */
  private floor = 0;
  /** The row counted last (null before any): tried before the index. */
  private last: HotKeyRow | null = null;

  constructor(readonly capacity = HOT_KEYS_TRACKED) {
    let size = 2;
    while (size < 2 * capacity) size *= 2;
    this.slots = new Int32Array(size);
    this.mask = size - 1;
    this.hashes = new Int32Array(Math.max(capacity, 0));
  }

  count(key: Key, kind: HotKeyMessage): void {
    // A request and its grant (or an invalidation and its answer) count the same key one after the
    // other: the row counted last is checked first (rows' keys are distinct, so it is that key's row).
    const last = this.last;
    let row: HotKeyRow;
    if (last !== null && last.key === key) row = last;
    else {
      const hash = this.hash(key);
      const found = this.find(key, hash);
      if (found >= 0) row = this.rows[found]!;
      else if (this.rows.length < this.capacity) {
        row = { key, total: 0, error: 0, requests: 0, invalidations: 0, grants: 0, responses: 0 };
        this.rows.push(row);
        this.insert(this.rows.length - 1, hash);
      } else {
        // Space-Saving: the new key takes over a least counted row, inheriting its count as the error.
        const taken = this.leastCounted();
        this.remove(taken);
        row = this.rows[taken]!;
        row.key = key;
        row.error = row.total;
        row.requests = row.invalidations = row.grants = row.responses = 0;
        this.insert(taken, hash);
      }
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

  /** A 32-bit hash of the key's code units (FNV-1a from the seed, then mixed). */
  private hash(key: Key): number {
    let h = this.seed;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x7feb352d);
    return h ^ (h >>> 15);
  }

  /** The number of `key`'s row, or -1 when it is not tracked. */
  private find(key: Key, hash: number): number {
    const slots = this.slots;
    const mask = this.mask;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const slot = slots[i]!;
      if (slot === 0) return -1;
      if (this.hashes[slot - 1] === hash && this.rows[slot - 1]!.key === key) return slot - 1;
    }
  }

  /** Indexes row `r` under `hash` (its key is not in the index; the table is at most half full). */
  private insert(r: number, hash: number): void {
    const slots = this.slots;
    const mask = this.mask;
    let i = hash & mask;
    while (slots[i] !== 0) i = (i + 1) & mask;
    slots[i] = r + 1;
    this.hashes[r] = hash;
  }

  /** Takes row `r` out of the index; the entries after it in its run move back (no tombstones). */
  private remove(r: number): void {
    const slots = this.slots;
    const mask = this.mask;
    let hole = this.hashes[r]! & mask;
    while (slots[hole] !== r + 1) hole = (hole + 1) & mask;
    for (let j = (hole + 1) & mask; slots[j] !== 0; j = (j + 1) & mask) {
      // The entry at j may fill the hole when its home slot is not inside (hole, j] (cyclically).
      const home = this.hashes[slots[j]! - 1]! & mask;
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        slots[hole] = slots[j]!;
        hole = j;
      }
    }
    slots[hole] = 0;
  }

  /**
   * The number of a row with the least total. Totals only grow, so a row at or below `floor` is a least one; the cursor
   * resumes where the last search stopped, so under spread-out traffic (many rows share the least total)
   * a search takes a step or two. A full pass without one raises `floor` to the exact least total.
   */
  private leastCounted(): number {
    const rows = this.rows;
    for (let steps = 0; ; steps++) {
      if (steps === rows.length) {
        let least = Infinity;
        for (const row of rows) if (row.total < least) least = row.total;
        this.floor = least;
        steps = 0;
      }
      const r = this.cursor;
      this.cursor = r + 1 === rows.length ? 0 : r + 1;
      if (rows[r]!.total <= this.floor) return r;
    }
  }
}

/**
 * An ordered set of lock keys for admin pages (DESIGN §9 "admin pages served from an ordered index"):
 * the lock table keeps one beside its key map, so a page of keys "strictly after K" costs O(log n + page)
 * instead of a sort of the whole table.
 *
 * Shape: a list of sorted chunks (sorted arrays of at most KEY_INDEX_CHUNK_KEYS_MAX keys, every key of a
 * chunk below every key of the next). Finding a key is a binary search over the chunks' last keys, then
 * one inside the chunk; inserting or deleting moves at most one chunk's elements (and, when a chunk
 * splits or empties, the list of chunks: once per KEY_INDEX_CHUNK_KEYS_MAX / 2 inserts at least);
 * `deleteSorted` removes a sorted list of keys in one pass (each chunk's removals applied together,
 * emptied chunks dropped together: a departing client's keys). Memory
 * is one array slot per key plus a little slack per chunk: far below the per-entry budget of DESIGN §7.
 *
 * Guarantees: bytewise key order (keys.ts: `<` on keys is bytewise); a key is present at most once.
 * `after` walks the live chunks: callers finish (or drop) the iteration before changing the index. `comparisons` counts key comparisons (tests use it to show a page's cost does
 * not depend on the table's size).
 * Relies on: nothing (pure, core).
 */
import type { Key } from "./keys.js";

/** Keys per chunk before it splits in two. */
export const KEY_INDEX_CHUNK_KEYS_MAX = 512;

/** A chunk's last key (chunks are never empty in the list). */
const lastKey = (chunk: Key[]): Key => chunk[chunk.length - 1]!;
const itself = (key: Key): Key => key;

export class KeyIndex {
  #chunks: Key[][] = [];
  #size = 0;
  /** Key comparisons made so far (searches only); for tests. */
  comparisons = 0;

  get size(): number {
    return this.#size;
  }

  /** Adds `key`; false when it was present already. */
  insert(key: Key): boolean {
    const chunks = this.#chunks;
    if (chunks.length === 0) {
      chunks.push([key]);
      this.#size = 1;
      return true;
    }
    const tail = chunks[chunks.length - 1]!;
    this.comparisons++;
    if (tail[tail.length - 1]! < key) {
      // Above every key (keys created in order): append without a search; full chunks stay full.
      if (tail.length < KEY_INDEX_CHUNK_KEYS_MAX) tail.push(key);
      else chunks.push([key]);
      this.#size++;
      return true;
    }
    const c = this.#chunkFor(key);
    const chunk = chunks[c]!;
    const i = this.#position(chunk, key);
    if (i < chunk.length && chunk[i] === key) return false;
    chunk.splice(i, 0, key);
    this.#size++;
    if (chunk.length > KEY_INDEX_CHUNK_KEYS_MAX) chunks.splice(c + 1, 0, chunk.splice(chunk.length >> 1));
    return true;
  }

  /**
   * Adds many keys at once (recovery indexes its keys in bulk): `keys` in bytewise order, duplicates and
   * keys already present allowed. One merge, O(size + keys.length); chunks come out half full.
   */
  insertSorted(keys: readonly Key[]): void {
    if (keys.length === 0) return;
    const half = KEY_INDEX_CHUNK_KEYS_MAX >> 1;
    const old = this.#chunks;
    const chunks: Key[][] = [];
    let chunk: Key[] = [];
    let last: Key | null = null;
    let size = 0;
    let c = 0;
    let j = 0;
    let i = 0;
    for (;;) {
      // The next key of the merge: from `keys` when it sorts first, else from the old chunks.
      let key: Key;
      const mine = c < old.length ? old[c]![j]! : null;
      if (i < keys.length && (mine === null || keys[i]! < mine)) key = keys[i++]!;
      else if (mine !== null) {
        key = mine;
        if (++j === old[c]!.length) {
          c++;
          j = 0;
        }
      } else break;
      if (key === last) continue;
      last = key;
      chunk.push(key);
      size++;
      if (chunk.length === half) {
        chunks.push(chunk);
        chunk = [];
      }
    }
    if (chunk.length > 0) chunks.push(chunk);
    this.#chunks = chunks;
    this.#size = size;
  }

  /** Removes `key`; false when it was absent. */
  delete(key: Key): boolean {
    const c = this.#chunkFor(key);
    const chunk = this.#chunks[c];
    if (chunk === undefined) return false;
    const i = this.#position(chunk, key);
    if (chunk[i] !== key) return false;
    chunk.splice(i, 1);
    this.#size--;
    if (chunk.length === 0) this.#chunks.splice(c, 1);
    return true;
  }

  /**
   * Removes many keys at once (a departing client's): `keys` in bytewise order, without repeats; keys
   * absent are skipped. Returns how many were present. Each key is searched from where the previous one
   * was (galloping over the chunks, then inside the chunk); a chunk's removals are applied together when
   * the search leaves it (#removeAt), and the chunks emptied leave the list in one pass: O(k log(n / k))
   * comparisons for k keys in n, against one search from scratch per key for `delete`.
   */
  deleteSorted(keys: readonly Key[]): number {
    const chunks = this.#chunks;
    const at = this.#found;
    let removed = 0;
    let emptied = false;
    // chunks[c] is the chunk searched last; keys before `search` in it are below every key still to
    // delete; `at` holds the positions found in it (ascending), applied when the search moves on.
    let c = 0;
    let search = 0;
    for (let k = 0; k < keys.length; k++) {
      const key = keys[k]!;
      const next = this.#gallop(chunks, c, key, lastKey);
      if (next === chunks.length) break;
      if (next !== c) {
        if (at.length > 0 && KeyIndex.#removeAt(chunks[c]!, at)) emptied = true;
        c = next;
        search = 0;
      }
      const chunk = chunks[c]!;
      const i = this.#gallop(chunk, search, key, itself);
      if (i < chunk.length && chunk[i] === key) {
        at.push(i);
        removed++;
        search = i + 1;
      } else search = i;
    }
    if (at.length > 0 && KeyIndex.#removeAt(chunks[c]!, at)) emptied = true;
    if (emptied) this.#chunks = chunks.filter((chunk) => chunk.length > 0);
    this.#size -= removed;
    return removed;
  }

  /** Scratch of deleteSorted: positions found in the current chunk (empty between calls). */
  readonly #found: number[] = [];

  /**
   * Removes chunk[at[0]], chunk[at[1]], ... (ascending positions) and empties `at`; true when the chunk is
   * left empty. A few removals are spliced out one by one (a native move of the keys after each); many
   * are compacted in one pass over the chunk.
   */
  static #removeAt(chunk: Key[], at: number[]): boolean {
    const r = at.length;
    if (r === chunk.length) chunk.length = 0;
    else if (r * 32 <= chunk.length) {
      for (let k = r - 1; k >= 0; k--) chunk.splice(at[k]!, 1);
    } else {
      let write = at[0]!;
      for (let k = 0; k < r; k++) {
        const end = k + 1 < r ? at[k + 1]! : chunk.length;
        for (let j = at[k]! + 1; j < end; j++) chunk[write++] = chunk[j]!;
      }
      chunk.length = write;
    }
    at.length = 0;
    return chunk.length === 0;
  }

  /**
   * The first index at or after `from` in `items` whose key (`keyOf`) is ≥ key (items.length when none);
   * the items before `from` are below key. Gallops from `from`, then searches the last step in halves:
   * over the chunks by their last keys (`lastKey`), or inside a chunk (`itself`).
   */
  #gallop<T>(items: readonly T[], from: number, key: Key, keyOf: (item: T) => Key): number {
    const n = items.length;
    let lo = from;
    let hi = from;
    let step = 1;
    while (hi < n) {
      this.comparisons++;
      if (!(keyOf(items[hi]!) < key)) break;
      lo = hi + 1;
      hi += step;
      step *= 2;
    }
    if (hi > n) hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      this.comparisons++;
      if (keyOf(items[mid]!) < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  has(key: Key): boolean {
    const chunk = this.#chunks[this.#chunkFor(key)];
    return chunk !== undefined && chunk[this.#position(chunk, key)] === key;
  }

  /** The keys strictly after `after` (all keys when null), in order. */
  *after(after: Key | null): Generator<Key, void, undefined> {
    const chunks = this.#chunks;
    let c = 0;
    let i = 0;
    if (after !== null) {
      c = this.#chunkFor(after);
      if (c === chunks.length) return;
      const chunk = chunks[c]!;
      i = this.#position(chunk, after);
      if (chunk[i] === after) i++;
    }
    for (; c < chunks.length; c++, i = 0) {
      const chunk = chunks[c]!;
      for (; i < chunk.length; i++) yield chunk[i]!;
    }
  }

  /** The first chunk whose last key is ≥ key (chunks.length when none). */
  #chunkFor(key: Key): number {
    const chunks = this.#chunks;
    let lo = 0;
    let hi = chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const chunk = chunks[mid]!;
      this.comparisons++;
      if (chunk[chunk.length - 1]! < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The first index in `chunk` whose key is ≥ key. */
  #position(chunk: Key[], key: Key): number {
    let lo = 0;
    let hi = chunk.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      this.comparisons++;
      if (chunk[mid]! < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

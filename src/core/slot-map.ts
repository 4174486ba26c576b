/**
 * A map for entries that usually come one at a time: the only entry sits in two fields, and a ChurnMap
 * (./churn-map.ts) takes the others while the slot is occupied.
 *
 * Why: the client's per-request tables (its waiters, its outstanding lock requests, the invalidations it is
 * answering, the lock machine's waiting and in-progress indexes) go 0 → 1 → 0 entries on every networked
 * operation, and V8 answers the delete that empties a Map by shrinking it: a runtime call that allocates a
 * new table and rehashes (`Runtime_MapShrink`, ~450 instructions each, five per hand-off on the client;
 * docs/performance.md, "Client, whole process"). With one entry at a time a SlotMap touches no Map.
 * Guarantees: behaves as a Map for get/has/set/delete/clear/size, `keys()` and `values()` (keys compared as a
 * Map compares them, SameValueZero; both in insertion order, as arrays). The slot is filled only while the Map is empty,
 * so its entry, when there is one, is the oldest.
 * Relies on: nothing; pure.
 */
import { ChurnMap } from "./churn-map.js";

export class SlotMap<K, V> {
  #slotKey: K | undefined = undefined;
  #slotValue: V | undefined = undefined;
  #slotUsed = false;
  readonly #rest = new ChurnMap<K, V>();

  get size(): number {
    return (this.#slotUsed ? 1 : 0) + this.#rest.size;
  }

  get(key: K): V | undefined {
    if (this.#slotUsed && sameValueZero(this.#slotKey, key)) return this.#slotValue;
    return this.#rest.size === 0 ? undefined : this.#rest.get(key);
  }

  has(key: K): boolean {
    return (this.#slotUsed && sameValueZero(this.#slotKey, key)) || (this.#rest.size > 0 && this.#rest.has(key));
  }

  set(key: K, value: V): this {
    if (this.#slotUsed) {
      if (sameValueZero(this.#slotKey, key)) this.#slotValue = value;
      else this.#rest.set(key, value);
    } else if (this.#rest.size === 0) {
      this.#slotKey = key;
      this.#slotValue = value;
      this.#slotUsed = true;
    } else {
      this.#rest.set(key, value);
    }
    return this;
  }

  delete(key: K): boolean {
    if (this.#slotUsed && sameValueZero(this.#slotKey, key)) {
      this.#slotUsed = false;
      this.#slotKey = undefined;
      this.#slotValue = undefined;
      return true;
    }
    return this.#rest.size > 0 && this.#rest.delete(key);
  }

  clear(): void {
    this.#slotUsed = false;
    this.#slotKey = undefined;
    this.#slotValue = undefined;
    this.#rest.clear();
  }

  /** The keys in insertion order (a copy: safe to change the map while walking it). */
  keys(): K[] {
    const out: K[] = this.#slotUsed ? [this.#slotKey as K] : [];
    for (const key of this.#rest.keys()) out.push(key);
    return out;
  }

  /** The values in insertion order (a copy: safe to change the map while walking it). */
  values(): V[] {
    const out: V[] = this.#slotUsed ? [this.#slotValue as V] : [];
    for (const value of this.#rest.values()) out.push(value);
    return out;
  }
}

/** Map's key equality: === except that NaN equals NaN (+0 and −0 are already ===). */
function sameValueZero(a: unknown, b: unknown): boolean {
  return a === b || (a !== a && b !== b);
}

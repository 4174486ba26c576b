/**
 * The coherent cache (DESIGN §6): values of a slow store kept in this process only while this client's
 * lock on their key permits reading them, so a value is read from the store once per grant, not once per use.
 *
 * Guarantees:
 * - `get(key)` returns the value under a `read` lock (cached at the client: usually no round trip) and reads
 *   the store through `load` only when no value is cached; `update(key, fn)` and `set(key, value)` change
 *   the value under a `write` lock and mark it dirty, without writing the store.
 * - A value lives only while the lock is held in `read` or `write`: when the server asks this client to
 *   downgrade (another client wants the key), or the client releases an idle lock, the dirty value is
 *   written back through `save(key, value, writeSeq)` before the downgrade is acknowledged; on a downgrade
 *   to `read` the (now clean) value stays cached, on a downgrade to `null` it is dropped. So another client
 *   that is granted the key reads what this one wrote.
 * - `save` gets the fencing token of the write lock the value was changed under: a store that refuses older
 *   tokens refuses a write back from a client that was fenced and replaced.
 * - A client that was fenced drops every value (dirty ones are lost: their lock may be someone else's now).
 *   `flush()` writes back every dirty value now; call it before `client.close()`.
 * - A `save` that throws is reported as the client's "error" event and the value is dropped anyway (the
 *   downgrade must complete); the write is lost, as with any failed write.
 * Relies on: LockClient awaiting "invalidate" listeners before it acknowledges a downgrade or releases an
 * idle lock (client.ts), and on invalidations waiting until no local handle on the key is held.
 */
import { KeylockError } from "../core/errors.js";
import type { LockClient } from "./client.js";

export interface CoherentCacheOptions<V> {
  /** Reads the value of `key` from the store (called under a read or write lock). */
  load(key: string): V | Promise<V>;
  /** Writes a changed value back (called before a downgrade is acknowledged); `writeSeq` is its write lock's token. */
  save?(key: string, value: V, writeSeq: bigint): void | Promise<void>;
}

interface Entry<V> {
  value: V;
  dirty: boolean;
  writeSeq: bigint;
}

const decoder = new TextDecoder();

/** Its state is in #private fields (issue 10): properties assigned on a cache cannot break it. */
export class CoherentCache<V> {
  readonly #entries = new Map<string, Entry<V>>();
  readonly #onInvalidate: (event: { key: Uint8Array; to: string }) => Promise<void>;
  readonly #onFenced: () => void;
  #loads = 0;

  readonly #client: LockClient;
  readonly #options: CoherentCacheOptions<V>;

  constructor(client: LockClient, options: CoherentCacheOptions<V>) {
    this.#client = client;
    this.#options = options;
    this.#onInvalidate = async ({ key, to }) => {
      const text = decoder.decode(key);
      const entry = this.#entries.get(text);
      if (entry === undefined) return;
      if (entry.dirty) {
        entry.dirty = false;
        try {
          await this.#options.save?.(text, entry.value, entry.writeSeq);
        } catch (error) {
          this.#entries.delete(text);
          throw error;
        }
      }
      if (to !== "read") this.#entries.delete(text);
    };
    this.#onFenced = () => this.#entries.clear();
    // eslint-disable-next-line @typescript-eslint/no-misused-promises -- the client awaits an "invalidate" listener's promise
    client.on("invalidate", this.#onInvalidate);
    client.on("fenced", this.#onFenced);
  }

  /** The value of `key`: from this cache while the lock is held, else loaded from the store. */
  async get(key: string): Promise<V> {
    return this.#client.withLock(key, "read", () => this.#valueOf(key));
  }

  /** Replaces the value of `key` with `fn(current)` under a write lock; written back when the lock is downgraded. */
  async update(key: string, fn: (value: V) => V | Promise<V>): Promise<V> {
    return this.#client.withLock(key, "write", async (handle) => {
      const value = await fn(await this.#valueOf(key));
      this.#entries.set(key, { value, dirty: true, writeSeq: handle.writeSeq });
      return value;
    });
  }

  /** Sets the value of `key` under a write lock, without loading it; written back when the lock is downgraded. */
  async set(key: string, value: V): Promise<void> {
    await this.#client.withLock(key, "write", (handle) => {
      this.#entries.set(key, { value, dirty: true, writeSeq: handle.writeSeq });
    });
  }

  /** Writes every dirty value back now, each under its write lock (the values stay cached). */
  async flush(): Promise<void> {
    for (const [key, entry] of [...this.#entries]) {
      if (!entry.dirty) continue;
      await this.#client.withLock(key, "write", async () => {
        const now = this.#entries.get(key);
        if (now === undefined || !now.dirty) return;
        now.dirty = false;
        await this.#options.save?.(key, now.value, now.writeSeq);
      });
    }
  }

  /** How many values are cached, how many of them are dirty, and how many loads reached the store. */
  stats(): { values: number; dirty: number; loads: number } {
    let dirty = 0;
    for (const entry of this.#entries.values()) if (entry.dirty) dirty++;
    return { values: this.#entries.size, dirty, loads: this.#loads };
  }

  /** Stops following the client's invalidations and drops every value (dirty ones are not written back: `flush()` first). */
  close(): void {
    // eslint-disable-next-line @typescript-eslint/no-misused-promises -- the same listener as registered
    this.#client.off("invalidate", this.#onInvalidate);
    this.#client.off("fenced", this.#onFenced);
    this.#entries.clear();
  }

  async #valueOf(key: string): Promise<V> {
    const entry = this.#entries.get(key);
    if (entry !== undefined) return entry.value;
    if (typeof key !== "string") throw new KeylockError("EINVAL", "coherent cache keys are strings");
    this.#loads++;
    const value = await this.#options.load(key);
    this.#entries.set(key, { value, dirty: false, writeSeq: 0n });
    return value;
  }
}

/**
 * The fencing checker both simulators with clients share (drivers.ts, cluster.ts): the tokens of
 * write-mode grants on each key only grow. Exclusive (write) grants are seen in the order they were
 * issued; concurrent write_only holders of one key may see theirs in any order, so they are compared with
 * exclusive grants only. A client's cached re-grant may repeat its own token.
 * Guarantees: pure bookkeeping over what the checkers observe; no clock, no randomness.
 */
import type { LockMode } from "../src/core/modes.js";

interface Seen {
  readonly token: bigint;
  readonly client: number;
}

export class TokenOrder {
  /** Highest token seen per key over every write-mode grant, and over exclusive (write) grants only. */
  readonly #any = new Map<string, Seen>();
  readonly #exclusive = new Map<string, Seen>();

  /** Records a write-mode grant of `key` to `client` with `token`; the fencing violation, if any. */
  observe(key: string, mode: LockMode, token: bigint, client: number): string | null {
    if (token <= 0n) return `c${client} got ${key} ${mode} with token ${token}`;
    const exclusive = mode === "write";
    const seen = exclusive ? this.#any.get(key) : this.#exclusive.get(key);
    const problem =
      seen !== undefined && (token < seen.token || (token === seen.token && seen.client !== client))
        ? `c${client} got ${key} ${mode} with token ${token}; c${seen.client} already had ${seen.token}`
        : null;
    for (const table of exclusive ? [this.#any, this.#exclusive] : [this.#any]) {
      const best = table.get(key);
      if (best === undefined || token > best.token) table.set(key, { token, client });
    }
    return problem;
  }
}

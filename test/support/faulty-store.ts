/**
 * A Store wrapper for tests that cuts the store on demand (DESIGN §9 store outages): while `cut("fail")`
 * every call rejects with StoreError EIO, as a lost connection does; while `cut("hang")` every call waits
 * (it proceeds, in order, once `restore()` is called), as a black-holed connection does. `slow` delays
 * chosen calls by a number of ms. Only the calls picked by `affects` are touched (default: all but close).
 */
import { StoreError, type Store } from "../../src/store/store.js";

export type StoreMethod = Exclude<keyof Store, "url">;

export class FaultyStore {
  readonly store: Store;
  mode: "ok" | "fail" | "hang" = "ok";
  /** Which calls the cut affects (the rest pass through). */
  affects: (method: StoreMethod, args: unknown[]) => boolean = (method) => method !== "close";
  /** Extra latency of a call in ms (0 = none). */
  slow: (method: StoreMethod, args: unknown[]) => number = () => 0;
  /** Calls refused or held by the cut so far. */
  cutCalls = 0;
  private waiters: (() => void)[] = [];

  constructor(readonly inner: Store) {
    this.store = new Proxy(inner, {
      get: (target, property, receiver) => {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== "function") return value;
        const method = property as StoreMethod;
        const call = value as (...args: unknown[]) => Promise<unknown>;
        return async (...args: unknown[]) => {
          const delayMs = this.slow(method, args);
          if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
          if (this.mode !== "ok" && this.affects(method, args)) {
            this.cutCalls++;
            if (this.mode === "fail") throw new StoreError("EIO", `${String(method)}: the store is cut (test)`);
            await new Promise<void>((resolve) => this.waiters.push(resolve));
          }
          return call.apply(target, args);
        };
      },
    });
  }

  cut(mode: "fail" | "hang"): void {
    this.mode = mode;
  }

  restore(): void {
    this.mode = "ok";
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

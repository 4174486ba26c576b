/**
 * The honest side of the hostile-peer fuzzer: a few `connect()` clients (the public API) running a
 * guarded counter on one key, and the shared resource that checks what a fenced store would check.
 *
 * Each round: acquire `write` on COUNTER_KEY, check the fencing token against the resource (a token
 * below the last one seen, or equal to it from another client, is a violation; equal from the same
 * client is its cached grant), check nobody else is inside, read the value, yield, write value + 1,
 * release. At the end the value must equal the increments that completed.
 *
 * Guarantees: `violations` lists every safety violation seen (mutual exclusion, token order, lost
 * increments); `waitForProgress(t)` says whether every client completed an increment after `t`;
 * `stop()` always ends (acquires are aborted, close() is bounded by the clients' connect timeout).
 * Relies on: src/index.ts (connect, LockClient), the target's client addresses.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { performance } from "node:perf_hooks";
import { connect, type LockClient } from "../../src/index.js";

export const COUNTER_KEY = "fuzz-counter";
/** Honest clients give up connecting (and closing) after this long. */
const CLIENT_TIMEOUT_MS = 5000;

interface Honest {
  readonly index: number;
  client: LockClient | null;
  completed: number;
  lastIncrementAt: number;
  readonly errors: string[];
}

export class HonestWorkload {
  readonly violations: string[] = [];
  private readonly clients: Honest[] = [];
  private readonly loops: Promise<void>[] = [];
  private readonly abort = new AbortController();
  private value = 0;
  private lastToken = 0n;
  private lastHolder = -1;
  private inside: number | null = null;

  constructor(
    private readonly servers: readonly string[],
    count: number,
  ) {
    for (let i = 0; i < count; i++) this.clients.push({ index: i, client: null, completed: 0, lastIncrementAt: -Infinity, errors: [] });
  }

  async start(): Promise<void> {
    for (const honest of this.clients) {
      honest.client = await connect({
        servers: [...this.servers],
        name: `fuzz-honest-${honest.index}`,
        connectTimeoutMs: CLIENT_TIMEOUT_MS,
      });
      honest.client.on("error", (error) => this.note(honest, `error event: ${error.message}`));
      honest.client.on("fenced", (error) => this.note(honest, `fenced: ${error.message}`));
    }
    for (const honest of this.clients) this.loops.push(this.loop(honest));
  }

  get completed(): number {
    return this.clients.reduce((sum, c) => sum + c.completed, 0);
  }

  /** Resolves true once every client completed an increment after `since` (performance.now), false after `boundMs`. */
  async waitForProgress(since: number, boundMs: number): Promise<boolean> {
    const deadline = performance.now() + boundMs;
    while (performance.now() < deadline) {
      if (this.clients.every((c) => c.lastIncrementAt > since)) return true;
      await sleep(20);
    }
    return this.clients.every((c) => c.lastIncrementAt > since);
  }

  /** Clients that did not complete an increment after `since`, with their latest errors. */
  stalled(since: number): string[] {
    return this.clients
      .filter((c) => c.lastIncrementAt <= since)
      .map((c) => `honest client ${c.index} (${c.completed} increments; last errors: ${c.errors.slice(-3).join(" | ") || "none"})`);
  }

  /** The end-of-run safety check: the counter holds exactly the completed increments. */
  checkCounter(): void {
    if (this.value !== this.completed) {
      this.violations.push(`counter is ${this.value} but ${this.completed} increments completed (lost or doubled updates)`);
    }
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await Promise.all(this.loops);
    await Promise.all(
      this.clients.map(async (c) => {
        try {
          await c.client?.close();
        } catch {
          // bounded by CLIENT_TIMEOUT_MS; a dead target cannot answer the farewell
        }
      }),
    );
    this.checkCounter();
  }

  private note(honest: Honest, text: string): void {
    honest.errors.push(text);
    if (honest.errors.length > 20) honest.errors.shift();
  }

  private async loop(honest: Honest): Promise<void> {
    const client = honest.client!;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let handle;
      try {
        handle = await client.acquire(COUNTER_KEY, "write", { signal });
      } catch (error) {
        if (signal.aborted) return;
        const code = (error as { code?: string }).code;
        this.note(honest, `acquire: ${code ?? ""} ${(error as Error).message}`);
        if (code === "EFENCED" || code === "ESHUTDOWN") return;
        await sleep(50);
        continue;
      }
      try {
        if (this.inside !== null) {
          this.violations.push(`honest clients ${this.inside} and ${honest.index} hold the write lock at once`);
        }
        const token = handle.writeSeq;
        if (token < this.lastToken || (token === this.lastToken && this.lastHolder !== honest.index)) {
          this.violations.push(
            `fencing token went from ${this.lastToken} (client ${this.lastHolder}) to ${token} (client ${honest.index})`,
          );
        }
        this.inside = honest.index;
        const read = this.value;
        await sleep(Math.random() < 0.5 ? 0 : 1);
        // A fenced store refuses a write whose token is below the newest one; a handle that lost its lock does not write.
        if (handle.isValid && token >= this.lastToken) {
          this.value = read + 1;
          this.lastToken = token;
          this.lastHolder = honest.index;
          honest.completed++;
          honest.lastIncrementAt = performance.now();
        } else {
          this.note(honest, `lost the lock inside the critical section (token ${token})`);
        }
        if (this.inside === honest.index) this.inside = null;
      } finally {
        handle.release();
      }
      // Let the other clients contend, so the server invalidates and grants new tokens.
      await sleep(Math.random() < 0.7 ? 0 : 2);
    }
  }
}

/**
 * Fence requests (reference §8.1–8.2, §5.6; DESIGN §3): the rids this server has asked the fence agent
 * to cut off, and what became of each. Pure bookkeeping: the driver runs the agent, enforces the fence
 * timeout (`overdue` helps), reclaims fenced rids and stops the server on an error.
 *
 * Guarantees:
 * - At most one request per rid (B37): `start` for a rid that already has one, in any state, changes
 *   nothing and returns false, so a rid fenced for a reconnect timeout and then listed again by the
 *   recovery deadline is fenced once. Previously a duplicate was fatal and recovery could never finish.
 * - A request is "running" until its first outcome: `onFenced` makes it "fenced", `onError` makes it
 *   "error" with the reason. The first outcome sticks; a late second report (an agent that finishes after
 *   its timeout was already reported as an error) changes nothing. Reports for rids without a request
 *   (freed, or after `stop`) are ignored: the agent may outlive the request.
 * - `next()` is the oldest request with an outcome (started first), or undefined; it stays there until
 *   the driver `free`s it, so a driver that fails half-way finds it again. Fenced → reclaim, then free;
 *   error → stop the server (another member will fence again from the durable records, reference §8.4).
 * - `stop()` forgets every request (B38: requests left over from a failed start blocked every later
 *   start); every server exit path calls it. Afterwards the tracker is as new.
 * - Returned requests are copies: changing one changes nothing here.
 *
 * Relies on: the driver starting the agent only when `start` returned true, and reporting each agent
 * outcome (or the timeout) exactly once per run; `nowMs` being the driver's monotonic-enough clock.
 *
 * Across failover: nothing here survives a server. A new server fences again whatever the durable state
 * (client records, quorum slots) says must be fenced; a rid fenced by a dead server whose reclaim never
 * committed is simply fenced again, which an agent must tolerate (exit 0 when already gone).
 */
import { invariant } from "./errors.js";

export type FenceReason = "client_recovery" | "client_reconnect" | "quorum_block_leader";
export type FenceState = "running" | "fenced" | "error";

export interface FenceRequest {
  rid: bigint;
  address: string;
  reason: FenceReason;
  pid?: number;
  state: FenceState;
  error?: string;
  startedAtMs: number;
}

const FENCE_REASONS: readonly FenceReason[] = ["client_recovery", "client_reconnect", "quorum_block_leader"];

function copy(request: FenceRequest): FenceRequest {
  return { ...request };
}

export class FenceTracker {
  /** rid → request; insertion order is start order, which `next()` and `list()` follow. */
  readonly #requests = new Map<bigint, FenceRequest>();

  /**
   * Dedup by rid (B37): true if a new request was created (the driver then runs the agent), false if one
   * already exists for the rid (nothing to do).
   */
  start(
    request: { rid: bigint; address: string; reason: FenceReason; pid?: number },
    nowMs: number,
  ): boolean {
    invariant(FENCE_REASONS.includes(request.reason), () => `unknown fence reason ${String(request.reason)}`);
    if (this.#requests.has(request.rid)) return false;
    const created: FenceRequest = {
      rid: request.rid,
      address: request.address,
      reason: request.reason,
      state: "running",
      startedAtMs: nowMs,
    };
    if (request.pid !== undefined) created.pid = request.pid;
    this.#requests.set(request.rid, created);
    return true;
  }

  /** The agent succeeded: the driver reclaims the rid, then calls free(rid). */
  onFenced(rid: bigint): void {
    const request = this.#requests.get(rid);
    if (request === undefined || request.state !== "running") return;
    request.state = "fenced";
  }

  /** The agent failed or timed out: the driver stops the server. */
  onError(rid: bigint, error: string): void {
    const request = this.#requests.get(rid);
    if (request === undefined || request.state !== "running") return;
    request.state = "error";
    request.error = error;
  }

  /** The first request that finished (fenced or error), oldest first, or undefined. */
  next(): FenceRequest | undefined {
    for (const request of this.#requests.values()) {
      if (request.state !== "running") return copy(request);
    }
    return undefined;
  }

  /** Running requests started `timeoutMs` or more before `nowMs`, oldest first: the driver reports each with onError. */
  overdue(nowMs: number, timeoutMs: number): FenceRequest[] {
    const out: FenceRequest[] = [];
    for (const request of this.#requests.values()) {
      if (request.state === "running" && nowMs - request.startedAtMs >= timeoutMs) out.push(copy(request));
    }
    return out;
  }

  /** After the rid was reclaimed (or the server gave up on it): forget its request. */
  free(rid: bigint): void {
    this.#requests.delete(rid);
  }

  has(rid: bigint): boolean {
    return this.#requests.has(rid);
  }

  /** Every request, oldest first (for `keylock fences`). */
  list(): FenceRequest[] {
    return [...this.#requests.values()].map(copy);
  }

  /** Every server exit path calls this (B38): no fence state outlives a server. */
  stop(): void {
    this.#requests.clear();
  }
}

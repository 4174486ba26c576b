/**
 * The client lock manager (reference §4, DESIGN §3–§4): one object per key this client caches or wants,
 * holding the granted mode, the local handles (users) per mode, a FIFO of waiters, at most one
 * outstanding request to the server, and a FIFO of invalidations the server asked for. Pure: the driver
 * feeds events and carries out the returned effects in order.
 *
 * Guarantees:
 * - Handles are exclusive everywhere (DESIGN §4): two handles on one key coexist only when
 *   handlesShare() says so (read with read, write_only with write_only), even inside one process.
 * - `users[m] > 0` implies the cached mode satisfies m, at all times (asserted after every event).
 * - At most one request per key is outstanding; a grant is applied in arrival order and then decides
 *   again (a grant of a different mode may lead to the next request).
 * - Waiters are served strictly FIFO per key, and several compatible ones at the head at once. A
 *   waiter is served from the cache (no network) when the cached mode satisfies it, every handle
 *   shares with it and no queued invalidation's target would fail to serve it: once the server asked
 *   for a lock back, new local users that the target would not serve wait behind it (DESIGN §4).
 * - One place decides for the head waiter: HEAD_RULES below. A request is sent only when the head
 *   waiter needs something the server must grant (the cached mode does not satisfy it). When the only
 *   obstacles are local users or queued invalidations, it waits: those resolve without the server,
 *   and when an invalidation lowers the mode the rules run again and send the request then.
 * - Nonblock: served from the cache right now, or, when nothing local stands in the way (no waiter
 *   ahead, no outstanding request, no queued invalidation, no handle it would conflict with), one
 *   no-queue request tied to that waiter; the server's grant serves it, its refusal fails it EAGAIN.
 *   Anything else fails EAGAIN at once.
 * - Invalidations are answered with an exact echo of the server's message and request id, in arrival
 *   order per key, and only once every handle is satisfied by the target and the application's
 *   callback (the `invalidate` effect) reported completion. The reply is the promise that nothing
 *   above the target is used any more. An invalidation for a key without a lock object is answered
 *   at once and leaves nothing behind (B12). Every queued record is processed (B9–B11).
 * - An invalidation only ever lowers the mode: mode becomes the greatest mode both the current mode and
 *   the target satisfy (LOWERED). A duplicate after failover (same or lower target, or even a higher
 *   one, e.g. target read while already at null) is answered and harmless. When it does not change the
 *   mode the application callback is skipped: the earlier lowering already ran it.
 * - Idle locks (no users, waiters, request or invalidations) with a non-null mode sit in an LRU; on
 *   every acquire, while there are more lock objects than `idleLockLimit`, ONE null request is sent for
 *   the oldest idle lock (B19: paced by use, never a burst). An idle null lock is freed at once.
 * - Recovery reports every lock object in key order with the mode held before any in-progress
 *   invalidation (B7), so a new server never believes a flush already finished. Null-mode objects
 *   (waiting for a first grant) are reported too, as in the reference.
 *
 * Relies on (from the session layer and the driver):
 * - Lock messages of one key arrive in order (a grant is applied before an invalidation the server sent
 *   after it), and every request is answered exactly once (a grant, or a refusal for a no-queue one),
 *   by the server or by its successor after failover. A grant with no outstanding request is a bug.
 * - The server follows its own rules: it grants no key while one of our invalidations is outstanding,
 *   and resolves conflicts with our own grant by invalidating us first (so a grant never lowers the
 *   mode below an active handle).
 * - The driver calls invalidationDone(id) once per `invalidate` effect, after the callback completed,
 *   and uses each WaiterId for one acquire call.
 *
 * Across failover: outstanding requests are resent by the session layer and stay outstanding here.
 * An invalidation in progress when the server died is still completed and answered (the reply to a
 * dead server is dropped; the new server believes the pre-invalidation mode we reported and asks again,
 * which is a harmless duplicate). A grant that arrives while an invalidation is in progress (the new
 * server granted from the reported mode) is applied, but new users still wait for the callback to
 * finish. shutdown() keeps answering invalidations without callbacks (B13); reset() forgets everything
 * when the server forgot us (fenced, or after farewell).
 */
import { ChurnMap } from "./churn-map.js";
import { SlotMap } from "./slot-map.js";
import { InvariantError, invariant } from "./errors.js";
import { compareKeys, keyToText, type Key } from "./keys.js";
import type { LockGrant, LockInvalidation, LockRequest, RecoveredLock } from "./lock-messages.js";
import { carriesWriteSeq, handlesShare, LOCK_MODES, modeCode, satisfies, type LockMode } from "./modes.js";

/** Chosen by the driver, unique per acquire call; also identifies the handle once granted. */
export type WaiterId = number;

export type ClientLockEffect =
  /** At most one outstanding per key. */
  | { type: "send-request"; request: LockRequest }
  /** The exact echo of the invalidation, to the server request id it came with. */
  | { type: "send-invalidate-response"; requestId: number; response: LockInvalidation }
  /** Run the application callback, then call invalidationDone(invalidationId). */
  | { type: "invalidate"; invalidationId: number; key: Key; from: LockMode; to: LockMode }
  | { type: "granted"; waiterId: WaiterId; key: Key; mode: LockMode; writeSeq: bigint }
  | {
      type: "failed";
      waiterId: WaiterId;
      key: Key;
      code: "EAGAIN" | "EABORTED" | "ESHUTDOWN" | "EFENCED";
      reason: string;
    };

type UserMode = Exclude<LockMode, "null">;
type FailCode = "EAGAIN" | "EABORTED" | "ESHUTDOWN" | "EFENCED";
type StopCode = "ESHUTDOWN" | "EFENCED";

export interface ClientLockView {
  key: Key;
  mode: LockMode;
  writeSeq: bigint;
  users: Record<UserMode, number>;
  waiters: number;
  requestPending: LockMode | null;
  invalidations: number;
  idle: boolean;
}

interface Waiter {
  readonly id: WaiterId;
  readonly mode: UserMode;
  readonly nonblock: boolean;
  /** A nonblock waiter gets one no-queue request; once it is answered the waiter is served or fails. */
  askedServer: boolean;
}

interface OutstandingRequest {
  readonly mode: LockMode;
  readonly noQueue: boolean;
  /** The nonblock waiter a no-queue request was sent for; null once it left (abort, shutdown). */
  waiterId: WaiterId | null;
}

interface InvalidationRecord {
  readonly requestId: number;
  readonly invalidation: LockInvalidation;
  /** Set when the application callback started; the record is then "in progress". */
  invalidationId: number | null;
}

interface ClientLock {
  readonly key: Key;
  /** The mode usable now: set by grants, lowered at the start of an invalidation. */
  mode: LockMode;
  /** The mode held before the invalidation in progress (reported in recovery, B7); null when none. */
  invalidatingMode: LockMode | null;
  writeSeq: bigint;
  /**
   * The proof of the latest non-null grant (LockGrant's grantTerm, grantNo, grantTag), reported in
   * recovery with any non-null mode: the mode reported is that grant's or one an invalidation lowered it
   * to, which the server accepts (core/grant-tags.ts `verify`). Zeros before the first grant.
   */
  grantTerm: bigint;
  grantNo: number;
  grantTag: number;
  readonly users: Record<UserMode, number>;
  /**
   * Waiters, FIFO: the oldest in `headWaiter` (null exactly when there are none), the others in
   * `laterWaiters` (Map insertion order, so abort is O(1); NO_WAITERS, shared and never written, while there
   * are none): see addWaiter/removeWaiter.
   */
  headWaiter: Waiter | null;
  laterWaiters: Map<WaiterId, Waiter>;
  request: OutstandingRequest | null;
  /** FIFO; only the head may be in progress. */
  readonly invalidations: InvalidationRecord[];
  /** Intrusive idle-LRU links (O(1) unlink and append, no Map churn on the cached fast path). */
  lruPrev: ClientLock | null;
  lruNext: ClientLock | null;
  inLru: boolean;
}

/** Idle locks, oldest first: a doubly linked list threaded through the lock objects. */
class IdleList {
  private head: ClientLock | null = null;
  private tail: ClientLock | null = null;

  append(lock: ClientLock): void {
    lock.lruPrev = this.tail;
    lock.lruNext = null;
    if (this.tail) this.tail.lruNext = lock;
    else this.head = lock;
    this.tail = lock;
    lock.inLru = true;
  }

  remove(lock: ClientLock): void {
    if (!lock.inLru) return;
    if (lock.lruPrev) lock.lruPrev.lruNext = lock.lruNext;
    else this.head = lock.lruNext;
    if (lock.lruNext) lock.lruNext.lruPrev = lock.lruPrev;
    else this.tail = lock.lruPrev;
    lock.lruPrev = lock.lruNext = null;
    lock.inLru = false;
  }

  oldest(): ClientLock | null {
    return this.head;
  }

  clear(): void {
    for (let lock = this.head; lock; ) {
      const next = lock.lruNext;
      lock.lruPrev = lock.lruNext = null;
      lock.inLru = false;
      lock = next;
    }
    this.head = this.tail = null;
  }
}

interface Handle {
  readonly key: Key;
  readonly mode: UserMode;
}

/**
 * Held handles by waiter id: the most recently served one in a slot, the rest in a ChurnMap. The cached
 * re-acquire loop (serve, then release the same handle) then never touches the Map: set + delete of a
 * fresh id on every acquire was the largest single cost of that loop after the consistency check.
 */
class HandleTable {
  #slotId: WaiterId = 0;
  #slot: Handle | null = null;
  readonly #rest = new ChurnMap<WaiterId, Handle>();

  has(id: WaiterId): boolean {
    return (this.#slot !== null && this.#slotId === id) || this.#rest.has(id);
  }

  get(id: WaiterId): Handle | undefined {
    if (this.#slot !== null && this.#slotId === id) return this.#slot;
    return this.#rest.get(id);
  }

  set(id: WaiterId, handle: Handle): void {
    if (this.#slot !== null && this.#slotId !== id) this.#rest.set(this.#slotId, this.#slot);
    this.#slotId = id;
    this.#slot = handle;
  }

  delete(id: WaiterId): void {
    if (this.#slot !== null && this.#slotId === id) this.#slot = null;
    else this.#rest.delete(id);
  }

  ids(): WaiterId[] {
    const ids = [...this.#rest.keys()];
    if (this.#slot !== null) ids.push(this.#slotId);
    return ids;
  }

  clear(): void {
    this.#slot = null;
    this.#rest.clear();
  }
}

/**
 * The mode after an invalidation to `target` (column) of a lock held in `mode` (row): the greatest mode
 * that both satisfy. Lowering only: a duplicate asking for more than we hold never raises the mode.
 * The server only sends null or write→read (reference §2.3); the rest of the table is for duplicates.
 */
const LOWERED: Readonly<Record<LockMode, Readonly<Record<LockMode, LockMode>>>> = {
  null: { null: "null", read: "null", write: "null", write_only: "null" },
  read: { null: "null", read: "read", write: "read", write_only: "null" },
  write: { null: "null", read: "read", write: "write", write_only: "null" },
  write_only: { null: "null", read: "null", write: "null", write_only: "write_only" },
};

/**
 * satisfies(), handlesShare() and LOWERED by mode code (modeCode: null 0, read 1, write 2, write_only 3),
 * filled from them at load. On the per-message paths a lookup by a mode name that varies
 * (`TABLE[granted][wanted]`) is a megamorphic keyed load, a stub-cache probe each.
 */
const SATISFIES_BY_CODE: readonly boolean[] = byCode(satisfies);
const SHARE_BY_CODE: readonly boolean[] = byCode(handlesShare);
const LOWERED_BY_CODE: readonly LockMode[] = byCode((mode, target) => LOWERED[mode][target]);

function byCode<T>(relation: (row: LockMode, column: LockMode) => T): T[] {
  const table: T[] = [];
  for (const row of LOCK_MODES) for (const column of LOCK_MODES) table[modeCode(row) * 4 + modeCode(column)] = relation(row, column);
  return table;
}

function servesMode(granted: LockMode, wanted: LockMode): boolean {
  return SATISFIES_BY_CODE[modeCode(granted) * 4 + modeCode(wanted)]!;
}

function sharesMode(held: LockMode, wanted: LockMode): boolean {
  return SHARE_BY_CODE[modeCode(held) * 4 + modeCode(wanted)]!;
}

function lowered(mode: LockMode, target: LockMode): LockMode {
  return LOWERED_BY_CODE[modeCode(mode) * 4 + modeCode(target)]!;
}

/** What the head waiter's situation is; HEAD_RULES turns it into an action. */
interface HeadFacts {
  /** Cached mode satisfies it, every handle shares with it, every queued invalidation's target serves it. */
  readonly servable: boolean;
  /** The cached mode satisfies it (it may still be blocked locally). */
  readonly satisfied: boolean;
  readonly nonblock: boolean;
  /** A request for this key is outstanding. */
  readonly requestOutstanding: boolean;
  /** The outstanding request is this (nonblock) waiter's own no-queue request. */
  readonly ownRequestOutstanding: boolean;
  /** This nonblock waiter's no-queue request was already answered. */
  readonly askedServer: boolean;
  /** A handle it would not share with, or any queued invalidation. */
  readonly localObstacle: boolean;
}

type HeadAction = "serve" | "wait" | "request" | "request-no-queue" | "fail-eagain";

/** The one place that decides for the head waiter; the first matching row wins. */
const HEAD_RULES: readonly { readonly when: (f: HeadFacts) => boolean; readonly then: HeadAction }[] = [
  // The cache serves it; no network.
  { when: (f) => f.servable, then: "serve" },
  // A nonblock waiter waits only for the answer to its own no-queue request.
  { when: (f) => f.nonblock && f.ownRequestOutstanding, then: "wait" },
  // Nothing local in the way and the cache cannot serve it: only the server can say yes, at once or never.
  {
    when: (f) => f.nonblock && !f.askedServer && !f.requestOutstanding && !f.localObstacle && !f.satisfied,
    then: "request-no-queue",
  },
  // Anything else would mean waiting, which a nonblock caller refused.
  { when: (f) => f.nonblock, then: "fail-eagain" },
  // One outstanding request per key: decide again when it is answered.
  { when: (f) => f.requestOutstanding, then: "wait" },
  // Only local users or queued invalidations stand in the way; they resolve without the server. If an
  // invalidation lowers the mode, these rules run again and the last row sends the request then.
  { when: (f) => f.satisfied, then: "wait" },
  // The cached grant cannot serve it: ask the server for exactly the mode it wants.
  { when: () => true, then: "request" },
];

/** One bit per HeadFacts field, in declaration order. */
const HEAD_FACT_NAMES = ["servable", "satisfied", "nonblock", "requestOutstanding", "ownRequestOutstanding", "askedServer", "localObstacle"] as const satisfies readonly (keyof HeadFacts)[];
const HEAD_FACT_BITS = Object.fromEntries(HEAD_FACT_NAMES.map((name, i) => [name, 1 << i])) as Readonly<Record<keyof HeadFacts, number>>;

/**
 * HEAD_RULES evaluated once, at load, for every combination of the head waiter's facts (impossible ones
 * included): decideForHead looks its answer up instead of building a facts object and calling a rule
 * closure per row for every waiter on every event (a call site of seven closures is megamorphic).
 */
const HEAD_ACTIONS: readonly HeadAction[] = Array.from({ length: 1 << HEAD_FACT_NAMES.length }, (_, bits) => {
  const facts = Object.fromEntries(HEAD_FACT_NAMES.map((name) => [name, (bits & HEAD_FACT_BITS[name]) !== 0])) as unknown as HeadFacts;
  const rule = HEAD_RULES.find((row) => row.when(facts));
  if (rule === undefined) throw new InvariantError("HEAD_RULES has no matching row"); // unreachable: the last row always matches
  return rule.then;
});

export class ClientLocks {
  private readonly idleLockLimit: number;
  private readonly locks = new Map<Key, ClientLock>();
  /** Idle non-null locks, oldest first (Map insertion order): O(1) touch, remove and oldest. */
  private readonly lru = new IdleList();
  private readonly handles = new HandleTable();
  private readonly waiting = new SlotMap<WaiterId, ClientLock>();
  /** Handles dropped by reset(): their release is a harmless no-op, once. */
  private readonly orphanedHandles = new Set<WaiterId>();
  private readonly inProgress = new SlotMap<number, ClientLock>();
  private nextInvalidationId = 1;
  /** Invalidation ids below this were voided by reset(); a late invalidationDone for them is ignored. */
  private voidedInvalidationIdsBelow = 1;
  private stopCode: StopCode | null = null;
  /** Invalidation records queued on every lock (in progress or not): onNewServer has nothing to drop at 0. */
  private queuedInvalidations = 0;
  /** Keys in bytewise order for recovery; rebuilt lazily after a lock object is created or freed. */
  private sortedKeys: Key[] | null = null;

  constructor(options: { idleLockLimit: number }) {
    invariant(
      Number.isInteger(options.idleLockLimit) && options.idleLockLimit >= 0,
      `idleLockLimit must be an integer >= 0, got ${options.idleLockLimit}`,
    );
    this.idleLockLimit = options.idleLockLimit;
  }

  get lockCount(): number {
    return this.locks.size;
  }

  // ---- events from the application (through the driver) ----

  acquire(waiterId: WaiterId, key: Key, mode: UserMode, options: { nonblock: boolean }): ClientLockEffect[] {
    // Checked with plain ifs: an invariant() message closure would be allocated on every cached acquire.
    if ((mode as LockMode) === "null") throw new InvariantError(`acquire of ${keyToText(key)} in mode null`);
    if (this.waiting.has(waiterId) || this.handles.has(waiterId)) {
      throw new InvariantError(`acquire with waiter id ${waiterId} that is already in use`);
    }
    if (this.stopCode !== null) return [failed(waiterId, key, this.stopCode, "the lock manager is shut down")];
    let lock = this.locks.get(key);
    if (lock === undefined) {
      lock = newLock(key);
      this.locks.set(key, lock);
      this.sortedKeys = null;
    }
    let out: ClientLockEffect[];
    if (lock.headWaiter === null && servable(lock, mode)) {
      // Fast path (cached re-acquire): the same answer HEAD_RULES would give, without queueing. The
      // effects array starts as a one-element literal (an empty one grows a 16-slot store on its first push).
      out = [this.serve(lock, waiterId, mode)];
    } else {
      out = [];
      if (options.nonblock && lock.headWaiter !== null) {
        out.push(failed(waiterId, key, "EAGAIN", "nonblock: other waiters are queued ahead"));
      } else {
        addWaiter(lock, { id: waiterId, mode, nonblock: options.nonblock, askedServer: false });
        this.waiting.set(waiterId, lock);
      }
    }
    this.makeProgress(lock, out);
    this.shrinkOneIdleLock(out);
    return out;
  }

  release(waiterId: WaiterId): ClientLockEffect[] {
    const handle = this.handles.get(waiterId);
    if (handle === undefined) {
      if (this.orphanedHandles.delete(waiterId)) return []; // dropped by reset(); nothing left to release
      throw new InvariantError(`release of handle ${waiterId}, which is not held (double release? B17)`);
    }
    this.handles.delete(waiterId);
    const lock = this.locks.get(handle.key);
    if (lock === undefined) throw new InvariantError(`handle ${waiterId} on ${keyToText(handle.key)} has no lock object`);
    if (addUsers(lock.users, handle.mode, -1) < 0) throw new InvariantError(`users[${handle.mode}] underflow on ${keyToText(lock.key)}`);
    const out: ClientLockEffect[] = [];
    this.makeProgress(lock, out);
    return out;
  }

  abort(waiterId: WaiterId): ClientLockEffect[] {
    const lock = this.waiting.get(waiterId);
    if (lock === undefined) return []; // already granted, failed, or never seen: nothing to abort
    const out: ClientLockEffect[] = [];
    this.fail(lock, waiterId, "EABORTED", "aborted while waiting", out);
    this.makeProgress(lock, out);
    return out;
  }

  // ---- events from the server ----

  onGrant(grant: LockGrant): ClientLockEffect[] {
    const lock = this.locks.get(grant.key);
    const request = lock?.request;
    if (lock === undefined || request == null) {
      throw new InvariantError(`grant ${describe(grant)} for a key with no outstanding request`);
    }
    // Plain ifs on the per-message paths: an invariant() message closure would be allocated on every call.
    if (grant.newMode !== request.mode) {
      throw new InvariantError(`grant ${describe(grant)} does not answer the outstanding request for ${request.mode}`);
    }
    lock.request = null;
    lock.mode = grant.newMode;
    lock.writeSeq = grant.writeSeq;
    if (grant.newMode !== "null") {
      lock.grantTerm = grant.grantTerm;
      lock.grantNo = grant.grantNo;
      lock.grantTag = grant.grantTag;
    }
    const out: ClientLockEffect[] = [];
    this.makeProgress(lock, out);
    return out;
  }

  onRefuse(key: Key, code: "EAGAIN"): ClientLockEffect[] {
    const lock = this.locks.get(key);
    const request = lock?.request;
    if (lock === undefined || request == null || !request.noQueue) {
      throw new InvariantError(
        `refusal (${code}) for ${keyToText(key)}, which has no outstanding no-queue request`,
      );
    }
    lock.request = null;
    const out: ClientLockEffect[] = [];
    if (request.waiterId !== null) {
      this.fail(lock, request.waiterId, "EAGAIN", "nonblock: the server could not grant it at once", out);
    }
    this.makeProgress(lock, out);
    return out;
  }

  onInvalidate(requestId: number, invalidation: LockInvalidation): ClientLockEffect[] {
    const lock = this.locks.get(invalidation.key);
    if (lock === undefined) {
      // Not holding a lock satisfies any invalidation; keep no record of it (B12).
      return [{ type: "send-invalidate-response", requestId, response: invalidation }];
    }
    lock.invalidations.push({ requestId, invalidation, invalidationId: null });
    this.queuedInvalidations++;
    const out: ClientLockEffect[] = [];
    this.makeProgress(lock, out);
    return out;
  }

  invalidationDone(invalidationId: number): ClientLockEffect[] {
    const lock = this.inProgress.get(invalidationId);
    if (lock === undefined) {
      // A callback that was running when reset() dropped its lock: the server forgot us; nothing to answer.
      if (invalidationId < this.voidedInvalidationIdsBelow) return [];
      throw new InvariantError(`invalidationDone(${invalidationId}) for no invalidation in progress`);
    }
    this.inProgress.delete(invalidationId);
    const record = lock.invalidations[0];
    if (record?.invalidationId !== invalidationId) {
      throw new InvariantError(`invalidation #${invalidationId} is not the head of ${keyToText(lock.key)}`);
    }
    const out: ClientLockEffect[] = [];
    this.answerHeadInvalidation(lock, out);
    this.makeProgress(lock, out);
    return out;
  }

  // ---- recovery, shutdown, views ----

  /**
   * A greeting reached a new server (failover, restart): invalidations queued by the dead server that have
   * not started are dropped — their answers would be dropped anyway (they were owed to the dead server),
   * and applying them would lower a mode the new server is about to learn from our recovery report, leaving
   * it believing we hold more than we do. An invalidation already in progress finishes (its callback is
   * running) and is reported at its pre-invalidation mode (B7); the new server re-sends what it still needs.
   * Call before answering the new server's first recovery request.
   */
  onNewServer(): ClientLockEffect[] {
    const out: ClientLockEffect[] = [];
    // No queued invalidation anywhere (the usual case): no walk over every lock the client holds.
    if (this.queuedInvalidations === 0) return out;
    for (const lock of this.locks.values()) {
      if (lock.invalidations.length === 0) continue;
      const head = lock.invalidations[0]!;
      const kept = head.invalidationId !== null ? [head] : [];
      if (kept.length === lock.invalidations.length) continue;
      this.queuedInvalidations -= lock.invalidations.length - kept.length;
      lock.invalidations.splice(0, lock.invalidations.length, ...kept);
      this.makeProgress(lock, out);
    }
    return out;
  }

  /**
   * Recovery (reference §4.9): up to `max` locks with key strictly after `after` (null = from the first),
   * in key order; mode = the mode held before any in-progress invalidation (B7).
   */
  recoverBatch(after: Key | null, max: number): RecoveredLock[] {
    invariant(Number.isInteger(max) && max > 0, `recovery batch size must be a positive integer, got ${max}`);
    // The default sort compares strings by UTF-16 code unit, which for binary-string keys (one byte per
    // code unit) is compareKeys' bytewise order, without a call into JavaScript per comparison (a
    // recovery sorts every key the client holds, once, in code that has not run before).
    this.sortedKeys ??= Array.from(this.locks.keys()).sort();
    const keys = this.sortedKeys;
    const index = after === null ? 0 : firstKeyAfter(keys, after);
    return reportLocks(this.locks, keys, index, Math.min(keys.length, index + max));
  }

  /**
   * Stop: every waiter fails with `code`; later acquires fail at once; invalidations are still answered
   * (after users drain) but app callbacks are skipped (B13). A callback already running still completes.
   */
  shutdown(code: StopCode): ClientLockEffect[] {
    this.stopCode = code;
    const out: ClientLockEffect[] = [];
    for (const lock of [...this.locks.values()]) {
      for (const waiterId of waiterIds(lock)) {
        this.fail(lock, waiterId, code, "the lock manager is shutting down", out);
      }
      this.makeProgress(lock, out);
    }
    return out;
  }

  /**
   * Forget every lock (the server forgot us: fenced, or after farewell): fail waiters with code, drop
   * everything. Held handles become orphans whose release is a no-op; callbacks still running may call
   * invalidationDone, which is ignored. A shutdown stays in force; without one the table is simply empty.
   */
  reset(code: StopCode): ClientLockEffect[] {
    const out: ClientLockEffect[] = [];
    for (const lock of this.locks.values()) {
      for (const waiterId of waiterIds(lock)) {
        out.push(failed(waiterId, lock.key, code, "the server forgot this client's locks"));
      }
    }
    for (const waiterId of this.handles.ids()) this.orphanedHandles.add(waiterId);
    this.handles.clear();
    this.waiting.clear();
    this.locks.clear();
    this.queuedInvalidations = 0;
    this.lru.clear();
    this.inProgress.clear();
    this.voidedInvalidationIdsBelow = this.nextInvalidationId;
    this.sortedKeys = null;
    return out;
  }

  /**
   * The request outstanding on `key` (its mode, and whether it is a no-queue one), or null. The driver
   * checks a server's answer against it before `onGrant`/`onRefuse`, which treat a mismatch as a bug.
   */
  outstandingRequest(key: Key): { readonly mode: LockMode; readonly noQueue: boolean } | null {
    return this.locks.get(key)?.request ?? null; // the record itself (read-only to the caller): no copy per answer
  }

  view(key: Key): ClientLockView | undefined {
    const lock = this.locks.get(key);
    if (lock === undefined) return undefined;
    return {
      key,
      mode: lock.mode,
      writeSeq: lock.writeSeq,
      users: { ...lock.users },
      waiters: waiterCount(lock),
      requestPending: lock.request?.mode ?? null,
      invalidations: lock.invalidations.length,
      idle: isIdle(lock),
    };
  }

  // ---- the progress function ----

  /**
   * Everything that can move on one lock, in order: start the head invalidation if every handle allows
   * it; then the head waiter, per HEAD_RULES, until it must wait; then idle bookkeeping.
   */
  private makeProgress(lock: ClientLock, out: ClientLockEffect[]): void {
    this.proceedWithInvalidations(lock, out);
    for (;;) {
      const head = firstWaiter(lock);
      if (head === undefined) break;
      const action = decideForHead(lock, head);
      if (action === "wait") break;
      switch (action) {
        case "serve":
          removeWaiter(lock, head.id);
          this.waiting.delete(head.id);
          out.push(this.serve(lock, head.id, head.mode));
          break;
        case "fail-eagain":
          this.fail(lock, head.id, "EAGAIN", eagainReason(lock, head), out);
          break;
        case "request":
          this.sendRequest(lock, head.mode, null, out);
          break;
        case "request-no-queue":
          head.askedServer = true;
          this.sendRequest(lock, head.mode, head.id, out);
          break;
      }
    }
    this.settle(lock);
    checkLock(lock);
  }

  /** The head record proceeds when every handle is satisfied by its target (reference §4.8). */
  private proceedWithInvalidations(lock: ClientLock, out: ClientLockEffect[]): void {
    for (;;) {
      const record = lock.invalidations[0];
      if (record === undefined || record.invalidationId !== null) return; // none, or one in progress
      const target = record.invalidation.newMode;
      const users = lock.users;
      if ((users.read > 0 && !servesMode(target, "read")) || (users.write > 0 && !servesMode(target, "write"))) return;
      if (users.write_only > 0 && !servesMode(target, "write_only")) return;
      const from = lock.mode;
      const to = lowered(from, target);
      lock.invalidatingMode = from;
      lock.mode = to; // blocks new incompatible users at once; compatible ones continue
      if (this.stopCode !== null || from === to) {
        // Shut down (B13), or nothing above the target is held any more (a duplicate): no callback.
        this.answerHeadInvalidation(lock, out);
        continue;
      }
      record.invalidationId = this.nextInvalidationId++;
      this.inProgress.set(record.invalidationId, lock);
      out.push({ type: "invalidate", invalidationId: record.invalidationId, key: lock.key, from, to });
      return;
    }
  }

  /** Reply with the exact echo, drop the record; the caller's loop moves on to the next one (B9–B11). */
  private answerHeadInvalidation(lock: ClientLock, out: ClientLockEffect[]): void {
    const record = lock.invalidations.shift()!;
    this.queuedInvalidations--;
    lock.invalidatingMode = null;
    out.push({
      type: "send-invalidate-response",
      requestId: record.requestId,
      response: record.invalidation,
    });
  }

  /** A new handle in `mode`: counted, recorded, and its `granted` effect returned (for the caller to emit). */
  private serve(lock: ClientLock, waiterId: WaiterId, mode: UserMode): ClientLockEffect {
    addUsers(lock.users, mode, 1);
    this.handles.set(waiterId, { key: lock.key, mode });
    // The fencing token belongs to write and write_only handles; a read handle carries 0n (DESIGN §6).
    const writeSeq = carriesWriteSeq(mode) ? lock.writeSeq : 0n;
    return { type: "granted", waiterId, key: lock.key, mode, writeSeq };
  }

  private fail(
    lock: ClientLock,
    waiterId: WaiterId,
    code: FailCode,
    reason: string,
    out: ClientLockEffect[],
  ): void {
    removeWaiter(lock, waiterId);
    this.waiting.delete(waiterId);
    // A no-queue request cannot be recalled; its answer is still applied, it just serves no one.
    if (lock.request?.waiterId === waiterId) lock.request.waiterId = null;
    out.push(failed(waiterId, lock.key, code, reason));
  }

  private sendRequest(
    lock: ClientLock,
    mode: LockMode,
    noQueueWaiter: WaiterId | null,
    out: ClientLockEffect[],
  ): void {
    if (lock.request !== null) throw new InvariantError(`second outstanding request on ${keyToText(lock.key)}`);
    const noQueue = noQueueWaiter !== null;
    lock.request = { mode, noQueue, waiterId: noQueueWaiter };
    out.push({
      type: "send-request",
      request: { key: lock.key, oldMode: lock.mode, newMode: mode, noQueue },
    });
  }

  /** Idle locks: null ones are freed, others move to the LRU tail (most recent); busy ones leave it. */
  private settle(lock: ClientLock): void {
    if (!isIdle(lock)) {
      this.lru.remove(lock);
    } else if (lock.mode === "null") {
      this.lru.remove(lock);
      this.locks.delete(lock.key);
      this.sortedKeys = null;
    } else if (!lock.inLru) {
      this.lru.append(lock);
    }
  }

  /** B19: at most one null request per acquire, for the oldest idle lock, while over the limit. */
  private shrinkOneIdleLock(out: ClientLockEffect[]): void {
    if (this.locks.size <= this.idleLockLimit) return;
    const lock = this.lru.oldest();
    if (lock === null) return;
    this.sendRequest(lock, "null", null, out);
    this.settle(lock);
  }
}

// ---- helpers (pure functions of one lock) ----

function newLock(key: Key): ClientLock {
  return {
    key,
    mode: "null",
    invalidatingMode: null,
    writeSeq: 0n,
    grantTerm: 0n,
    grantNo: 0,
    grantTag: 0,
    users: { read: 0, write: 0, write_only: 0 },
    headWaiter: null,
    laterWaiters: NO_WAITERS,
    request: null,
    invalidations: [],
    lruPrev: null,
    lruNext: null,
    inLru: false,
  };
}

/**
 * The later waiters of every lock that has at most one: shared and never written (addWaiter gives a lock
 * its own Map first). A cold acquire or a hand-off queues one waiter and takes it off at the grant: it sits
 * in `headWaiter`, with no Map allocated per key and none emptied (V8 answers a delete that empties a Map by
 * shrinking it: a runtime call that allocates a new table). removeLaterWaiter drops the last one with its Map.
 */
const NO_WAITERS: Map<WaiterId, Waiter> = new Map();

function addWaiter(lock: ClientLock, waiter: Waiter): void {
  if (lock.headWaiter === null) {
    lock.headWaiter = waiter; // no waiters (headWaiter is null only then): it is the oldest
    return;
  }
  if (lock.laterWaiters === NO_WAITERS) lock.laterWaiters = new Map();
  lock.laterWaiters.set(waiter.id, waiter);
}

function removeWaiter(lock: ClientLock, waiterId: WaiterId): void {
  if (lock.headWaiter?.id !== waiterId) {
    removeLaterWaiter(lock, waiterId);
    return;
  }
  // The next oldest becomes the head.
  const next: Waiter | undefined = lock.laterWaiters.size === 0 ? undefined : lock.laterWaiters.values().next().value;
  lock.headWaiter = next ?? null;
  if (next !== undefined) removeLaterWaiter(lock, next.id);
}

function removeLaterWaiter(lock: ClientLock, waiterId: WaiterId): void {
  const waiters = lock.laterWaiters;
  if (waiters.size === 1 && waiters.has(waiterId)) lock.laterWaiters = NO_WAITERS;
  else waiters.delete(waiterId);
}

function waiterCount(lock: ClientLock): number {
  return lock.headWaiter === null ? 0 : 1 + lock.laterWaiters.size;
}

/** The waiters' ids, oldest first (a copy: safe to fail them while walking it). */
function waiterIds(lock: ClientLock): WaiterId[] {
  return lock.headWaiter === null ? [] : [lock.headWaiter.id, ...lock.laterWaiters.keys()];
}

function failed(waiterId: WaiterId, key: Key, code: FailCode, reason: string): ClientLockEffect {
  return { type: "failed", waiterId, key, code, reason };
}

function firstWaiter(lock: ClientLock): Waiter | undefined {
  return lock.headWaiter ?? undefined;
}

function isIdle(lock: ClientLock): boolean {
  return (
    lock.headWaiter === null &&
    lock.request === null &&
    lock.invalidations.length === 0 &&
    lock.users.read === 0 &&
    lock.users.write === 0 &&
    lock.users.write_only === 0
  );
}

/** users[mode] += delta, by name (a keyed access by a varying mode name is megamorphic); the new count. */
function addUsers(users: Record<UserMode, number>, mode: UserMode, delta: number): number {
  switch (mode) {
    case "read":
      return (users.read += delta);
    case "write":
      return (users.write += delta);
    case "write_only":
      return (users.write_only += delta);
  }
}

/** Every handle held on the lock shares with a new one in `mode` (each mode by name: on the cached path). */
function usersShareWith(lock: ClientLock, mode: UserMode): boolean {
  const users = lock.users;
  return (
    (users.read === 0 || sharesMode("read", mode)) &&
    (users.write === 0 || sharesMode("write", mode)) &&
    (users.write_only === 0 || sharesMode("write_only", mode))
  );
}

/** Every queued invalidation, the one in progress included, leaves a mode that serves `mode`. */
function invalidationsServe(lock: ClientLock, mode: UserMode): boolean {
  for (const record of lock.invalidations) if (!servesMode(record.invalidation.newMode, mode)) return false;
  return true;
}

/** Cached mode satisfies it, every handle shares with it, every queued invalidation's target serves it. */
function servable(lock: ClientLock, mode: UserMode): boolean {
  return servesMode(lock.mode, mode) && usersShareWith(lock, mode) && invalidationsServe(lock, mode);
}

/** HEAD_RULES' answer for the head waiter: its facts as bits (HEAD_FACT_BITS), looked up in HEAD_ACTIONS. */
function decideForHead(lock: ClientLock, head: Waiter): HeadAction {
  const request = lock.request;
  const satisfied = servesMode(lock.mode, head.mode);
  const shares = usersShareWith(lock, head.mode);
  let facts = 0;
  if (satisfied && shares && invalidationsServe(lock, head.mode)) facts |= HEAD_FACT_BITS.servable;
  if (satisfied) facts |= HEAD_FACT_BITS.satisfied;
  if (head.nonblock) facts |= HEAD_FACT_BITS.nonblock;
  if (request !== null) facts |= HEAD_FACT_BITS.requestOutstanding;
  if (request !== null && request.waiterId === head.id) facts |= HEAD_FACT_BITS.ownRequestOutstanding;
  if (head.askedServer) facts |= HEAD_FACT_BITS.askedServer;
  if (!shares || lock.invalidations.length > 0) facts |= HEAD_FACT_BITS.localObstacle;
  return HEAD_ACTIONS[facts]!;
}

function eagainReason(lock: ClientLock, head: Waiter): string {
  if (head.askedServer) return "nonblock: the grant could not serve it at once";
  if (lock.request !== null) return "nonblock: another request for this key is outstanding";
  if (lock.invalidations.length > 0) return "nonblock: the server is taking this lock back";
  return "nonblock: a local handle conflicts with it";
}

/** The index of the first of the sorted `keys` strictly after `after` (binary search). */
function firstKeyAfter(keys: readonly Key[], after: Key): number {
  let index = 0;
  let high = keys.length;
  while (index < high) {
    const middle = (index + high) >>> 1;
    if (compareKeys(keys[middle]!, after) <= 0) index = middle + 1;
    else high = middle;
  }
  return index;
}

/**
 * The recovery report of the locks of `keys[start..end)`. A loop of its own, apart from the sort and the
 * search, with each lock's record built by a function of its own: a report runs once per server restart,
 * from code that never ran before, and the optimizing compiler then compiles only this small loop, once
 * (with the record built inline, V8 replaced the running loop on stack and compiled it a second time for
 * the next batch; bench/recover-cold-cost.ts).
 */
function reportLocks(locks: Map<Key, ClientLock>, keys: readonly Key[], start: number, end: number): RecoveredLock[] {
  const batch = new Array<RecoveredLock>(end - start);
  for (let i = 0, index = start; index < end; index++, i++) batch[i] = reported(locks.get(keys[index]!)!);
  return batch;
}

/**
 * What recovery reports of `lock`: its key, the mode of reportedMode (B7), its writeSeq and its latest
 * grant's proof (zeros with a null mode). reportedMode is
 * called only while an invalidation is in progress (it answers lock.mode otherwise): a call per lock from
 * cold code cost ~2 % of a report (bench/recover-cold-cost.ts).
 */
function reported(lock: ClientLock): RecoveredLock {
  const mode = lock.invalidatingMode === null ? lock.mode : reportedMode(lock);
  if (mode === "null") return { key: lock.key, mode, writeSeq: lock.writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 };
  return { key: lock.key, mode, writeSeq: lock.writeSeq, grantTerm: lock.grantTerm, grantNo: lock.grantNo, grantTag: lock.grantTag };
}

/**
 * The mode recovery reports (B7): the pre-invalidation mode while an invalidation is in progress. If a
 * grant arrived meanwhile (the server granted from that reported mode; it always satisfies it), the grant.
 */
function reportedMode(lock: ClientLock): LockMode {
  const before = lock.invalidatingMode;
  if (before === null || satisfies(lock.mode, before)) return lock.mode;
  return before;
}

/**
 * Asserted after every event: users[m] > 0 ⇒ mode satisfies m, and the handles share pairwise.
 * On the cached re-acquire path, so no closures and no loops over modes: each mode is checked with its
 * name as a constant, and a lock with no handles (every release of the loop) costs three reads.
 */
function checkLock(lock: ClientLock): void {
  const users = lock.users;
  if (users.read > 0) checkUsers(lock, "read", users.read);
  if (users.write > 0) checkUsers(lock, "write", users.write);
  if (users.write_only > 0) checkUsers(lock, "write_only", users.write_only);
}

/** `count` > 0 handles in mode `m`: the mode serves them, and they share with each other and every other handle. */
function checkUsers(lock: ClientLock, m: UserMode, count: number): void {
  if (!servesMode(lock.mode, m)) {
    throw new InvariantError(`${keyToText(lock.key)}: ${count} ${m} handle(s) under mode ${lock.mode}`);
  }
  const users = lock.users;
  if ((m === "read" ? count - 1 : users.read) > 0 && !sharesMode(m, "read")) coexist(lock, m, "read");
  if ((m === "write" ? count - 1 : users.write) > 0 && !sharesMode(m, "write")) coexist(lock, m, "write");
  if ((m === "write_only" ? count - 1 : users.write_only) > 0 && !sharesMode(m, "write_only")) coexist(lock, m, "write_only");
}

function coexist(lock: ClientLock, m: UserMode, other: UserMode): never {
  throw new InvariantError(`${keyToText(lock.key)}: ${m} and ${other} handles coexist`);
}

function describe(message: { key: Key; oldMode: LockMode; newMode: LockMode }): string {
  return `${keyToText(message.key)} ${message.oldMode}->${message.newMode}`;
}

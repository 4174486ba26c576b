/**
 * The public client (DESIGN §6): `connect()` → `LockClient` with `acquire()` → `LockHandle`.
 *
 * Guarantees:
 * - Lock state lives in the pure ClientLocks machine (src/core/client-locks.ts); this driver only turns its
 *   effects into messages, promise settlements and callback calls, in the order the machine produced them.
 * - A cached lock is re-acquired with no network round trip (the machine answers `granted` synchronously).
 * - An invalidation is acknowledged to the server only after the application's `onInvalidate` callback
 *   (and every "invalidate" listener's returned promise) settled: the caller flushes dirty state and drops
 *   its cache before another client is granted a conflicting mode. A callback that throws is reported as
 *   an "error" event and the downgrade still completes (the server must not wait forever on a bug).
 * - An idle lock released to stay within `idleLockLimit` goes through the same callbacks (`from` its mode, `to`
 *   "null") before its null request is sent, so nothing cached under a lock outlives it (the coherent cache,
 *   ./cache.ts, relies on this); an invalidation response for that key is never sent ahead of it.
 * - `close()` sends a farewell and resolves once the server reclaimed this client's state.
 * - Every failure a caller sees is a KeylockError with a code (EAGAIN, EABORTED, ESHUTDOWN, EFENCED, EINVAL…).
 * - Nothing a server sends throws in the client's process: an answer to a lock request that does not fit
 *   what is outstanding (another key, another mode, EAGAIN for a queued request, an error) is a protocol
 *   error — an "error" event (EPROTO) when someone listens, the socket closed and re-established as after
 *   a reset; answers to requests never made or already answered are dropped by the session.
 * - Options are checked at once: a `name` over CLIENT_NAME_BYTES_MAX bytes rejects `connect()` with EINVAL.
 * Relies on: the connection layer (./connection.ts) to deliver messages of one connection in order and to
 * re-greet after a socket failure.
 */
import { EventEmitter } from "node:events";
import { randomBytes } from "node:crypto";
// The module's `performance`, not the global one: Node defines that as a getter, called on every read.
import { performance } from "node:perf_hooks";
import { SlotMap } from "../core/slot-map.js";
import { ClientLocks, type ClientLockEffect } from "../core/client-locks.js";
import { KeylockError } from "../core/errors.js";
import { KEY_BYTES_MAX, drawRid, keyFromBytes, keyToBytes, keyToText, ridToHex, type Key } from "../core/keys.js";
import { RECOVER_BATCH_LOCKS_MAX, type LockRequest } from "../core/lock-messages.js";
import { type LockMode } from "../core/modes.js";
import { CLIENT_NAME_BYTES_MAX, Command, WireError, type Message } from "../protocol/messages.js";
import { ClientConnection } from "./connection.js";
import type { WireSession } from "../protocol/session.js";
import type { ClientTlsOptions } from "../io/tcp.js";
import { realWorld, type Timer, type World } from "../io/world.js";

export const IDLE_LOCK_LIMIT_DEFAULT = 10_000;
/**
 * Acquires that settle synchronously (cached grant, EAGAIN at once) in one event-loop turn before the next
 * one settles through the event loop (setImmediate). Without it `for (;;) (await c.acquire(k, "write")).release()`
 * runs on microtasks only: it never reads its socket, so an invalidation another client waits for (and every
 * timer and socket of the process) starves (DESIGN §7). Every 1024th cached acquire of one turn (about every
 * 0.5 ms) pays one event-loop turn.
 */
export const SYNC_SETTLES_PER_TURN_MAX = 1024;
export const CONNECT_TIMEOUT_MS_DEFAULT = 30_000;
/** `stats().grantLatencyMs` summarises the most recent this-many grants from the server. */
export const GRANT_LATENCY_SAMPLES = 1024;

/** A snapshot of one client's counters (`client.stats()`), for applications that export their own metrics. */
export interface ClientStats {
  /** Locks this client caches: held, idle or being requested. */
  cachedLocks: number;
  /** Acquires waiting for the server (or for a conflicting local handle). */
  waiters: number;
  /** Greetings after the first: to the same server after a lost connection, or to a new leader. */
  reconnects: number;
  /** Acquires answered from the cache, with no round trip. */
  cachedGrants: number;
  /** Lock requests the server granted. */
  serverGrants: number;
  /** Downgrades the server asked for (invalidations). */
  invalidations: number;
  /** Request sent → grant received, over the last GRANT_LATENCY_SAMPLES server grants (0 when none yet). */
  grantLatencyMs: { count: number; mean: number; p50: number; p99: number; max: number };
}

export interface InvalidateEvent {
  key: Uint8Array;
  from: LockMode;
  to: LockMode;
}

export interface ConnectOptions {
  /** Any members of the cluster, in any order: "HOST:PORT" or "[V6]:PORT". */
  servers: string[];
  /** The cluster secret, when the cluster was formatted with one. */
  secret?: string;
  /**
   * TLS to the members (members run with --tls-cert): `true` trusts the system CAs; an object takes
   * node:tls options (`ca`, `cert` + `key` for members run with --tls-client-auth, `servername`,
   * `rejectUnauthorized`). `servername` defaults to the host of each address when it is a name.
   */
  tls?: true | ClientTlsOptions;
  /** Shown in status output. */
  name?: string;
  /** Least recently used idle locks beyond this many are released (default 10000). */
  idleLockLimit?: number;
  /** How long connect() keeps trying to find a leader (default 30000). */
  connectTimeoutMs?: number;
  /** Called before a downgrade is acknowledged: flush dirty state, drop cached data. */
  onInvalidate?: (event: InvalidateEvent) => void | Promise<void>;
  /**
   * A pino-compatible logger (pino, or anything with debug/info/warn/error taking `(fields, message)`).
   * The client logs reconnects, lost connections, refused greetings (EAUTH), protocol errors and being
   * fenced; with `child`, it logs through `logger.child({ rid, name })`. Default: no logging.
   */
  logger?: ClientLogger;
}

/** What `connect({ logger })` needs of a logger: pino's method shape, `(fields, message)`. */
export interface ClientLogger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
  child?(bindings: Record<string, unknown>): ClientLogger;
}

export interface AcquireOptions {
  signal?: AbortSignal;
  /** Answer EAGAIN at once instead of waiting when the lock cannot be granted right now. */
  nonblock?: boolean;
}

export type AcquireMode = Exclude<LockMode, "null">;

/**
 * A granted lock. Release it exactly once (or let `using` do it). Its state is in #private fields: assigning
 * properties on a handle cannot change which lock it releases or what its client believes.
 */
export class LockHandle implements Disposable {
  readonly #client: LockClient;
  readonly #waiterId: number;
  readonly #key: string | Uint8Array;
  readonly #mode: AcquireMode;
  readonly #writeSeq: bigint;
  readonly #generation: number;
  #released = false;

  /** @internal made by LockClient only. */
  constructor(client: LockClient, waiterId: number, key: string | Uint8Array, mode: AcquireMode, writeSeq: bigint, generation: number) {
    this.#client = client;
    this.#waiterId = waiterId;
    this.#key = key;
    this.#mode = mode;
    this.#writeSeq = writeSeq;
    this.#generation = generation;
  }

  /** The key as the caller passed it to `acquire()`. */
  get key(): string | Uint8Array {
    return this.#key;
  }

  get mode(): AcquireMode {
    return this.#mode;
  }

  /** Fencing token: strictly increasing across write grants; 0n for read. */
  get writeSeq(): bigint {
    return this.#writeSeq;
  }

  /** False once the server forgot this client (it was fenced): the lock may be held by someone else. */
  get isValid(): boolean {
    return !this.#released && handleValid(this.#client, this.#generation);
  }

  get isReleased(): boolean {
    return this.#released;
  }

  release(): void {
    if (this.#released) throw new KeylockError("EINVAL", "this lock handle was already released");
    this.#released = true;
    releaseHandle(this.#client, this.#waiterId);
  }

  [Symbol.dispose](): void {
    if (!this.#released) this.release();
  }
}

/** The machine's options for an acquire, shared (no allocation per acquire; the machine only reads them). */
const BLOCKING = Object.freeze({ nonblock: false });
const NONBLOCK = Object.freeze({ nonblock: true });

/** A lock request on the wire: its key, and when it was sent (performance.now(), for grant latency). */
interface SentRequest {
  readonly key: Key;
  readonly sentAt: number;
}

interface Waiter {
  resolve: (handle: LockHandle) => void;
  reject: (error: KeylockError) => void;
  key: string | Uint8Array;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export interface LockClientEvents {
  invalidate: [InvalidateEvent];
  reconnect: [{ serverTerm: bigint; address: string; newServer: boolean }];
  recovered: [{ serverTerm: bigint }];
  fenced: [KeylockError];
  error: [Error];
}

/**
 * The internals LockHandle and connectInWorld() reach, set by LockClient's static block: module-private
 * functions instead of public `_methods`, so nothing outside this module can call (or replace) them.
 */
let releaseHandle: (client: LockClient, waiterId: number) => void;
let handleValid: (client: LockClient, generation: number) => boolean;
let newClient: (options: ConnectOptions, rid: bigint, world: World, parts: ClientParts | undefined) => LockClient;
let openClient: (client: LockClient, timeoutMs: number) => Promise<void>;

/**
 * A connected client. All of its state is in #private fields (issue 10): assigning a property on a
 * LockClient (`client.invalidations = []`) adds an unrelated property and cannot break it.
 */
export class LockClient extends EventEmitter<LockClientEvents> {
  /** Drawn again (before the first greeting completes) when a server says another client holds it (ERIDTAKEN). */
  #rid: bigint;
  readonly #name: string;
  readonly #options: ConnectOptions;
  readonly #world: World;
  readonly #machine: ClientLocks;
  readonly #waiters = new SlotMap<number, Waiter>();
  /** Our outstanding lock requests by request id → key (one per key, by the machine's promise). */
  readonly #lockRequests = new SlotMap<number, SentRequest>();
  /** Invalidations being processed: our id → the server's request id and which server sent it. */
  readonly #invalidations = new SlotMap<number, { wireId: number; epoch: number }>();
  #nextInvalidationId = 1;
  /** Bumped when the server forgets us (fenced): handles from before are no longer valid. */
  #generation = 0;
  #nextWaiterId = 1;
  #closed: Promise<void> | null = null;
  #fencedError: KeylockError | null = null;
  /**
   * The acquire being decided inside machine.acquire (its waiter id, 0 when none, and its key) and what it
   * got, when the machine settled it synchronously (cached grant, EAGAIN at once): fields rather than a
   * record or a waiter so that the cached path allocates nothing but the handle and its promise.
   */
  #nowWaiterId = 0;
  #nowKey: string | Uint8Array = "";
  #nowHandle: LockHandle | null = null;
  #nowError: KeylockError | null = null;
  /** The last string key acquire() checked, and its core key (skips the key check on a re-acquire). */
  #lastKeyText = "";
  #lastKey = "" as Key;
  /** Acquires settled synchronously since the event loop last turned (SYNC_SETTLES_PER_TURN_MAX). */
  #syncSettles = 0;
  #turnWatched = false;
  #shutDown = false;
  readonly #connection: ClientConnection;
  #logger: ClientLogger | null;
  #reconnects = 0;
  #cachedGrants = 0;
  #serverGrants = 0;
  #invalidationCount = 0;
  /** Idle locks going to null whose request waits for the invalidation callbacks (`runIdleRelease`). */
  readonly #idleReleases = new Map<Key, LockRequest>();
  /** Invalidations whose callbacks finished synchronously, told to the machine in one microtask (`#runInvalidation`). */
  #invalidationsDone: number[] = [];
  /** The latest grant latencies (ms), a ring of GRANT_LATENCY_SAMPLES. */
  readonly #grantLatencies = new Float64Array(GRANT_LATENCY_SAMPLES);

  static {
    releaseHandle = (client, waiterId) => client.#apply(client.#machine.release(waiterId));
    handleValid = (client, generation) => generation === client.#generation;
    newClient = (options, rid, world, parts) => new LockClient(options, rid, world, parts);
    openClient = async (client, timeoutMs) => {
      try {
        await client.#connection.open(timeoutMs);
      } catch (error) {
        client.#logger?.error({ code: (error as KeylockError).code }, `connect failed: ${(error as Error).message}`);
        throw error;
      }
    };
  }

  private constructor(options: ConnectOptions, rid: bigint, world: World, parts: ClientParts | undefined) {
    super();
    this.#options = options;
    this.#world = world;
    this.#rid = rid;
    this.#name = options.name ?? `pid-${process.pid}`;
    this.#logger = boundLogger(options.logger, rid, this.#name);
    this.#machine = new ClientLocks({ idleLockLimit: options.idleLockLimit ?? IDLE_LOCK_LIMIT_DEFAULT });
    parts?.wrapLocks?.(this.#machine);
    this.#connection = new ClientConnection({
      servers: options.servers,
      rid,
      name: this.#name,
      secret: options.secret,
      tls: options.tls === undefined ? undefined : options.tls === true ? {} : options.tls,
      onMessage: (message) => this.#onMessage(message),
      onReconnect: (info) => {
        this.#logger?.info(
          { server: info.address, serverTerm: info.serverTerm, newServer: info.newServer },
          `reconnected to ${info.address}${info.newServer ? ` (a new server, term ${info.serverTerm}: recovering locks)` : ""}`,
        );
        this.#reconnects++;
        if (info.newServer) this.#apply(this.#machine.onNewServer());
        this.emit("reconnect", info);
      },
      onFenced: (error) => this.#onFenced(error),
      onError: (error) => this.#emitError(error),
      onRetry: (error, attempt) => {
        const auth = error instanceof KeylockError && error.code === "EAUTH";
        this.#logger?.[auth ? "error" : "debug"]({ attempt, code: (error as KeylockError).code }, `reconnect attempt ${attempt + 1} failed: ${error.message}`);
      },
      onRidChanged: (newRid) => {
        this.#logger?.warn({ newRid: ridToHex(newRid) }, `the server holds this rid for another client; greeting again as ${ridToHex(newRid)}`);
        this.#rid = newRid;
        this.#logger = boundLogger(options.logger, newRid, this.#name);
        parts?.ridChanged?.(newRid);
      },
      world,
      ...(parts?.wrapConnection === undefined ? {} : { wrapParts: (session, connection) => parts.wrapConnection!({ session, options: connection }) }),
    });
  }

  /** Connects to the cluster and greets its leader. Rejects with ETIMEDOUT/EAUTH/ECONNECT when it cannot. */
  static connect(options: ConnectOptions): Promise<LockClient> {
    return connectInWorld(options, realWorld);
  }

  /** The client's id (random unless simulated), as the server and `keylock status` show it. */
  get rid(): bigint {
    return this.#rid;
  }

  /** The name given to connect() (default `pid-<pid>`), shown in status output. */
  get name(): string {
    return this.#name;
  }

  /** Number of locks this client caches (held, idle or being requested). */
  get cachedLocks(): number {
    return this.#machine.lockCount;
  }

  /** A snapshot of this client's counters (DESIGN §6); costs O(GRANT_LATENCY_SAMPLES) for the latency summary. */
  stats(): ClientStats {
    const count = Math.min(this.#serverGrants, GRANT_LATENCY_SAMPLES);
    const samples = this.#grantLatencies.slice(0, count).sort();
    const at = (q: number): number => (count === 0 ? 0 : samples[Math.min(count - 1, Math.floor(q * count))]!);
    let sum = 0;
    for (const sample of samples) sum += sample;
    return {
      cachedLocks: this.#machine.lockCount,
      waiters: this.#waiters.size,
      reconnects: this.#reconnects,
      cachedGrants: this.#cachedGrants,
      serverGrants: this.#serverGrants,
      invalidations: this.#invalidationCount,
      grantLatencyMs: { count, mean: count === 0 ? 0 : sum / count, p50: at(0.5), p99: at(0.99), max: count === 0 ? 0 : samples[count - 1]! },
    };
  }

  acquire(key: string | Uint8Array, mode: AcquireMode, options?: AcquireOptions): Promise<LockHandle> {
    if (this.#shutDown) {
      return Promise.reject(this.#fencedError ?? new KeylockError("ESHUTDOWN", "the client is closed"));
    }
    if (mode !== "write" && mode !== "read" && mode !== "write_only") {
      return Promise.reject(new KeylockError("EINVAL", `mode must be "read", "write" or "write_only", not ${String(mode as unknown)}`));
    }
    let coreKey: Key;
    if (key === this.#lastKeyText) coreKey = this.#lastKey;
    else {
      const checked = toKey(key);
      if (checked.startsWith("EINVAL:")) return Promise.reject(new KeylockError("EINVAL", checked.slice(7)));
      coreKey = checked as Key;
      if (typeof key === "string") {
        this.#lastKeyText = key;
        this.#lastKey = coreKey;
      }
    }
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(new KeylockError("EABORTED", "the signal was already aborted"));
    const waiterId = this.#nextWaiterId++;
    // The cached fast path settles inside machine.acquire: catch that outcome in the #now fields instead of
    // registering a waiter (no closure, no map entry). Saved and restored: an onInvalidate callback run by
    // #apply() may itself call acquire().
    const outerId = this.#nowWaiterId;
    const outerKey = this.#nowKey;
    const outerHandle = this.#nowHandle;
    const outerError = this.#nowError;
    this.#nowWaiterId = waiterId;
    this.#nowKey = key;
    this.#nowHandle = null;
    this.#nowError = null;
    let handle: LockHandle | null;
    let error: KeylockError | null;
    try {
      this.#apply(this.#machine.acquire(waiterId, coreKey, mode, options?.nonblock === true ? NONBLOCK : BLOCKING));
    } finally {
      handle = this.#nowHandle;
      error = this.#nowError;
      this.#nowWaiterId = outerId;
      this.#nowKey = outerKey;
      this.#nowHandle = outerHandle;
      this.#nowError = outerError;
    }
    if (handle !== null) {
      this.#cachedGrants++;
      return this.#settleSoon(handle, null);
    }
    if (error !== null) return this.#settleSoon(null, error);
    return new Promise<LockHandle>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, key, signal, onAbort: undefined };
      this.#waiters.set(waiterId, waiter);
      if (signal) {
        waiter.onAbort = () => this.#apply(this.#machine.abort(waiterId));
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
    });
  }

  /**
   * Settles an acquire the machine answered synchronously: at once, unless SYNC_SETTLES_PER_TURN_MAX of them
   * settled since the event loop last turned; then through setImmediate, so sockets and timers get their turn
   * (the handle is held meanwhile: an invalidation that arrives waits for its release, and new local users
   * queue behind it).
   */
  #settleSoon(handle: LockHandle | null, error: KeylockError | null): Promise<LockHandle> {
    if (!this.#turnWatched) {
      this.#turnWatched = true;
      setImmediate(() => {
        this.#turnWatched = false;
        this.#syncSettles = 0;
      });
    }
    if (++this.#syncSettles <= SYNC_SETTLES_PER_TURN_MAX) return handle ? Promise.resolve(handle) : Promise.reject(error!);
    return new Promise<LockHandle>((resolve, reject) =>
      setImmediate(() => (handle ? resolve(handle) : reject(error!))),
    );
  }

  /**
   * Acquires `key` in `mode`, runs `fn` with the handle, and releases it when `fn` settles, also when it
   * throws or rejects (DESIGN §6). Resolves with what `fn` returns; acquire errors (EAGAIN, EABORTED, ...)
   * reject before `fn` runs.
   */
  async withLock<T>(
    key: string | Uint8Array,
    mode: AcquireMode,
    fn: (handle: LockHandle) => T | Promise<T>,
    options: AcquireOptions = {},
  ): Promise<T> {
    const handle = await this.acquire(key, mode, options);
    try {
      return await fn(handle);
    } finally {
      handle[Symbol.dispose]();
    }
  }

  /** Sends a farewell and resolves once the server reclaimed this client's state. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.#doClose();
    return this.#closed;
  }

  async #doClose(): Promise<void> {
    const fenced = this.#fencedError !== null;
    this.#shutDown = true;
    this.#apply(this.#machine.shutdown("ESHUTDOWN"));
    const timeoutMs = this.#options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS_DEFAULT;
    const clock = this.#world.clock;
    let timer: Timer | undefined;
    try {
      if (!fenced) {
        // Bounded (B29): with no server to answer, close() gives up rather than hanging; the server will
        // see a connection timeout, fence this client and reclaim its locks.
        await Promise.race([
          this.#connection.farewell(),
          new Promise<never>((_, reject) => {
            timer = clock.setTimeout(
              () => reject(new KeylockError("ETIMEDOUT", `no server answered the farewell within ${timeoutMs} ms`)),
              timeoutMs,
            );
          }),
        ]);
      }
    } finally {
      clock.clearTimeout(timer);
      this.#apply(this.#machine.reset("ESHUTDOWN"));
      this.#connection.destroy();
    }
  }

  #onMessage(message: Message): void {
    const { header, payload } = message;
    if (header.cmd === Command.LOCK) {
      if (header.response) {
        const sent = this.#lockRequests.get(header.id);
        if (sent === undefined) return; // not ours any more (answered before a reconnect)
        const key = sent.key;
        const problem = this.#lockAnswerProblem(key, message);
        if (problem !== undefined) {
          this.#connection.protocolError(`answer to lock request ${header.id} on ${keyToText(key)}: ${problem}`);
          return;
        }
        this.#lockRequests.delete(header.id);
        if (header.error === WireError.EAGAIN) this.#apply(this.#machine.onRefuse(key, "EAGAIN"));
        else if (payload.kind === "lock") {
          this.#grantLatencies[this.#serverGrants % GRANT_LATENCY_SAMPLES] = performance.now() - sent.sentAt;
          this.#serverGrants++;
          // With the key of our own request, checked equal to the grant's above: the same string as the lock
          // table's key, whose hash is computed already, where the decoded key is a new string to hash and
          // compare character by character in the machine's lookup.
          const { oldMode, newMode, writeSeq, grantTerm, grantNo, grantTag } = payload.body;
          this.#apply(this.#machine.onGrant({ key, oldMode, newMode, writeSeq, grantTerm, grantNo, grantTag }));
        }
      } else if (payload.kind === "lock") {
        const localId = this.#nextInvalidationId++;
        this.#invalidations.set(localId, { wireId: header.id, epoch: this.#connection.epoch });
        this.#invalidationCount++;
        this.#apply(this.#machine.onInvalidate(localId, payload.body));
      }
      return;
    }
    if (header.cmd === Command.LOCK_RECOVER && !header.response && payload.kind === "recover-request") {
      const locks = this.#machine.recoverBatch(payload.body.after, RECOVER_BATCH_LOCKS_MAX);
      this.#connection.respond(Command.LOCK_RECOVER, header.id, { kind: "recover-response", body: { locks } });
      if (locks.length === 0) this.emit("recovered", { serverTerm: this.#connection.serverTerm });
    }
  }

  /** Why a server's answer to our lock request on `key` cannot be applied (a hostile or broken server), or undefined. */
  #lockAnswerProblem(key: Key, message: Message): string | undefined {
    const { header, payload } = message;
    const outstanding = this.#machine.outstandingRequest(key);
    if (outstanding === null) return "no request is outstanding on that key";
    if (header.error === WireError.EAGAIN) {
      return outstanding.noQueue ? undefined : "EAGAIN for a request that may queue";
    }
    if (header.error !== WireError.NONE || payload.kind !== "lock") return `the request failed: ${describeError(message)}`;
    const grant = payload.body;
    if (grant.key !== key) return `a grant for another key (${keyToText(grant.key)})`;
    if (grant.newMode !== outstanding.mode) return `a grant of ${grant.newMode} for a request for ${outstanding.mode}`;
    // The proof this client will report in recovery (core/grant-tags.ts): from the server that granted.
    if (grant.newMode !== "null" && grant.grantTerm !== this.#connection.serverTerm) {
      return `a grant of ${grant.newMode} whose proof names term ${grant.grantTerm}, not the server's term ${this.#connection.serverTerm}`;
    }
    return undefined;
  }

  #apply(effects: ClientLockEffect[]): void {
    for (const effect of effects) {
      switch (effect.type) {
        case "send-request": {
          const { request } = effect;
          // The only null request is an idle lock released to stay within idleLockLimit: like a downgrade the
          // server asks for, the application writes back and drops what it cached under it first.
          // Callbacks that return nothing to await have finished: the request goes now, in the machine's order.
          if (request.newMode === "null") {
            const pending = this.#runCallbacks(request.key, request.oldMode, "null");
            if (pending !== null) {
              this.#idleReleases.set(request.key, request);
              void this.#finishIdleRelease(request, pending);
              break;
            }
          }
          this.#sendLockRequest(request);
          break;
        }
        case "send-invalidate-response": {
          // Keep the wire order the machine decided: a held-back idle release of this key goes first.
          // (Checked for size first: a lookup hashes the decoded key, a string of its own, even in an empty Map.)
          const heldBack = this.#idleReleases.size === 0 ? undefined : this.#idleReleases.get(effect.response.key);
          if (heldBack !== undefined) {
            this.#idleReleases.delete(effect.response.key);
            this.#sendLockRequest(heldBack);
          }
          const origin = this.#invalidations.get(effect.requestId);
          this.#invalidations.delete(effect.requestId);
          // An answer owed to a server that has since been replaced is dropped: the new server rebuilt its
          // table from our recovery report and re-sends whatever invalidation it still needs.
          if (origin && origin.epoch === this.#connection.epoch) {
            const { key, oldMode, newMode } = effect.response;
            // A literal of one shape, not a spread: `{ ...response, … }` copies through a generic clone.
            this.#connection.respond(Command.LOCK, origin.wireId, {
              kind: "lock",
              body: { key, oldMode, newMode, writeSeq: 0n, noQueue: false, grantTerm: 0n, grantNo: 0, grantTag: 0 },
            });
          }
          break;
        }
        case "invalidate":
          this.#runInvalidation(effect.invalidationId, effect.key, effect.from, effect.to);
          break;
        case "granted": {
          if (effect.waiterId === this.#nowWaiterId) {
            this.#nowHandle = new LockHandle(this, effect.waiterId, this.#nowKey, effect.mode as AcquireMode, effect.writeSeq, this.#generation);
            break;
          }
          const waiter = this.#takeWaiter(effect.waiterId);
          if (waiter) waiter.resolve(new LockHandle(this, effect.waiterId, waiter.key, effect.mode as AcquireMode, effect.writeSeq, this.#generation));
          break;
        }
        case "failed": {
          const error = new KeylockError(effect.code, effect.reason);
          if (effect.waiterId === this.#nowWaiterId) this.#nowError = error;
          else this.#takeWaiter(effect.waiterId)?.reject(error);
          break;
        }
      }
    }
  }

  #sendLockRequest(request: LockRequest): void {
    const { key, oldMode, newMode, noQueue } = request;
    const id = this.#connection.request(Command.LOCK, { kind: "lock", body: { key, oldMode, newMode, writeSeq: 0n, noQueue, grantTerm: 0n, grantNo: 0, grantTag: 0 } });
    this.#lockRequests.set(id, { key, sentAt: performance.now() });
  }

  /** Once the idle lock's callbacks settled, sends its null request (if still held back). */
  async #finishIdleRelease(request: LockRequest, callbacks: Promise<void>): Promise<void> {
    await callbacks;
    if (this.#idleReleases.get(request.key) !== request) return;
    this.#idleReleases.delete(request.key);
    if (!this.#shutDown) this.#sendLockRequest(request);
  }

  #takeWaiter(waiterId: number): Waiter | undefined {
    const waiter = this.#waiters.get(waiterId);
    if (!waiter) return undefined;
    this.#waiters.delete(waiterId);
    if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener("abort", waiter.onAbort);
    return waiter;
  }

  /**
   * Runs the callbacks of one invalidation; the machine hears `invalidationDone` once they settled. When none
   * returned a promise that is in a microtask (one per batch, for every invalidation whose callbacks finished
   * meanwhile): after the rest of the effects being applied, as when it was awaited, without an async chain.
   * The microtask is a reaction on a settled promise rather than queueMicrotask(), which Node wraps in an
   * AsyncResource (an object, an async id and the async-hook bookkeeping around every run); the order of
   * microtasks is the same.
   */
  #runInvalidation(invalidationId: number, key: Key, from: LockMode, to: LockMode): void {
    const pending = this.#runCallbacks(key, from, to);
    if (pending !== null) {
      void pending.then(() => this.#apply(this.#machine.invalidationDone(invalidationId)));
      return;
    }
    if (this.#invalidationsDone.push(invalidationId) === 1) void RESOLVED.then(this.#finishInvalidationsBound);
  }

  /** `#finishInvalidations` bound once: no closure per batch. */
  readonly #finishInvalidationsBound = (): void => this.#finishInvalidations();

  #finishInvalidations(): void {
    const done = this.#invalidationsDone;
    this.#invalidationsDone = [];
    for (const invalidationId of done) this.#apply(this.#machine.invalidationDone(invalidationId));
  }

  /**
   * `onInvalidate` and every "invalidate" listener, called now with the event for `key` going from `from` to
   * `to`; what they returned that can be awaited is awaited together, and the promise of that is returned
   * (null when there was nothing to await, or a callback threw). A failure is an "error" event, never a throw.
   * With no callback at all no event is built (its key is a fresh Uint8Array copy per event).
   */
  #runCallbacks(key: Key, from: LockMode, to: LockMode): Promise<void> | null {
    const onInvalidate = this.#options.onInvalidate;
    if (onInvalidate === undefined && this.listenerCount("invalidate") === 0) return null;
    const event: InvalidateEvent = { key: keyToBytes(key), from, to };
    // Only what a callback returned that can be awaited is awaited (Promise.all would wait for nothing
    // else either); a downgrade with synchronous callbacks allocates no array and no promise.
    let pending: PromiseLike<unknown>[] | null = null;
    try {
      if (onInvalidate !== undefined) {
        const result: unknown = onInvalidate(event);
        if (isThenable(result)) (pending ??= []).push(result);
      }
      // Without onInvalidate the count was just read: there are listeners (none can have come or gone since).
      if (onInvalidate === undefined || this.listenerCount("invalidate") > 0) {
        for (const listener of this.listeners("invalidate")) {
          const result: unknown = listener(event);
          if (isThenable(result)) (pending ??= []).push(result);
        }
      }
    } catch (error) {
      this.#callbackFailed(error);
      return null;
    }
    if (pending === null) return null;
    return Promise.all(pending).then(
      () => undefined,
      (error: unknown) => this.#callbackFailed(error),
    );
  }

  #callbackFailed(error: unknown): void {
    this.#emitError(new KeylockError("EINVAL", `onInvalidate callback failed: ${(error as Error).message}`, { cause: error }));
  }

  #onFenced(error: KeylockError): void {
    this.#shutDown = true;
    this.#fencedError = error;
    this.#generation++;
    this.#apply(this.#machine.reset("EFENCED"));
    this.#logger?.error({ code: error.code }, `fenced: the cluster forgot this client, its locks may be held by others: ${error.message}`);
    this.emit("fenced", error);
  }

  #emitError(error: Error): void {
    this.#logger?.warn({ code: (error as KeylockError).code }, error.message);
    if (this.listenerCount("error") > 0) this.emit("error", error);
  }

  override toString(): string {
    return `LockClient(${ridToHex(this.#rid)} ${this.#name})`;
  }
}

export function connect(options: ConnectOptions): Promise<LockClient> {
  return LockClient.connect(options);
}

/**
 * The simulator's one seam into a client's parts (sim/drivers.ts, sim/drivers-trace.ts), given to
 * connectInWorld() only: not part of the public API (src/index.ts exports neither), and nothing else in
 * the client reads it.
 */
export interface ClientParts {
  /**
   * Called once, with the client's ClientLocks machine, before the client makes its first call into it:
   * the simulator wraps its methods there to trace what the machine is fed and decides, or to inject a
   * client bug (a mutation). The client calls the machine only through its methods, so a wrapper sees
   * every call.
   */
  wrapLocks?(locks: ClientLocks): void;
  /**
   * Called once, when the client builds its connection (before it connects), with the connection's wire
   * session and the options whose `onMessage` the connection calls for every message it delivers: the
   * simulator wraps them to inject connection bugs (a session that does not resend, a dropped frame).
   */
  wrapConnection?(connection: ConnectionParts): void;
  /** Called when the client drew another rid before its first greeting completed (ERIDTAKEN): the simulator's rid maps follow. */
  ridChanged?(rid: bigint): void;
}

/** What ClientParts.wrapConnection is given: assignable members replace that connection's. */
export interface ConnectionParts {
  readonly session: WireSession;
  readonly options: { onMessage: (message: Message) => void };
}

/**
 * `connect()` in another world (io/world.ts): the deterministic simulator runs real clients over its
 * simulated clock and network this way, with a rid drawn from its seed, and reaches the client's parts
 * through `parts` (ClientParts). Not part of the public API (src/index.ts does not export it).
 */
export async function connectInWorld(options: ConnectOptions, world: World, rid: bigint = randomRid(), parts?: ClientParts): Promise<LockClient> {
  validateConnectOptions(options);
  const client = newClient(options, rid, world, parts);
  await openClient(client, options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS_DEFAULT);
  return client;
}

const textEncoder = new TextEncoder();
/** Settled once: `RESOLVED.then(fn)` runs fn in a microtask. */
const RESOLVED: Promise<void> = Promise.resolve();

// eslint-disable-next-line no-control-regex -- every byte below 0x80 is its own one-byte UTF-8 encoding
const ASCII = /^[\x00-\x7f]*$/;

/** The core key for a caller's key, or `EINVAL:<why>` (a string either way: callers test `startsWith`). */
function toKey(key: string | Uint8Array): Key | `EINVAL:${string}` {
  // Fast path: an ASCII string is already its own binary-string key (one byte per code unit).
  if (typeof key === "string" && key.length <= KEY_BYTES_MAX && ASCII.test(key)) return key as Key;
  const bytes = typeof key === "string" ? textEncoder.encode(key) : key;
  if (!(bytes instanceof Uint8Array)) return "EINVAL:a key is a string or a Uint8Array";
  if (bytes.length > KEY_BYTES_MAX) return `EINVAL:key is ${bytes.length} bytes; at most ${KEY_BYTES_MAX} allowed`;
  return keyFromBytes(bytes);
}

function validateConnectOptions(options: ConnectOptions): void {
  if (!Array.isArray(options.servers) || options.servers.length === 0) {
    throw new KeylockError("EINVAL", "servers must list at least one HOST:PORT");
  }
  const name = options.name;
  if (name !== undefined && (typeof name !== "string" || textEncoder.encode(name).length > CLIENT_NAME_BYTES_MAX)) {
    // Checked here: the greeting could never be encoded, and the client would reconnect forever.
    throw new KeylockError("EINVAL", `name must be a string of at most CLIENT_NAME_BYTES_MAX (${CLIENT_NAME_BYTES_MAX}) UTF-8 bytes`);
  }
  const limit = options.idleLockLimit;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) {
    throw new KeylockError("EINVAL", `idleLockLimit must be a non-negative integer, not ${limit}`);
  }
  const timeout = options.connectTimeoutMs;
  if (timeout !== undefined && (!Number.isFinite(timeout) || timeout <= 0)) {
    throw new KeylockError("EINVAL", `connectTimeoutMs must be a positive number, not ${timeout}`);
  }
  const tls: unknown = options.tls;
  if (tls !== undefined && tls !== true && (typeof tls !== "object" || tls === null || Array.isArray(tls))) {
    throw new KeylockError("EINVAL", "tls must be true or an object of node:tls options ({ ca, cert, key, servername, rejectUnauthorized })");
  }
  if (typeof tls === "object" && tls !== null) {
    const t = tls as ClientTlsOptions;
    if ((t.cert === undefined) !== (t.key === undefined)) {
      throw new KeylockError("EINVAL", `tls.${t.cert === undefined ? "key" : "cert"} needs tls.${t.cert === undefined ? "cert" : "key"}: a client certificate goes with its private key`);
    }
    if (t.servername !== undefined && typeof t.servername !== "string") throw new KeylockError("EINVAL", "tls.servername must be a string");
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === "object" || typeof value === "function") && value !== null && typeof (value as { then?: unknown }).then === "function";
}

/** The caller's logger bound to this client's rid and name (a child logger when it makes them); null without one. */
function boundLogger(logger: ClientLogger | undefined, rid: bigint, name: string): ClientLogger | null {
  if (logger === undefined) return null;
  const bindings = { rid: ridToHex(rid), name };
  return logger.child?.(bindings) ?? withBindings(logger, bindings);
}

function withBindings(logger: ClientLogger, bindings: Record<string, unknown>): ClientLogger {
  return {
    debug: (fields, message) => logger.debug({ ...bindings, ...fields }, message),
    info: (fields, message) => logger.info({ ...bindings, ...fields }, message),
    warn: (fields, message) => logger.warn({ ...bindings, ...fields }, message),
    error: (fields, message) => logger.error({ ...bindings, ...fields }, message),
  };
}

function randomRid(): bigint {
  return drawRid(() => randomBytes(8).readBigUInt64BE());
}

function describeError(message: Message): string {
  return message.payload.kind === "error" ? message.payload.body.message : `error ${message.header.error}`;
}

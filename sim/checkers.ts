/**
 * Invariant checkers (DESIGN §8). The world calls them at every step where a property is established or
 * relied on (a message leaves or reaches a node, a handle is granted or released, the application reads
 * or writes the shared resource), and `afterEvent` after every event; the run calls the quiescence
 * checks between phases. A broken property throws a `Violation` naming its checker, which stops the run
 * (the run adds the seed, the virtual time and the last trace lines).
 *
 * The checkers, by name:
 * - `safety`: no two handles on one key are held at once with modes that may not share
 *   (`handlesShare`: read with read, write_only with write_only; DESIGN §4), across clients and within
 *   one client. Handles live from the "granted" effect to the release call.
 * - `grant-compat`: the cached grants of different clients on one key are compatible (modes.ts
 *   `compatible(a, b, sameClient=false)`), checked after every event from `ClientLocks.view`: a client
 *   lowers its grant before it answers, and the server grants only after the answer arrived. A client
 *   that is closing serves no handle any more and is left out.
 * - `grant-while-invalidating`: the server sends no grant (of any mode) on a key while an invalidation it
 *   sent for that key has not been answered back to it (counted from the invalidate message leaving
 *   the server to the response reaching it); and never a second invalidation to a holder that has not
 *   answered the first (reference §3.11).
 * - `invalidation-response`: a client answers an invalidation only after its application callback for
 *   that key finished and only while every handle it still holds on the key is served by the target mode.
 * - `write-seq`: every write/write_only grant the server sends carries a writeSeq greater than every
 *   earlier one (globally); read and null grants carry 0; write handles carry a non-zero token.
 * - `coherence`: the application caches the resource's version under read-capable handles and drops it
 *   in its invalidation callback (unless write→read); a read under a handle must find the cache equal to
 *   the resource. Writes carry the handle's writeSeq as a fencing token; the resource rejects (and the
 *   checker reports) an exclusive write below any accepted token, or a write_only write below any
 *   accepted exclusive token (write_only writers share, so their tokens interleave legitimately).
 * - `protocol`: the client has at most one request per key outstanding; every grant/refuse answers an
 *   outstanding request of that client for that key and mode; refusals only for nonblock (noQueue)
 *   requests; every response answers an outstanding invalidation; the server emits no protocol-error;
 *   a waiter is resolved once, with the mode it asked for.
 * - `liveness`: waiters fail only for a stated reason (EAGAIN: nonblock; EABORTED: aborted; ESHUTDOWN:
 *   its client is closing); once the workload stops and the queue drains, every waiter is resolved,
 *   nothing is queued, requested or invalidated anywhere, nothing is in flight, and each client's cached
 *   mode equals the server's granted mode for it; a phase that does not drain is a livelock.
 * - `fifo`: per key, the server grants requests in the order they reached it (reference §3.5); a nonblock
 *   request is either refused as it arrives or takes its place in that order like any other (DESIGN §4:
 *   admitted only with nothing queued ahead; it may then wait for its own grant's invalidation, and
 *   requests arriving meanwhile queue behind it).
 * - `trylock` (only with `strictTrylock`; off by default, see run.ts): the server never refuses a nonblock
 *   request on a key whose only entries are the requester's own idle cached grant (DESIGN §4, "a trylock
 *   must succeed on a free key"). The client sends a no-queue request only when no local handle stands
 *   in the way, so such a refusal fails a trylock on a key nobody else uses.
 * - `shrink`: after the forced-shrink phase no client caches a hot key and the server holds no entry for
 *   one; a client that got its farewell response holds no lock object and the server no entry of it;
 *   after every client left, the server table is empty (keyCount 0, entryCount 0).
 * Not checkers but reported the same way: `machine-threw` (a machine threw, e.g. its own InvariantError)
 * and `sim-error` (a bug in the simulator itself).
 * Relies on: the world calling these hooks in the order things happen (world.ts); `keys` being every key
 * more than one client uses.
 */
import type { WaiterId } from "../src/core/client-locks.js";
import type { Key } from "../src/core/keys.js";
import type { LockRequest } from "../src/core/lock-messages.js";
import { compatible, handlesShare, satisfies, type LockMode } from "../src/core/modes.js";
import {
  SimAbort,
  fmtKey,
  type DownMessage,
  type Resource,
  type UpMessage,
  type Waiter,
  type World,
} from "./world.js";

export const CHECKERS = [
  "safety",
  "grant-compat",
  "grant-while-invalidating",
  "invalidation-response",
  "write-seq",
  "coherence",
  "protocol",
  "liveness",
  "shrink",
  "fifo",
  "trylock",
  "machine-threw",
  "sim-error",
] as const;
export type CheckerName = (typeof CHECKERS)[number];

/** How often a run reached each interesting path (printed by the CLI, so a quiet run is not a vacuous one). */
export interface Coverage {
  grants: number;
  upgrades: number;
  invalidations: number;
  invalidationsToRead: number;
  invalidationsOfRequesters: number;
  callbacks: number;
  nullRequests: number;
  noQueueRequests: number;
  refusals: number;
  eagain: number;
  aborted: number;
  cacheHits: number;
  writes: number;
  /** Clients that closed before the final phase, while others were still working. */
  earlyFarewells: number;
}

export function emptyCoverage(): Coverage {
  return {
    grants: 0,
    upgrades: 0,
    invalidations: 0,
    invalidationsToRead: 0,
    invalidationsOfRequesters: 0,
    callbacks: 0,
    nullRequests: 0,
    noQueueRequests: 0,
    refusals: 0,
    eagain: 0,
    aborted: 0,
    cacheHits: 0,
    writes: 0,
    earlyFarewells: 0,
  };
}

export class Violation extends SimAbort {
  constructor(
    readonly checker: CheckerName,
    readonly detail: string,
  ) {
    super(`${checker}: ${detail}`);
    this.name = "Violation";
  }
}

function fail(checker: CheckerName, detail: string): never {
  throw new Violation(checker, detail);
}

interface OutstandingRequest {
  readonly requestId: number;
  readonly request: LockRequest;
  /** The server sent its answer (grant or refuse); it is still outstanding until the client gets it. */
  answered: boolean;
}

function describeWaiter(w: Waiter): string {
  return `c${w.client}/${w.owner} w${w.id} ${w.mode}${w.writeSeq > 0n ? ` seq=${w.writeSeq}` : ""}`;
}

export class Checkers {
  readonly #world: World;
  readonly #keys: readonly Key[];
  /** Handles held now, per key (granted, not yet released). */
  readonly #handles = new Map<Key, Waiter[]>();
  /** Per client: request id → request, from send until the answer reaches the client. */
  readonly #requests: Map<number, OutstandingRequest>[];
  /** Per client: keys with a request outstanding (the one-request-per-key rule). */
  readonly #requestKeys: Set<Key>[];
  /** Per key: client index → invalidations sent and not yet answered back to the server. */
  readonly #invalidations = new Map<Key, Map<number, number>>();
  #lastWriteSeq = 0n;
  readonly coverage: Coverage = emptyCoverage();
  /** Per key: queued requests (nonblock ones the server admitted included) in the order they reached the server, as "client#requestId". */
  readonly #queues = new Map<Key, string[]>();
  readonly #strictTrylock: boolean;
  /** Clients that called close(): their waiters may fail ESHUTDOWN, their cached grants no longer count. */
  readonly #leaving = new Set<number>();

  constructor(world: World, keys: readonly Key[], options: { strictTrylock?: boolean } = {}) {
    this.#world = world;
    this.#strictTrylock = options.strictTrylock ?? false;
    this.#keys = keys;
    this.#requests = world.clients.map(() => new Map<number, OutstandingRequest>());
    this.#requestKeys = world.clients.map(() => new Set<Key>());
  }

  // ---- client side: requests and answers -------------------------------------------------------------

  requestSent(client: number, requestId: number, request: LockRequest): void {
    const keys = this.#requestKeys[client]!;
    if (keys.has(request.key)) {
      const other = [...this.#requests[client]!.values()].find((r) => r.request.key === request.key)!;
      fail(
        "protocol",
        `c${client} sent request#${requestId} on ${fmtKey(request.key)} (${request.newMode}) while request#${other.requestId} ` +
          `(${other.request.newMode}) is still outstanding: at most one request per key`,
      );
    }
    keys.add(request.key);
    if (request.newMode === "null") this.coverage.nullRequests++;
    if (request.noQueue) this.coverage.noQueueRequests++;
    this.#requests[client]!.set(requestId, { requestId, request, answered: false });
  }

  downSent(client: number, message: DownMessage): void {
    switch (message.kind) {
      case "grant": {
        const g = message.grant;
        const r = this.#answer(client, message.requestId, g.key, "grant");
        this.coverage.grants++;
        this.#checkFifo(client, message.requestId, g.key);
        if (g.oldMode === "read" && g.newMode === "write") this.coverage.upgrades++;
        if (r.request.newMode !== g.newMode) {
          fail(
            "protocol",
            `grant#${message.requestId} to c${client} on ${fmtKey(g.key)} is ${g.newMode}; the request asked for ${r.request.newMode}`,
          );
        }
        const pending = this.#invalidations.get(g.key);
        if (pending !== undefined && pending.size > 0) {
          const who = [...pending.keys()].map((c) => `c${c}`).join(", ");
          fail(
            "grant-while-invalidating",
            `server sent grant#${message.requestId} ${g.oldMode}->${g.newMode} on ${fmtKey(g.key)} to c${client} while invalidations ` +
              `to ${who} on that key are unanswered`,
          );
        }
        if (g.newMode === "write" || g.newMode === "write_only") {
          if (g.writeSeq <= this.#lastWriteSeq) {
            fail(
              "write-seq",
              `${g.newMode} grant#${message.requestId} to c${client} on ${fmtKey(g.key)} carries writeSeq ${g.writeSeq}, ` +
                `not above the previous ${this.#lastWriteSeq}`,
            );
          }
          this.#lastWriteSeq = g.writeSeq;
        } else if (g.writeSeq !== 0n) {
          fail(
            "write-seq",
            `${g.newMode} grant#${message.requestId} to c${client} on ${fmtKey(g.key)} carries writeSeq ${g.writeSeq}; expected 0`,
          );
        }
        break;
      }
      case "refuse": {
        const r = this.#answer(client, message.requestId, message.key, "refuse");
        this.coverage.refusals++;
        if (this.#strictTrylock) this.#checkTrylock(client, message.requestId, message.key);
        this.#unqueueRefused(client, message.requestId, message.key);
        if (!r.request.noQueue) {
          fail(
            "protocol",
            `server refused request#${message.requestId} of c${client} on ${fmtKey(message.key)}, which was not nonblock`,
          );
        }
        break;
      }
      case "invalidate": {
        const key = message.invalidation.key;
        let perClient = this.#invalidations.get(key);
        if (perClient === undefined) {
          perClient = new Map();
          this.#invalidations.set(key, perClient);
        }
        if (perClient.has(client)) {
          fail(
            "grant-while-invalidating",
            `server sent a second invalidation on ${fmtKey(key)} to c${client} before the first was answered`,
          );
        }
        perClient.set(client, 1);
        this.coverage.invalidations++;
        if (message.invalidation.newMode === "read") this.coverage.invalidationsToRead++;
        if (this.#requestKeys[client]!.has(key)) this.coverage.invalidationsOfRequesters++;
        break;
      }
    }
  }

  #checkFifo(client: number, requestId: number, key: Key): void {
    const queue = this.#queues.get(key);
    const head = queue?.[0];
    const tag = `${client}#${requestId}`;
    if (head !== tag) {
      fail(
        "fifo",
        `server granted request ${tag} on ${fmtKey(key)} while ${head ?? "nothing"} is the oldest queued request`,
      );
    }
    queue!.shift();
    if (queue!.length === 0) this.#queues.delete(key);
  }

  /** A refused nonblock request was never queued: it is answered as it arrives, so it is the newest entry. */
  #unqueueRefused(client: number, requestId: number, key: Key): void {
    const queue = this.#queues.get(key);
    const tag = `${client}#${requestId}`;
    if (queue?.[queue.length - 1] !== tag) {
      fail(
        "fifo",
        `server refused request ${tag} on ${fmtKey(key)}, which is not the newest request to reach it`,
      );
    }
    queue.pop();
    if (queue.length === 0) this.#queues.delete(key);
  }

  #checkTrylock(client: number, requestId: number, key: Key): void {
    const world = this.#world;
    const rid = world.clients[client]!.rid;
    const entries = world.server.server.dump().filter((e) => e.key === key);
    if (entries.length > 0 && entries.every((e) => e.rid === rid && e.state === "granted")) {
      const own = entries.map((e) => e.mode).join(", ");
      fail(
        "trylock",
        `server refused nonblock request#${requestId} of c${client} on ${fmtKey(key)}, whose only entry is c${client}'s own ` +
          `cached ${own} grant (no local handle in its way): a trylock fails on a key nobody else uses`,
      );
    }
  }

  #answer(client: number, requestId: number, key: Key, what: string): OutstandingRequest {
    const r = this.#requests[client]!.get(requestId);
    if (r === undefined || r.answered) {
      fail(
        "protocol",
        `server sent ${what}#${requestId} on ${fmtKey(key)} to c${client}, which has no such request outstanding`,
      );
    }
    if (r.request.key !== key) {
      fail(
        "protocol",
        `server sent ${what}#${requestId} on ${fmtKey(key)} to c${client}; request#${requestId} was for ${fmtKey(r.request.key)}`,
      );
    }
    r.answered = true;
    return r;
  }

  downDelivered(client: number, message: DownMessage): void {
    if (message.kind === "invalidate" || message.kind === "farewell-response") return;
    const r = this.#requests[client]!.get(message.requestId);
    if (r !== undefined) {
      this.#requests[client]!.delete(message.requestId);
      this.#requestKeys[client]!.delete(r.request.key);
    }
  }

  // ---- invalidations --------------------------------------------------------------------------------

  callbackStarted(_client: number, _key: Key, _from: LockMode, _to: LockMode): void {
    this.coverage.callbacks++;
  }

  invalidateResponseSent(client: number, response: { key: Key; oldMode: LockMode; newMode: LockMode }): void {
    const node = this.#world.clients[client]!;
    for (const [id, cb] of node.callbacks) {
      if (cb.key === response.key) {
        fail(
          "invalidation-response",
          `c${client} answered the invalidation on ${fmtKey(response.key)} (${response.oldMode}->${response.newMode}) while its ` +
            `application callback#${id} (${cb.from}->${cb.to}) is still running`,
        );
      }
    }
    for (const h of this.#handles.get(response.key) ?? []) {
      if (h.client === client && !satisfies(response.newMode, h.mode)) {
        fail(
          "invalidation-response",
          `c${client} answered an invalidation on ${fmtKey(response.key)} down to ${response.newMode} while it still holds handle ${describeWaiter(h)}`,
        );
      }
    }
  }

  upDelivered(client: number, message: UpMessage): void {
    if (message.kind === "request") {
      // Every request joins its key's queue as it arrives; a refused nonblock one leaves it at once
      // (#unqueueRefused), an admitted one is an ordinary queued request (DESIGN §4).
      const key = message.request.key;
      let queue = this.#queues.get(key);
      if (queue === undefined) {
        queue = [];
        this.#queues.set(key, queue);
      }
      queue.push(`${client}#${message.requestId}`);
      return;
    }
    if (message.kind === "farewell") return;
    const key = message.response.key;
    const perClient = this.#invalidations.get(key);
    if (perClient === undefined || !perClient.has(client)) {
      fail(
        "protocol",
        `c${client}'s invalidation response on ${fmtKey(key)} reached the server, which had no invalidation outstanding to it`,
      );
    }
    perClient.delete(client);
    if (perClient.size === 0) this.#invalidations.delete(key);
  }

  clientGone(client: number): void {
    for (const [key, perClient] of this.#invalidations) {
      perClient.delete(client);
      if (perClient.size === 0) this.#invalidations.delete(key);
    }
    this.#requests[client]!.clear();
    this.#requestKeys[client]!.clear();
    for (const [key, queue] of this.#queues) {
      const kept = queue.filter((tag) => !tag.startsWith(`${client}#`));
      if (kept.length === 0) this.#queues.delete(key);
      else this.#queues.set(key, kept);
    }
  }

  clientLeaving(client: number): void {
    this.#leaving.add(client);
  }

  /** The farewell response arrived and the client reset: nothing of it may be left on either side. */
  clientLeft(client: number): void {
    const world = this.#world;
    const node = world.clients[client]!;
    if (node.locks.lockCount !== 0)
      fail("shrink", `${node.name} holds ${node.locks.lockCount} lock objects after its farewell and reset`);
    for (const e of world.server.server.dump()) {
      if (e.rid === node.rid)
        fail("shrink", `server still has departed ${node.name} ${e.state} ${e.mode} on ${fmtKey(e.key)}`);
    }
  }

  protocolError(client: number, message: string): never {
    fail("protocol", `server reported a protocol error for c${client}: ${message}`);
  }

  // ---- handles --------------------------------------------------------------------------------------

  acquireStarted(_waiter: Waiter): void {}

  granted(waiter: Waiter, mode: LockMode): void {
    if (mode !== waiter.mode)
      fail("protocol", `${describeWaiter(waiter)} on ${fmtKey(waiter.key)} was granted as ${mode}`);
    if (waiter.aborted)
      fail(
        "protocol",
        `${describeWaiter(waiter)} on ${fmtKey(waiter.key)} was granted after abort() was called on it`,
      );
    if ((mode === "write" || mode === "write_only") && waiter.writeSeq === 0n) {
      fail(
        "write-seq",
        `${describeWaiter(waiter)} on ${fmtKey(waiter.key)} was granted without a fencing token (writeSeq 0)`,
      );
    }
    let held = this.#handles.get(waiter.key);
    if (held === undefined) {
      held = [];
      this.#handles.set(waiter.key, held);
    }
    for (const h of held) {
      if (!handlesShare(h.mode, waiter.mode)) {
        fail(
          "safety",
          `${describeWaiter(waiter)} granted on ${fmtKey(waiter.key)} while ${describeWaiter(h)} is held` +
            `${h.client === waiter.client ? " (same client)" : ""}`,
        );
      }
    }
    held.push(waiter);
  }

  released(waiter: Waiter): void {
    const held = this.#handles.get(waiter.key);
    const i = held === undefined ? -1 : held.indexOf(waiter);
    if (i < 0) fail("sim-error", `released ${describeWaiter(waiter)}, which is not held`);
    held!.splice(i, 1);
  }

  failed(waiter: Waiter, code: string, reason: string): void {
    const ok =
      (code === "EAGAIN" && waiter.nonblock) ||
      (code === "EABORTED" && waiter.aborted) ||
      (code === "ESHUTDOWN" && this.#leaving.has(waiter.client));
    if (code === "EAGAIN") this.coverage.eagain++;
    if (code === "EABORTED") this.coverage.aborted++;
    if (!ok) {
      const why = waiter.nonblock ? "nonblock" : waiter.aborted ? "aborted" : "neither nonblock nor aborted";
      fail(
        "liveness",
        `${describeWaiter(waiter)} on ${fmtKey(waiter.key)} failed ${code} (${reason}) but was ${why}`,
      );
    }
  }

  resolvedTwice(waiter: Waiter, what: string): never {
    fail(
      "protocol",
      `${describeWaiter(waiter)} on ${fmtKey(waiter.key)} ${what} after it was already ${waiter.state}`,
    );
  }

  unknownWaiter(client: number, id: WaiterId, what: string): never {
    fail("protocol", `c${client}'s machine reported ${what} for unknown waiter w${id}`);
  }

  // ---- the shared resource ----------------------------------------------------------------------------

  /** A read under `waiter`'s handle: a cached version must equal the resource's. */
  cacheRead(waiter: Waiter, cached: number | undefined, resource: Resource): void {
    if (cached !== undefined) this.coverage.cacheHits++;
    if (cached !== undefined && cached !== resource.version) {
      fail(
        "coherence",
        `${describeWaiter(waiter)} read ${fmtKey(waiter.key)} from its cache at version ${cached}, but the resource is at version ` +
          `${resource.version}: the cache was not invalidated`,
      );
    }
  }

  /** A write under `waiter`'s handle, fenced by its writeSeq; throws where the resource would reject it. */
  fencedWrite(waiter: Waiter, resource: Resource): void {
    const token = waiter.writeSeq;
    this.coverage.writes++;
    const floor = waiter.mode === "write" ? resource.maxToken : resource.maxWriteToken;
    if (token < floor) {
      fail(
        "coherence",
        `${describeWaiter(waiter)} wrote ${fmtKey(waiter.key)} with token ${token}, below the highest accepted ` +
          `${waiter.mode === "write" ? "" : "exclusive "}token ${floor}: the resource rejects it`,
      );
    }
  }

  // ---- state checks -----------------------------------------------------------------------------------

  /** After every event: cached grants of different clients on one key are compatible. */
  afterEvent(): void {
    const clients = this.#world.clients;
    for (const key of this.#keys) {
      let first: LockMode = "null";
      let firstClient = -1;
      for (const node of clients) {
        // A closing client serves no handle any more; what it still caches until its reset is moot.
        if (node.leaving) continue;
        const mode = node.locks.view(key)?.mode ?? "null";
        if (mode === "null") continue;
        if (firstClient < 0) {
          first = mode;
          firstClient = node.index;
          continue;
        }
        // Compatibility across clients is "equal and shareable" for non-null modes, so comparing each
        // holder with the first one covers every pair.
        if (!compatible(first, mode, false)) {
          fail(
            "grant-compat",
            `on ${fmtKey(key)} c${firstClient} caches ${first} while ${node.name} caches ${mode}`,
          );
        }
      }
    }
  }

  /** Once the workload stopped and the queue drained. */
  atQuiet(phase: string): void {
    const world = this.#world;
    if (world.network.inFlight !== 0)
      fail("liveness", `${phase}: ${world.network.inFlight} messages still in flight at quiet`);
    for (const node of world.clients) {
      for (const w of node.waiters.values()) {
        if (w.state === "waiting") {
          fail(
            "liveness",
            `${phase}: ${describeWaiter(w)} on ${fmtKey(w.key)} was never granted or failed` +
              `${w.nonblock ? " (nonblock)" : ""}${w.aborted ? " (aborted)" : ""}${w.lost ? " (its grant was swallowed)" : ""}`,
          );
        }
        if (w.state === "granted")
          fail("sim-error", `${phase}: ${describeWaiter(w)} on ${fmtKey(w.key)} is still held at quiet`);
      }
    }
    for (let c = 0; c < world.clients.length; c++) {
      for (const r of this.#requests[c]!.values()) {
        fail(
          "liveness",
          `${phase}: c${c}'s request#${r.requestId} on ${fmtKey(r.request.key)} was never answered`,
        );
      }
    }
    for (const [key, perClient] of this.#invalidations) {
      fail(
        "liveness",
        `${phase}: invalidations on ${fmtKey(key)} to ${[...perClient.keys()].map((c) => `c${c}`).join(", ")} never answered`,
      );
    }
    const serverModes = new Map<string, LockMode>();
    for (const e of world.server.server.dump()) {
      const client = world.clientIndexOf(e.rid);
      if (e.state !== "granted")
        fail("liveness", `${phase}: server still has c${client} ${e.state} ${e.mode} on ${fmtKey(e.key)}`);
      serverModes.set(`${client}:${e.key}`, e.mode);
    }
    for (const node of world.clients) {
      for (const key of this.#keys) {
        const v = node.locks.view(key);
        const clientMode = v?.mode ?? "null";
        const serverMode = serverModes.get(`${node.index}:${key}`) ?? "null";
        if (clientMode !== serverMode) {
          fail(
            "liveness",
            `${phase}: ${node.name} caches ${clientMode} on ${fmtKey(key)} but the server has it as ${serverMode}`,
          );
        }
        if (v === undefined) continue;
        const users = v.users.read + v.users.write + v.users.write_only;
        if (v.requestPending !== null || v.invalidations !== 0 || v.waiters !== 0 || users !== 0) {
          fail(
            "liveness",
            `${phase}: ${node.name}'s lock on ${fmtKey(key)} is not idle: requestPending=${v.requestPending} ` +
              `invalidations=${v.invalidations} waiters=${v.waiters} users=${users}`,
          );
        }
      }
    }
  }

  /** After the forced-shrink phase: no hot key is cached by any client or held on the server. */
  afterShrink(): void {
    const world = this.#world;
    for (const node of world.clients) {
      for (const key of this.#keys) {
        const v = node.locks.view(key);
        if (v !== undefined)
          fail("shrink", `${node.name} still caches ${v.mode} on ${fmtKey(key)} after forced shrinking`);
      }
    }
    const hot = new Set<Key>(this.#keys);
    for (const e of world.server.server.dump()) {
      if (hot.has(e.key)) {
        fail(
          "shrink",
          `server still has c${world.clientIndexOf(e.rid)} ${e.state} ${e.mode} on ${fmtKey(e.key)} after forced shrinking`,
        );
      }
    }
  }

  /** After every client left: the server forgot everything. */
  afterFarewell(): void {
    for (const node of this.#world.clients) {
      if (!node.left) fail("liveness", `${node.name}'s farewell was never answered`);
    }
    const server = this.#world.server.server;
    if (server.keyCount !== 0 || server.entryCount !== 0) {
      const left = server
        .dump()
        .map((e) => `c${this.#world.clientIndexOf(e.rid)} ${e.state} ${e.mode} ${fmtKey(e.key)}`);
      fail(
        "shrink",
        `after every client left the server has ${server.keyCount} keys, ${server.entryCount} entries: ${left.join("; ")}`,
      );
    }
  }
}

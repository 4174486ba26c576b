/**
 * Deliberately wrong parts for the driver simulator (drivers.ts): each mutation is a wrapper around one
 * real part of one instance (the lock table, the write-seq source, the recovery tracker, a session, a
 * client's lock machine or connection, the store), installed through the drivers' seams. The drivers and
 * the pure cores are untouched; a checker of drivers.ts must catch every mutation (test/sim/checker-can-fail.test.ts
 * says which one, with the seeds that show it).
 *
 * Server (runtime/server.ts and the core it drives):
 * - `reuse-write-seq` (server.ts driver bug): every third write grant goes out with an older token than
 *   the table chose (fencing). A WriteSeqSource that reuses a token is refused by the core itself (crash).
 * - `reissue-write-seqs` (B4): a new server's store reads the seq high-water mark as 0, so its tokens start
 *   over (fencing; a recovery report above it is refused: honesty).
 * - `grant-while-invalidating`: the lock table answers each invalidation itself as if the holder had
 *   lowered, and drops the holder's real answer: grants overtake invalidations (exclusion, model).
 * - `null-compatible-within-client`: the lock table treats a client's own null (idle release) request as
 *   compatible with its grant and answers the self-invalidation it causes itself (model). The old mirror's
 *   outcome (the application keeps a cache its lock no longer covers) cannot happen with the real client:
 *   client.ts runs the application's callback before it sends the null request.
 * - `reorder-requests`: the lock table sets every third queued request aside for 5 ms, so later requests
 *   overtake it (model: the table's grants follow its arrival order).
 * - `resume-before-recovery`: the recovery tracker reports recovery finished when the first client
 *   finished its lock recovery, while others are pending (model, exclusion).
 * - `skip-lock-recovery` (server machine bug, around core/server-machine.ts): the first-contact greeting finishes the client's lock
 *   recovery along with its greeting (exclusion, model).
 * - `farewell-skips-recovery` (B5, server machine bug): a farewell is answered without waiting for that
 *   client's lock recovery (departed, quiet).
 * - `reuse-term` (B22): a restarted server takes its predecessor's term, so reconnecting clients look like
 *   reconnects to a server that has no session for them.
 * - `no-reconnect-resend` (server.ts driver bug): on a reconnect the server does not resend what the
 *   client's session kept (convergence).
 * - `read-answer-as-null` (server.ts driver bug): a write→read invalidation answer reaches the table as
 *   null, which forgets a reader (model, quiet).
 * Client (client/client.ts, connection.ts, and the machine they drive):
 * - `early-invalidation-response`: each invalidation is answered as it arrives, before the users released
 *   (exclusion, model).
 * - `shared-write-handles`: a second local writer gets a write handle while one is held (DESIGN §4
 *   forbids it: exclusion within a client).
 * - `swallow-grant`: every seventh "granted" effect is lost: the application never hears of its handle
 *   (convergence).
 * - `recover-lowered-mode` (B7): a recovery report names the mode an invalidation in progress lowers to,
 *   not the mode the application still flushes under (exclusion: a conflicting grant during the flush).
 * - `no-resend` (connection.ts driver bug): after a reconnect the client does not resend what its session
 *   kept (convergence).
 * - `drop-early-messages` (connection.ts driver bug, NEW: only visible with the real connection and a
 *   network that delivers several frames in one read): messages that arrive in the same read as the
 *   greeting answer are acknowledged by the session but never reach the client (convergence).
 * Relies on: the drivers' seams (runtime/server.ts ServerParts; client.ts ClientParts through
 * driver-parts.ts) handing over each part as it is made; each wrapper keeps the signature of what it replaces.
 */
import type { ServerParts as RuntimeParts } from "../src/runtime/server.js";
import type { ServerMachine } from "../src/core/server-machine.js";
import type { RecoveryTracker } from "../src/core/recovery.js";
import type { ClientLockEffect, ClientLocks } from "../src/core/client-locks.js";
import type { LockServer, LockServerEffect } from "../src/core/lock-server.js";
import type { LockInvalidation, Rid } from "../src/core/lock-messages.js";
import type { LockMode } from "../src/core/modes.js";
import type { Clock } from "../src/io/world.js";
import type { Store } from "../src/store/store.js";
import type { Message } from "../src/protocol/messages.js";
import type { ClientParts } from "./driver-parts.js";

export const DRIVER_MUTATIONS = [
  "none",
  "reuse-write-seq",
  "reissue-write-seqs",
  "grant-while-invalidating",
  "reorder-requests",
  "null-compatible-within-client",
  "resume-before-recovery",
  "skip-lock-recovery",
  "farewell-skips-recovery",
  "reuse-term",
  "no-reconnect-resend",
  "read-answer-as-null",
  "early-invalidation-response",
  "shared-write-handles",
  "swallow-grant",
  "recover-lowered-mode",
  "no-resend",
  "drop-early-messages",
] as const;
export type DriverMutation = (typeof DRIVER_MUTATIONS)[number];

export function isDriverMutation(value: string): value is DriverMutation {
  return (DRIVER_MUTATIONS as readonly string[]).includes(value);
}

interface Context {
  /** A line in the run's trace. */
  note(text: string): void;
  /** The clock of the process the part lives in. */
  readonly clock: Clock;
}

type Methods = Record<string, (...args: never[]) => unknown>;

/** Replaces `object[name]` on this instance by `wrap(original)`. */
function replace<F extends (...args: never[]) => unknown>(object: object, name: string, wrap: (original: F) => F): void {
  const methods = object as Methods;
  const original = methods[name] as F | undefined;
  if (typeof original !== "function") throw new Error(`sim/driver-mutations: no method ${name} to replace`);
  const bound = ((...args: never[]) => original.apply(object, args)) as F;
  methods[name] = wrap(bound);
}

/** The store as a server of this mutation sees it (`reissue-write-seqs`). */
export function mutateStore(mutation: DriverMutation, store: Store): Store {
  if (mutation !== "reissue-write-seqs") return store;
  return Object.assign(Object.create(store) as Store, { readSeqHighWater: () => Promise.resolve(0n) });
}

/** The term a server starts with, given its predecessor's (`reuse-term`: the same one). */
export function nextTerm(mutation: DriverMutation, previous: bigint): bigint {
  return mutation === "reuse-term" && previous > 0n ? previous : previous + 1n;
}

/**
 * The server seam (runtime/server.ts ServerParts) for one server of this mutation: every wrapper goes on
 * as the runtime makes the part, before the server serves anyone. On the lock table the order is: the
 * table's own mutations, then `observe` (the protocol trace and the quiet checks), then the driver's
 * (`read-answer-as-null`), so the trace shows what the driver handed the table and what the table decided.
 */
export function serverSeam(mutation: DriverMutation, context: Context, observe: (locks: LockServer) => void, isStopping: () => boolean): RuntimeParts {
  let carry: ((effects: LockServerEffect[]) => void) | null = null;
  let tracker: RecoveryTracker | null = null;
  return {
    recovery: (recovery) => {
      tracker = recovery;
      if (mutation === "skip-lock-recovery") {
        replace<RecoveryTracker["finish"]>(recovery, "finish", (finish) => (rid, which) => finish(rid, which.includes("greeting") ? ["greeting", "locks"] : which));
      }
      if (mutation === "resume-before-recovery") {
        let resumed = false;
        replace<RecoveryTracker["finish"]>(recovery, "finish", (finish) => (rid, which) => {
          const done = finish(rid, which);
          if (resumed) return false;
          if (!done && which.includes("locks") && recovery.pendingCount > 0) {
            context.note(`mutation: resume the table while ${recovery.pendingCount} client(s) still recover`);
            resumed = true;
            return true;
          }
          if (done) resumed = true;
          return done;
        });
      }
    },
    machine: (machine) => {
      if (mutation !== "farewell-skips-recovery") return;
      // The machine asks the recovery tracker whether the client still owes its locks; on a farewell the
      // answer is always "no".
      replace<ServerMachine["input"]>(machine, "input", (input) => (event) => {
        if (event.type !== "farewell" || tracker === null) return input(event);
        const recovery = tracker as unknown as { isPending: RecoveryTracker["isPending"] };
        const isPending = recovery.isPending;
        recovery.isPending = () => false;
        try {
          return input(event);
        } finally {
          recovery.isPending = isPending;
        }
      });
    },
    wrapLockEffects: (original) => {
      carry = original;
      if (mutation !== "reuse-write-seq") return original;
      // The driver stamps every third write grant it sends with the token of the one before. (A
      // WriteSeqSource that hands out a token twice never gets that far: the core LockServer refuses it
      // with an InvariantError, a crash in this simulator.)
      let previous = 0n;
      let grants = 0;
      return (effects) =>
        original(
          effects.map((effect) => {
            if (effect.type !== "grant" || effect.grant.writeSeq === 0n) return effect;
            const last = previous;
            previous = effect.grant.writeSeq;
            if (++grants % 3 !== 0 || last === 0n) return effect;
            context.note(`mutation: stamp the grant of ${effect.grant.key} with the older token ${last}`);
            return { ...effect, grant: { ...effect.grant, writeSeq: last } };
          }),
        );
    },
    lockServer: (locks) => {
      if (mutation === "grant-while-invalidating") answerInvalidationsItself(locks, context, false);
      if (mutation === "null-compatible-within-client") answerInvalidationsItself(locks, context, true);
      if (mutation === "reorder-requests") {
        let queued = 0;
        replace<LockServer["onRequest"]>(locks, "onRequest", (onRequest) => (rid, requestId, request) => {
          if (request.noQueue || ++queued % 3 !== 0) return onRequest(rid, requestId, request);
          context.note(`mutation: the table sets request ${requestId} aside for 5 ms`);
          context.clock.setTimeout(() => {
            if (!isStopping()) carry?.(onRequest(rid, requestId, request));
          }, 5);
          return [];
        });
      }
      observe(locks);
      if (mutation === "read-answer-as-null") {
        replace<LockServer["onInvalidateResponse"]>(locks, "onInvalidateResponse", (answer) => (rid, response) =>
          answer(rid, response.newMode === "read" ? { ...response, newMode: "null" } : response),
        );
      }
    },
    session: (reliable) => {
      if (mutation !== "no-reconnect-resend") return;
      let first = true;
      replace<() => Message[]>(reliable, "attach", (attach) => () => {
        const kept = attach();
        if (first) {
          first = false;
          return kept;
        }
        if (kept.length > 0) context.note(`mutation: the server drops ${kept.length} kept message(s) at a reconnect`);
        return [];
      });
    },
  };
}

/**
 * `grant-while-invalidating` (every invalidation) and `null-compatible-within-client` (only the one a
 * client's own null request causes): the table answers the invalidation itself at once, as if the holder
 * had lowered, and drops the holder's real answer when it comes.
 */
function answerInvalidationsItself(locks: LockServer, context: Context, onlyOwnNull: boolean): void {
  const faked = new Map<string, number>();
  const id = (rid: Rid, invalidation: LockInvalidation): string => `${rid}:${invalidation.key}:${invalidation.newMode}`;
  const answer = locks.onInvalidateResponse.bind(locks);
  const settle = (effects: LockServerEffect[], ownNull: { rid: Rid; key: string } | null): LockServerEffect[] => {
    const out: LockServerEffect[] = [];
    for (const effect of effects) {
      out.push(effect);
      if (effect.type !== "invalidate") continue;
      if (onlyOwnNull && (ownNull === null || ownNull.rid !== effect.rid || ownNull.key !== effect.invalidation.key)) continue;
      const tag = id(effect.rid, effect.invalidation);
      faked.set(tag, (faked.get(tag) ?? 0) + 1);
      context.note(`mutation: the table answers its own invalidation of ${effect.invalidation.key} at once`);
      out.push(...settle(answer(effect.rid, effect.invalidation), null));
    }
    return out;
  };
  replace<LockServer["onRequest"]>(locks, "onRequest", (onRequest) => (rid, requestId, request) =>
    settle(onRequest(rid, requestId, request), request.newMode === "null" ? { rid, key: request.key } : null),
  );
  for (const name of ["onRecoverBatch", "onClientGone", "onWriteSeqsAvailable", "resumeAfterRecovery"]) {
    replace<(...args: unknown[]) => LockServerEffect[]>(locks, name, (original) => (...args) => settle(original(...args), null));
  }
  locks.onInvalidateResponse = (rid, response) => {
    const tag = id(rid, response);
    const count = faked.get(tag) ?? 0;
    if (count > 0) {
      if (count === 1) faked.delete(tag);
      else faked.set(tag, count - 1);
      return [];
    }
    return settle(answer(rid, response), null);
  };
}

/**
 * Wrappers around one client's parts (bugs of client.ts, connection.ts, or the machine they drive),
 * installed after the protocol trace observes the machine, so the trace shows what the real machine did.
 */
export function mutateClient(mutation: DriverMutation, parts: ClientParts, context: Context): void {
  const machine = parts.machine;
  switch (mutation) {
    case "early-invalidation-response":
      answerInvalidationsEarly(machine);
      break;
    case "shared-write-handles": {
      const writers = new Map<string, number>();
      const shared = new Set<number>();
      const track = (effects: ClientLockEffect[]): ClientLockEffect[] => {
        for (const e of effects) if (e.type === "granted" && e.mode === "write") writers.set(e.key, e.waiterId);
        return effects;
      };
      wrapEffects(machine, track);
      replace<ClientLocks["acquire"]>(machine, "acquire", (acquire) => (waiterId, key, mode, options) => {
        const holder = writers.get(key);
        if (mode === "write" && holder !== undefined) {
          context.note(`mutation: w${waiterId} shares w${holder}'s write handle on ${key}`);
          shared.add(waiterId);
          return [{ type: "granted", waiterId, key, mode: "write", writeSeq: machine.view(key)?.writeSeq ?? 0n }];
        }
        return acquire(waiterId, key, mode, options);
      });
      replace<ClientLocks["release"]>(machine, "release", (release) => (waiterId) => {
        if (shared.delete(waiterId)) return [];
        for (const [key, holder] of writers) if (holder === waiterId) writers.delete(key);
        return release(waiterId);
      });
      break;
    }
    case "swallow-grant": {
      let granted = 0;
      wrapEffects(machine, (effects) =>
        effects.filter((e) => {
          if (e.type !== "granted" || ++granted % 7 !== 0) return true;
          context.note(`mutation: swallow granted w${e.waiterId} on ${e.key} (the application never hears of it)`);
          return false;
        }),
      );
      break;
    }
    case "recover-lowered-mode": {
      const lowering = new Map<number, { key: string; to: LockMode }>();
      wrapEffects(machine, (effects) => {
        for (const e of effects) if (e.type === "invalidate") lowering.set(e.invalidationId, { key: e.key, to: e.to });
        return effects;
      });
      replace<ClientLocks["invalidationDone"]>(machine, "invalidationDone", (done) => (invalidationId) => {
        lowering.delete(invalidationId);
        return done(invalidationId);
      });
      replace<ClientLocks["recoverBatch"]>(machine, "recoverBatch", (recoverBatch) => (after, max) =>
        recoverBatch(after, max).map((lock) => {
          const lowered = [...lowering.values()].find((l) => l.key === lock.key);
          if (lowered === undefined || lowered.to === lock.mode) return lock;
          context.note(`mutation: report ${lock.key} as ${lowered.to}, not ${lock.mode}`);
          const writeSeq = lowered.to === "null" || lowered.to === "read" ? 0n : lock.writeSeq;
          // A null report carries no grant proof (protocol §4.5); a read keeps the proof of the write it lowers.
          if (lowered.to === "null") return { ...lock, mode: lowered.to, writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 };
          return { ...lock, mode: lowered.to, writeSeq };
        }),
      );
      break;
    }
    case "no-resend": {
      let first = true;
      replace<() => Message[]>(parts.connection.session, "attach", (attach) => () => {
        const kept = attach();
        if (first) {
          first = false;
          return kept;
        }
        if (kept.length > 0) context.note(`mutation: the client does not resend ${kept.length} kept message(s)`);
        return [];
      });
      break;
    }
    case "drop-early-messages": {
      // Messages the connection queued while the greeting answer was processed are handed over right after
      // the session's attach(), in the same synchronous run: those are the ones this bug loses.
      let draining = false;
      replace<() => Message[]>(parts.connection.session, "attach", (attach) => () => {
        draining = true;
        queueMicrotask(() => (draining = false));
        return attach();
      });
      const options = parts.connection.options;
      const onMessage = options.onMessage;
      options.onMessage = (message) => {
        if (draining) {
          context.note(`mutation: the connection drops a message that came in the greeting answer's read`);
          return;
        }
        onMessage(message);
      };
      break;
    }
    default:
      break;
  }
}

const EFFECT_METHODS = ["acquire", "release", "abort", "onGrant", "onRefuse", "onInvalidate", "invalidationDone", "onNewServer", "shutdown", "reset"];

/** Passes the effects of every machine call through `filter`. */
function wrapEffects(machine: ClientLocks, filter: (effects: ClientLockEffect[]) => ClientLockEffect[]): void {
  for (const name of EFFECT_METHODS) {
    replace<(...args: unknown[]) => ClientLockEffect[]>(machine, name, (original) => (...args) => filter(original(...args)));
  }
}

/**
 * `early-invalidation-response`: every invalidation is answered the moment it arrives (an echo, as the
 * machine would send later), and the machine's own answer, once its users released, is dropped. The
 * machine's state is left as it is: only the answer's timing is wrong.
 */
function answerInvalidationsEarly(machine: ClientLocks): void {
  const early = new Set<number>();
  wrapEffects(machine, (effects) => effects.filter((e) => e.type !== "send-invalidate-response" || !early.delete(e.requestId)));
  replace<ClientLocks["onInvalidate"]>(machine, "onInvalidate", (onInvalidate) => (requestId, invalidation) => {
    const effects = onInvalidate(requestId, invalidation);
    if (effects.some((e) => e.type === "send-invalidate-response" && e.requestId === requestId)) return effects;
    early.add(requestId);
    return [{ type: "send-invalidate-response", requestId, response: invalidation }, ...effects];
  });
}

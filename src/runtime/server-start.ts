/**
 * Starting a lock server (runtime/server.ts `LockServerRuntime.start`) with every store call watched
 * (runtime/store-watch.ts), so a store that hangs cannot hang a start, nor a started server.
 *
 * Guarantees:
 * - The options are checked first: a greeting key exactly when the cluster has a secret (else an Error
 *   naming which is missing), before any store call.
 * - The server is made over the watched store, with log lines tagged with its term; a store that hangs or
 *   keeps failing for `limits.storeUnreachableMs` rejects the start, and once started stops the server
 *   through `fatal` (its member resigns, DESIGN §9).
 * - A start given up this way may still finish later: that server is stopped at once (before recovery if
 *   it is made after the give-up), and the watch is closed; the caller only sees the rejection.
 * Relies on: `create` making the server with the watch it is given (so the server closes it on stop).
 */
import { serverLimits } from "../core/limits.js";
import { withFields } from "../io/log.js";
import type { ServerOptions } from "./server-options.js";
import { StoreWatch } from "./store-watch.js";

export interface StartSteps<T extends { stop(): Promise<void> }> {
  /** Makes the server over the watched store (reads of the store allowed; no client served yet). */
  create(watched: ServerOptions, watch: StoreWatch): Promise<T>;
  /** Begins its recovery: from here on it serves once handed connections. */
  begin(server: T): Promise<void>;
  /** Stops a started server that cannot go on. */
  fatal(server: T, reason: string): void;
}

export async function startWatched<T extends { stop(): Promise<void> }>(options: ServerOptions, steps: StartSteps<T>): Promise<T> {
  if ((options.config.secretDigest !== null) !== (options.greetingKey != null)) {
    throw new Error(
      options.config.secretDigest !== null
        ? "the cluster has a secret: the server needs its greeting key (greetingKey)"
        : "the cluster has no secret: the server takes no greeting key",
    );
  }
  const limits = serverLimits(options.limits);
  let server: T | null = null;
  let started = false;
  let abandoned = false;
  const watch = new StoreWatch(
    options.store,
    limits.storeUnreachableMs,
    (reason) => {
      if (started && server !== null) steps.fatal(server, reason);
    },
    options.clock,
  );
  const watched: ServerOptions = { ...options, store: watch.store, log: withFields(options.log, { term: options.term }) };
  const starting = (async (): Promise<T> => {
    const created = await steps.create(watched, watch);
    server = created;
    if (abandoned) await created.stop();
    else await steps.begin(created);
    return created;
  })();
  try {
    const result = await Promise.race([starting, watch.unreachable]);
    started = true;
    return result;
  } catch (error) {
    abandoned = true;
    watch.close();
    // A start that hangs in the store may still finish later: that server is stopped at once.
    starting.then((late) => void late.stop(), () => undefined);
    throw error;
  }
}

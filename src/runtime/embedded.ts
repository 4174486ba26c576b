/**
 * `keylock up`: the embedded one-member cluster on an SQLite store in a directory (DESIGN §6).
 *
 * Guarantees:
 * - First use formats the store (a fresh cluster id, slot 0 = the given address); later uses reuse it,
 *   and refuse an address that differs from the formatted one, naming both.
 * - Every start takes a term strictly greater than any term recorded before (B22, B42) and records it
 *   with a conditional ELECT before serving, so a restarted server is recognised as a new server.
 * - Stop records STOP and closes the store.
 * Relies on: the store's conditional ELECT; one `keylock up` per directory (a second one fails to
 * elect or to bind the port).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Logger } from "../io/log.js";
import { openStore } from "../store/open.js";
import type { ClusterConfig, Store } from "../store/store.js";
import { LockServerRuntime } from "./server.js";
import { listenTcp } from "./listener.js";

export interface EmbeddedOptions {
  dir: string;
  host: string;
  port: number;
  reconnectTimeoutMs: number;
  log: Logger;
}

export interface Embedded {
  server: LockServerRuntime;
  store: Store;
  stop(): Promise<void>;
}

export async function startEmbedded(options: EmbeddedOptions): Promise<Embedded> {
  mkdirSync(options.dir, { recursive: true });
  const store = await openStore(`sqlite:${join(options.dir, "keylock.db")}`);
  try {
    let config = await store.readConfig();
    if (config === null) {
      config = {
        clusterId: randomBytes(8).toString("hex"),
        slots: [{ slot: 0, host: options.host, port: options.port }],
        secretDigest: null,
        formattedAtMs: Date.now(),
      } satisfies ClusterConfig;
      await store.format(config);
      options.log(`formatted a new one-member cluster ${config.clusterId} in ${options.dir}`);
    }
    const slot = config.slots.find((s) => s.slot === 0);
    if (!slot || config.slots.length !== 1) {
      throw new Error(`${options.dir} holds a ${config.slots.length}-member cluster; run its members with "keylock member"`);
    }
    if (slot.host !== options.host || slot.port !== options.port) {
      throw new Error(
        `${options.dir} was formatted to serve on ${slot.host}:${slot.port}, not ${options.host}:${options.port}; pass --port ${slot.port} or use another --dir`,
      );
    }
    const term = await electSelf(store, 0);
    const server: LockServerRuntime = await LockServerRuntime.start({
      store,
      config,
      slot: 0,
      term,
      host: slot.host,
      port: slot.port,
      reconnectTimeoutMs: options.reconnectTimeoutMs,
      log: options.log,
    });
    const listener = await listenTcp(slot.host, slot.port, (socket) => server.accept(socket));
    let stopped: Promise<void> | null = null;
    return {
      server,
      store,
      stop: () =>
        (stopped ??= (async () => {
          const closing = listener.close();
          await server.stop();
          await closing;
          await store.writeSlotEvent(0, "STOP", { term, rid: 0n, timeMs: Date.now() });
          await store.close();
        })()),
    };
  } catch (error) {
    await store.close();
    throw error;
  }
}

/** A one-member election: term = greatest recorded + 1, persisted (TERM, then conditional ELECT) before use. */
async function electSelf(store: Store, slot: number): Promise<bigint> {
  let greatest = 0n;
  for (const record of await store.readSlots()) {
    for (const event of Object.values(record.events)) if (event && event.term > greatest) greatest = event.term;
  }
  const term = greatest + 1n;
  const event = { term, rid: 0n, timeMs: Date.now() };
  await store.writeSlotEvent(slot, "TERM", event);
  if (!(await store.writeElect(slot, event))) throw new Error(`another member recorded a term above ${term}; not serving`);
  return term;
}

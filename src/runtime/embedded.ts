/**
 * `keylock up`: the embedded one-member cluster on an SQLite store in a directory (DESIGN §6). It is the
 * member path (runtime/member.ts) with one configured slot, so there is one way a server comes to run.
 *
 * Guarantees:
 * - First use formats the store (a fresh cluster id, slot 0 = the given address); later uses reuse it,
 *   and refuse an address that differs from the formatted one, naming both, or a store formatted for
 *   several members.
 * - Every start takes a term strictly greater than any term recorded before (B22, B42) and records it
 *   with a conditional ELECT before serving, so a restarted server is recognised as a new server.
 * - A restart serves at once: a lone slot stands without waiting, and its own predecessor's stale ELECT
 *   (after a crash) neither delays it nor needs fencing (this process holds the slot's address).
 * - `startEmbedded` resolves once the member serves; the caller prints the ready line
 *   `keylock: serving on HOST:PORT` then, and the member prints it again whenever it serves again (after
 *   its server failed and it was re-elected).
 * - A secret is checked against the store's digest before the member starts (messages naming --dir), and
 *   handed to the member, which keys its quorum datagrams with it.
 * - `stop()` is the member's graceful exit (server stopped, STOP and END recorded), then the store closes.
 * Relies on: one `keylock up` per directory (a second one fails to bind the address).
 */
import type { ServerLimits } from "../core/limits.js";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { secretDigest } from "../io/keys.js";
import { fenceAgentFor } from "../io/fence.js";
import { formatAddress } from "../io/tcp.js";
import type { Logger } from "../io/log.js";
import { HEARTBEAT_TIMEOUT_MS_DEFAULT, RECOVERY_TIMEOUT_MS_DEFAULT } from "../core/limits.js";
import { openStore } from "../store/open.js";
import type { ClusterConfig, Store } from "../store/store.js";
import { Member, type MemberTls } from "./member.js";



export interface EmbeddedOptions {
  dir: string;
  host: string;
  port: number;
  reconnectTimeoutMs: number;
  log: Logger;
  heartbeatTimeoutMs?: number;
  recoveryTimeoutMs?: number;
  /** A fence command, or "local"/undefined for the built-in local agent. */
  fenceCommand?: string;
  /** Ready lines; default console.log. */
  announce?: (line: string) => void;
  /** Bounds on what peers may make the lock server hold (core/limits.ts). */
  limits?: Partial<ServerLimits>;
  /** The cluster secret: set when the store is formatted, and must match a store formatted before. */
  secret?: string;
  /** Serve TLS only (`keylock up --tls-cert --tls-key [--tls-ca] [--tls-client-auth]`). */
  tls?: MemberTls;
}

export interface Embedded {
  /** The service address ("HOST:PORT"). */
  readonly address: string;
  /** Kept for callers of the earlier API: `server.address` is the service address. */
  readonly server: { readonly address: string };
  readonly member: Member;
  readonly store: Store;
  stop(): Promise<void>;
}

export async function startEmbedded(options: EmbeddedOptions): Promise<Embedded> {
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const store = await openStore(`sqlite:${join(options.dir, "keylock.db")}`);
  let member: Member | null = null;
  try {
    let config = await store.readConfig();
    if (config === null) {
      config = {
        clusterId: randomBytes(8).toString("hex"),
        slots: [{ slot: 0, host: options.host, port: options.port }],
        secretDigest: options.secret === undefined ? null : secretDigest(options.secret),
        formattedAtMs: Date.now(),
      } satisfies ClusterConfig;
      await store.format(config);
      options.log(`formatted a new one-member cluster ${config.clusterId} in ${options.dir}`);
    }
    const wanted = options.secret === undefined ? null : secretDigest(options.secret);
    if (config.secretDigest !== wanted) {
      throw new Error(
        config.secretDigest === null
          ? `${options.dir} was formatted without a cluster secret; run without --secret-file (or format a new --dir)`
          : wanted === null
            ? `${options.dir} was formatted with a cluster secret; pass the same --secret-file`
            : `${options.dir} was formatted with another cluster secret; pass the same --secret-file`,
      );
    }
    const slot = config.slots.find((s) => s.slot === 0);
    if (!slot || config.slots.length !== 1) {
      throw new Error(`${options.dir} holds a ${config.slots.length}-member cluster; run its members with "keylock member"`);
    }
    if (slot.host !== options.host || slot.port !== options.port) {
      throw new Error(
        `${options.dir} was formatted to serve on ${formatAddress(slot.host, slot.port)}, not ${formatAddress(options.host, options.port)}; pass --port ${slot.port} or use another --dir`,
      );
    }
    const print = options.announce ?? ((line: string) => console.log(line));
    let serves = 0;
    const started = await Member.start({
      store,
      slot: 0,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_MS_DEFAULT,
      reconnectTimeoutMs: options.reconnectTimeoutMs,
      recoveryTimeoutMs: options.recoveryTimeoutMs ?? RECOVERY_TIMEOUT_MS_DEFAULT,
      fenceAgent: fenceAgentFor(options.fenceCommand),
      log: options.log,
      ...(options.limits === undefined ? {} : { limits: options.limits }),
      ...(options.tls === undefined ? {} : { tls: options.tls }),
      ...(options.secret === undefined ? {} : { secret: options.secret }),
      // `keylock up` prints only its serving lines (DESIGN §6), the first one by our caller.
      announce: (line) => {
        if (line.startsWith("keylock: serving on ") && serves++ > 0) print(line);
      },
    });
    member = started;
    const address = await started.waitServing();
    let stopped: Promise<void> | null = null;
    return {
      address,
      server: { address },
      member: started,
      store,
      stop: () =>
        (stopped ??= (async () => {
          try {
            await started.stop();
          } finally {
            await store.close();
          }
        })()),
    };
  } catch (error) {
    if (member !== null) await member.stop().catch(() => undefined);
    await store.close();
    throw error;
  }
}

/** What the store keeps of a cluster secret (the same digest `keylock format --secret-file` writes). */
export { secretDigest };

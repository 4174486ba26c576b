/**
 * The world the drivers live in (issue 10: "one driver"): time and timers, randomness, and framed
 * message connections, as interfaces. The lock server (runtime/server.ts), the client connection and
 * `LockClient` (client/), and the member driver (runtime/member.ts) reach the outside only through these,
 * the store (store/store.ts) and the fence agent (io/fence.ts). Production passes nothing and gets the
 * real ones below; the deterministic simulator (sim/) passes simulated ones, so it runs the production
 * drivers themselves, not copies of them.
 *
 * Guarantees:
 * - `realWorld` is exactly what the drivers used before they took a world: Date.now, performance.now,
 *   setTimeout/clearTimeout, Math.random, and TCP/TLS through io/tcp.ts (FramedConnection, connectTcp,
 *   connectTls). Injecting it changes no behaviour and adds one indirect call per timer or send.
 * - `MessageConnection` is the contract of io/tcp.ts's FramedConnection (messages in arrival order,
 *   sends in order, `onClose` reported once, nothing delivered after it); a simulated connection keeps
 *   the same contract.
 * Relies on: nothing beyond node and io/tcp.ts.
 */
import type net from "node:net";
import { performance } from "node:perf_hooks";
import type { Message } from "../protocol/messages.js";
import { KeylockError } from "../core/errors.js";
import {
  FramedConnection,
  TlsConnectError,
  connectTcp,
  connectTls,
  parseAddress,
  type ClientTlsOptions,
  type ConnectionHandlers,
} from "./tcp.js";

/** An armed timer; only ever handed back to the clock that made it. */
export type Timer = object;

/** Time and timers. `now()` is wall-clock ms (records, logs); `monotonicMs()` never goes back (deadlines). */
export interface Clock {
  now(): number;
  monotonicMs(): number;
  setTimeout(run: () => void, delayMs: number): Timer;
  clearTimeout(timer: Timer | null | undefined): void;
}

/** One framed, message-level connection (io/tcp.ts FramedConnection is the real one). */
export interface MessageConnection {
  readonly remoteAddress: string;
  readonly isClosed: boolean;
  /** The real socket under a TCP/TLS connection (peer-process lookup, TLS peer state); absent when simulated. */
  readonly socket?: net.Socket;
  start(handlers: ConnectionHandlers): void;
  send(message: Message): boolean;
  close(reason: string): void;
  destroy(reason: string): void;
}

/** How drivers open connections: "HOST:PORT" → a started-able connection (throws/rejects when it cannot). */
export interface Transport {
  connect(server: string, timeoutMs: number, tls: ClientTlsOptions | undefined): Promise<MessageConnection>;
}

export interface World {
  readonly clock: Clock;
  readonly transport: Transport;
  /** Uniform in [0, 1) (reconnect jitter, election timeouts). */
  readonly random: () => number;
}

export const realClock: Clock = {
  now: () => Date.now(),
  monotonicMs: () => performance.now(),
  setTimeout: (run, delayMs) => setTimeout(run, delayMs),
  clearTimeout: (timer) => {
    if (timer !== null && timer !== undefined) clearTimeout(timer as NodeJS.Timeout);
  },
};

export const realTransport: Transport = {
  async connect(server, timeoutMs, tls) {
    return new FramedConnection(await openSocket(server, timeoutMs, tls));
  },
};

export const realWorld: World = { clock: realClock, transport: realTransport, random: Math.random };

/**
 * Opens a socket to `server`, with TLS when `tls` is given. A TLS authentication failure (a certificate
 * refused by either side) is EAUTH naming the cause; other failures are plain errors (retried).
 */
export async function openSocket(server: string, timeoutMs: number, tls: ClientTlsOptions | undefined): Promise<net.Socket> {
  const { host, port } = parseAddress(server);
  if (tls === undefined) return connectTcp(host, port, timeoutMs);
  try {
    return await connectTls(host, port, timeoutMs, tls);
  } catch (error) {
    if (error instanceof TlsConnectError && error.auth) throw new KeylockError("EAUTH", error.message, { cause: error });
    throw error;
  }
}

/**
 * The world the drivers live in (issue 10: "one driver"): time and timers, randomness, and framed
 * message connections, as interfaces. The lock server (runtime/server.ts), the client connection and
 * `LockClient` (client/), and the member driver (runtime/member.ts) reach the outside only through these,
 * the store (store/store.ts) and the fence agent (io/fence.ts). Production passes nothing and gets the
 * real ones below; the deterministic simulator (sim/) passes simulated ones, so it runs the production
 * drivers themselves, not copies of them. The member driver also binds datagram sockets (`Datagrams`,
 * for the election's quorum messages; io/udp.ts has the real one) and listens for connections.
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
  /**
   * Runs `run` after the input that is already due has been handled (datagrams that arrived during a
   * stall go first: B41). Real: setImmediate (after the poll phase). Absent: the caller uses setImmediate.
   */
  defer?(run: () => void): void;
}

/**
 * A deadline: `run` goes after `delayMs`, decided after the input already due was read (clock.defer, else
 * setImmediate: after the poll phase), so what came in while this process was stalled past the deadline
 * is handled first (B41). `run` must itself check that the deadline still stands (that input may have met
 * it); clearTimeout on the returned timer cancels it until it fires.
 */
export function setDeadline(clock: Clock, run: () => void, delayMs: number): Timer {
  return clock.setTimeout(() => (clock.defer === undefined ? void setImmediate(run) : clock.defer(run)), delayMs);
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

/** Where a datagram came from (an IP literal and a port). */
export interface DatagramSource {
  readonly address: string;
  readonly port: number;
}

/** One bound datagram socket (io/udp.ts `realDatagrams` is the real one, over node:dgram). */
export interface DatagramSocket {
  /** Hands one datagram to the network; `done` reports the outcome (once; never throws). */
  send(bytes: Uint8Array, port: number, address: string, done: (error: Error | null) => void): void;
  close(): Promise<void>;
}

/** Binds datagram sockets: exclusively (an address in use rejects, code EADDRINUSE); datagrams go to `onMessage`. */
export interface Datagrams {
  bind(
    local: { readonly address: string; readonly port: number; readonly family: 4 | 6 },
    onMessage: (bytes: Uint8Array, from: DatagramSource) => void,
    onError: (error: Error) => void,
  ): Promise<DatagramSocket>;
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
  defer: (run) => void setImmediate(run),
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

/**
 * The member's TCP service port. The listener outlives lock servers: a member listens from the moment it
 * starts, hands sockets to its lock server while it leads, and otherwise answers every greeting with
 * ENOTLEADER naming the leader when it knows it (DESIGN §4: "a non-leader answers the greeting with
 * not leader, try slot N").
 *
 * Limits (DESIGN §9, core/limits.ts): at most `connectionsMax` open connections per member, whatever
 * their route (lock server, admin, not yet greeted, ENOTLEADER answers): one more is closed at once by
 * the kernel-facing side (net.Server maxConnections), counted in `refusedConnections` and logged at most
 * once a second. A socket answered ENOTLEADER that does not greet within the greeting deadline is closed.
 * With TLS options the port speaks TLS only (DESIGN §9): sockets reach the owner once the handshake is
 * done. A connection that sends nothing within `handshakeTimeoutMs`, or whose handshake then does not
 * finish within `handshakeTimeoutMs` more, is dropped; a failed handshake (a client refusing our
 * certificate, garbage) is counted and logged, at most one line per TLS_ERROR_LOG_INTERVAL_MS, and never
 * reaches the owner. A plaintext keylock client (its first byte is a frame length's, not a TLS record's)
 * is answered EAUTH "this member serves TLS only" in plaintext and closed, so it fails at once with a
 * clear reason; nothing else is ever said or served in plaintext. Under `clientAuth`, a client whose
 * certificate is missing or not signed by the given CA never reaches the owner either: its greeting is
 * answered EAUTH naming the reason (the TLS layer alone would drop it silently after the handshake,
 * leaving the client guessing) and the connection closes.
 * Relies on: the codec; the owner choosing a route per socket.
 */
import net from "node:net";
import tls from "node:tls";
import { FramedConnection, formatAddress } from "../io/tcp.js";
import { WireError } from "../protocol/messages.js";
import { CONNECTION_LOG_INTERVAL_MS } from "../core/limits.js";
import { throttledLogger, type Logger } from "../io/log.js";
import { realClock, type Clock, type MessageConnection } from "../io/world.js";

export interface ServiceListener {
  readonly host: string;
  readonly port: number;
  readonly address: string;
  /** Connections closed at once because `connectionsMax` were open. */
  readonly refusedConnections: number;
  /** TLS handshakes that failed or timed out, and TLS clients refused for their certificate (0 without TLS). */
  readonly tlsClientErrors: number;
  close(): Promise<void>;
}

export interface ListenLimits {
  /** Open connections beyond which a new one is closed at once. */
  connectionsMax: number;
  log: Logger;
}

/** The member's TLS material and policy (`--tls-cert --tls-key [--tls-ca] [--tls-client-auth]`). */
export interface ListenerTls {
  cert: string | Buffer;
  key: string | Buffer;
  /** CAs that sign client certificates (and complete our chain). */
  ca?: string | Buffer;
  /** Require a client certificate signed by `ca`. */
  clientAuth: boolean;
  /** A TLS handshake not finished in this time is dropped (the member passes limits.greetingTimeoutMs). */
  handshakeTimeoutMs: number;
  log?: (line: string) => void;
}

/** The first byte of a TLS handshake record (a ClientHello). */
const TLS_HANDSHAKE_RECORD = 0x16;
/** What a plaintext client is told by a TLS member. */
export const PLAINTEXT_REFUSED = "this member serves TLS only: connect with the tls option (the CLI: --tls-ca F, or --tls for the system CAs)";

/** Failed TLS handshakes are logged at most once per this interval (the rest are counted). */
export const TLS_ERROR_LOG_INTERVAL_MS = 10_000;

export async function listenTcp(
  host: string,
  port: number,
  onSocket: (socket: net.Socket) => void,
  limits?: ListenLimits,
  tlsOptions?: ListenerTls,
): Promise<ServiceListener> {
  let tlsClientErrors = 0;
  let server: net.Server;
  if (tlsOptions === undefined) {
    server = net.createServer({ pauseOnConnect: true, noDelay: true }, onSocket);
  } else {
    const options = tlsOptions;
    let lastLogMs = -Infinity;
    let unlogged = 0;
    const tlsError = (what: string): void => {
      tlsClientErrors++;
      const now = Date.now();
      if (now - lastLogMs < TLS_ERROR_LOG_INTERVAL_MS) {
        unlogged++;
        return;
      }
      options.log?.(`${what}${unlogged > 0 ? ` (and ${unlogged} more TLS failures since the last line)` : ""}`);
      lastLogMs = now;
      unlogged = 0;
    };
    const secure = tls.createServer(
      {
        cert: options.cert,
        key: options.key,
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        requestCert: options.clientAuth,
        // Verified below instead, so that a refused client is told why (EAUTH) rather than dropped silently.
        rejectUnauthorized: false,
        handshakeTimeout: options.handshakeTimeoutMs,
        noDelay: true,
      },
      (socket: tls.TLSSocket) => {
        if (options.clientAuth && !socket.authorized) {
          const presented = Object.keys(socket.getPeerCertificate()).length > 0;
          const reason = presented
            ? `the member refused this client's TLS certificate (${String(socket.authorizationError)}): it is not signed by a CA the member trusts (--tls-ca)`
            : "the member requires a TLS client certificate (--tls-client-auth) and none was presented: pass tls.cert and tls.key (--tls-cert and --tls-key)";
          tlsError(`TLS client ${formatAddress(socket.remoteAddress, socket.remotePort)} refused: ${reason}`);
          answerRefused(socket, WireError.EAUTH, reason);
          return;
        }
        onSocket(socket);
      },
    );
    secure.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
      tlsError(`TLS handshake from ${formatAddress(socket.remoteAddress, socket.remotePort)} failed: ${error.message.trim()}`);
      socket.destroy();
    });
    // The first byte tells a TLS client (a handshake record, 0x16) from a plaintext keylock client (a frame
    // length ≤ FRAME_BYTES_MAX, so 0x00): the first goes to the TLS server, the second is told in plaintext
    // that this member serves TLS only (EAUTH, so it stops at once instead of retrying), anything else is
    // dropped. Nothing is ever served in plaintext.
    server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
      const from = formatAddress(socket.remoteAddress, socket.remotePort);
      const timer = setTimeout(() => {
        tlsError(`TLS handshake from ${from} failed: nothing received within ${options.handshakeTimeoutMs} ms`);
        socket.destroy();
      }, options.handshakeTimeoutMs);
      const onError = (): void => {
        clearTimeout(timer);
        socket.destroy();
      };
      socket.once("error", onError);
      socket.once("close", () => clearTimeout(timer));
      socket.once("data", (chunk: Buffer) => {
        clearTimeout(timer);
        socket.pause();
        socket.off("error", onError);
        socket.unshift(chunk);
        if (chunk[0] === TLS_HANDSHAKE_RECORD) {
          secure.emit("connection", socket);
        } else if (chunk[0] === 0) {
          tlsError(`plaintext client ${from} refused: this member serves TLS only`);
          answerRefused(socket, WireError.EAUTH, PLAINTEXT_REFUSED);
        } else {
          tlsError(`connection from ${from} dropped: neither TLS nor a keylock frame (first byte 0x${chunk[0]!.toString(16).padStart(2, "0")})`);
          socket.destroy();
        }
      });
      socket.resume();
    });
  }
  let refused = 0;
  if (limits !== undefined) {
    server.maxConnections = limits.connectionsMax;
    const log = throttledLogger(limits.log, CONNECTION_LOG_INTERVAL_MS);
    server.on("drop", (data?: { remoteAddress?: string; remotePort?: number }) => {
      refused++;
      log(`refused a connection from ${formatAddress(data?.remoteAddress, data?.remotePort)}: ${limits.connectionsMax} connections are open (--max-connections)`);
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port, backlog: 511 }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = (server.address() as net.AddressInfo).port;
  return {
    host,
    port: bound,
    address: formatAddress(host, bound),
    get refusedConnections() {
      return refused;
    },
    get tlsClientErrors() {
      return tlsClientErrors;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}

/** Answers the socket's greeting with ENOTLEADER (naming `leader` when known) and closes it; one that does not greet within `greetingTimeoutMs` is closed. */
export function answerNotLeader(socket: net.Socket, leader: { slot: number; address: string } | null, greetingTimeoutMs: number): void {
  answerNotLeaderOn(new FramedConnection(socket), leader, greetingTimeoutMs);
}

/** `answerNotLeader` on a connection not started yet, timed by `clock` (io/world.ts; the member's world). */
export function answerNotLeaderOn(
  connection: MessageConnection,
  leader: { slot: number; address: string } | null,
  greetingTimeoutMs: number,
  clock: Clock = realClock,
): void {
  const timer = clock.setTimeout(() => connection.close(`no greeting within ${greetingTimeoutMs} ms`), greetingTimeoutMs);
  connection.start({
    onMessage: (message) => {
      clock.clearTimeout(timer);
      if (!message.header.response) {
        connection.send({
          header: { seq: 1, ack: message.header.seq, id: message.header.id, cmd: message.header.cmd, response: true, error: WireError.ENOTLEADER },
          payload: {
            kind: "error",
            body: {
              message: leader ? `not the leader; the leader is slot ${leader.slot} at ${leader.address}` : "not the leader; no leader known yet",
              ...(leader ? { leader } : {}),
            },
          },
        });
      }
      connection.close("not the leader");
    },
    onClose: () => clock.clearTimeout(timer),
  });
}

/** Answers the socket's first request (its greeting) with `error` and `message`, then closes it. */
function answerRefused(socket: net.Socket, error: WireError, message: string): void {
  const connection = new FramedConnection(socket);
  const timer = setTimeout(() => connection.close("no greeting"), 5000);
  connection.start({
    onMessage: (request) => {
      clearTimeout(timer);
      if (!request.header.response) {
        connection.send({
          header: { seq: 1, ack: request.header.seq, id: request.header.id, cmd: request.header.cmd, response: true, error },
          payload: { kind: "error", body: { message } },
        });
      }
      connection.close(message);
    },
    onClose: () => clearTimeout(timer),
  });
}

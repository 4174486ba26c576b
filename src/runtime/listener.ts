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
 * Relies on: the codec; the owner choosing a route per socket.
 */
import net from "node:net";
import { FramedConnection, formatAddress } from "../io/tcp.js";
import { WireError } from "../protocol/messages.js";
import { CONNECTION_LOG_INTERVAL_MS } from "../core/limits.js";
import { throttledLogger, type Logger } from "../io/log.js";

export interface ServiceListener {
  readonly host: string;
  readonly port: number;
  readonly address: string;
  /** Connections closed at once because `connectionsMax` were open. */
  readonly refusedConnections: number;
  close(): Promise<void>;
}

export interface ListenLimits {
  /** Open connections beyond which a new one is closed at once. */
  connectionsMax: number;
  log: Logger;
}

export async function listenTcp(
  host: string,
  port: number,
  onSocket: (socket: net.Socket) => void,
  limits?: ListenLimits,
): Promise<ServiceListener> {
  const server = net.createServer({ pauseOnConnect: true, noDelay: true }, onSocket);
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
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}

/** Answers the socket's greeting with ENOTLEADER (naming `leader` when known) and closes it; one that does not greet within `greetingTimeoutMs` is closed. */
export function answerNotLeader(socket: net.Socket, leader: { slot: number; address: string } | null, greetingTimeoutMs: number): void {
  const connection = new FramedConnection(socket);
  const timer = setTimeout(() => connection.close(`no greeting within ${greetingTimeoutMs} ms`), greetingTimeoutMs);
  connection.start({
    onMessage: (message) => {
      clearTimeout(timer);
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
    onClose: () => clearTimeout(timer),
  });
}

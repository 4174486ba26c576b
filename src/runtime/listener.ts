/**
 * The member's TCP service port. The listener outlives lock servers: a member listens from the moment it
 * starts, hands sockets to its lock server while it leads, and otherwise answers every greeting with
 * ENOTLEADER naming the leader when it knows it (DESIGN §4: "a non-leader answers the greeting with
 * not leader, try slot N"). Relies on: the codec; the owner choosing a route per socket.
 */
import net from "node:net";
import { FramedConnection, formatAddress } from "../io/tcp.js";
import { WireError } from "../protocol/messages.js";

export interface ServiceListener {
  readonly host: string;
  readonly port: number;
  readonly address: string;
  close(): Promise<void>;
}

export async function listenTcp(host: string, port: number, onSocket: (socket: net.Socket) => void): Promise<ServiceListener> {
  const server = net.createServer({ pauseOnConnect: true, noDelay: true }, onSocket);
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
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}

/** Answers the socket's greeting with ENOTLEADER (naming `leader` when known) and closes it. */
export function answerNotLeader(socket: net.Socket, leader: { slot: number; address: string } | null): void {
  const connection = new FramedConnection(socket);
  const timer = setTimeout(() => connection.close("no greeting"), 5000);
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

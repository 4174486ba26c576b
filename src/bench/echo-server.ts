/**
 * The physical floor for the benchmarks: a TCP server that answers every keylock frame with a response
 * frame of the same shape, using the same framing, codec and write batching as the lock server.
 * Prints "echo: listening on PORT" and runs until killed.
 */
import net from "node:net";
import { FramedConnection } from "../io/tcp.js";

const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
  const connection = new FramedConnection(socket);
  let seq = 0;
  connection.start({
    onMessage: (message) => {
      connection.send({
        header: { ...message.header, seq: ++seq, ack: message.header.seq, response: true },
        payload: message.payload,
      });
    },
    onClose: () => undefined,
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`echo: listening on ${(server.address() as net.AddressInfo).port}`);
});

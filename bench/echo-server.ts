/**
 * The physical floor for the benchmarks: a bare Node length-prefixed echo. The server returns every
 * frame (4-byte big-endian length + body) as it came, one write per chunk read, decoding nothing; the
 * client (`EchoClient`) sends a lock-request-sized frame and waits for it to come back. One round trip
 * between two Node processes over loopback TCP: what no networked grant can beat.
 * Run as a process it prints "echo: listening on PORT" and serves until killed.
 */
import net from "node:net";
import { resolve as resolvePath } from "node:path";
import { fileURLToPath } from "node:url";
import { encodeMessage } from "../src/protocol/codec.js";
import { Command, WireError } from "../src/protocol/messages.js";
import { keyFromText } from "../src/core/keys.js";

/** A frame the size of a cold lock request (same key length as the bench's keys). */
export const ECHO_FRAME: Buffer = Buffer.from(
  encodeMessage({
    header: { seq: 1, ack: 0, id: 1, cmd: Command.LOCK, response: false, error: WireError.NONE },
    payload: {
      kind: "lock",
      body: {
        key: keyFromText("cold/000000"),
        oldMode: "null",
        newMode: "write",
        writeSeq: 0n,
        noQueue: false,
        grantTerm: 0n,
        grantNo: 0,
        grantTag: 0,
      },
    },
  }),
);

/** Closed-loop echo client: `send(done)` writes one frame; `done` runs when it has come back whole. */
export class EchoClient {
  private received = 0;
  private done: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.received += chunk.length;
      if (this.received >= ECHO_FRAME.length && this.done) {
        this.received -= ECHO_FRAME.length;
        const done = this.done;
        this.done = null;
        done();
      }
    });
    socket.on("error", () => undefined);
  }

  static open(port: number): Promise<EchoClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, noDelay: true }, () =>
        resolve(new EchoClient(socket)),
      );
      socket.once("error", reject);
    });
  }

  send(done: () => void): void {
    this.done = done;
    this.socket.write(ECHO_FRAME);
  }

  roundTrip(): Promise<void> {
    return new Promise((resolve) => this.send(resolve));
  }

  close(): void {
    this.socket.destroy();
  }
}

const isMain =
  process.argv[1] !== undefined && resolvePath(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("data", (chunk: Buffer) => socket.write(chunk));
    socket.on("error", () => socket.destroy());
  });
  server.listen(0, "127.0.0.1", () => {
    console.log(`echo: listening on ${(server.address() as net.AddressInfo).port}`);
  });
}

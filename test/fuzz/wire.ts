/**
 * Raw wire material for the hostile-peer fuzzer: frames as the server sees them, below the codec's
 * validation, so a hostile peer can send anything (seq 0, ack 2^53-2, an unknown cmd, a key over the
 * limit), plus a recording proxy that captures the real traffic of honest clients.
 *
 * Guarantees:
 * - `rawFrame` frames any MessagePack value with a correct 4-byte length prefix; `splitFrames` cuts a
 *   byte stream back into bodies (a trailing partial frame is dropped).
 * - `RecordingProxy` forwards bytes unchanged and keeps, per connection, the client→server and
 *   server→client bodies in order.
 * Relies on: sim/hostile-attacks.ts (raw frames, shared with the simulator's hostile peers), loopback TCP.
 */
import net from "node:net";
import { Buffer } from "node:buffer";
import { splitFrames } from "../../sim/hostile-attacks.js";

export { SAFE_MAX, U64_MAX, frameBytes, rawDecode, rawFrame, splitFrames, type RawBody } from "../../sim/hostile-attacks.js";

/** One recorded TCP connection: bodies in each direction, in order. */
export interface RecordedConnection {
  readonly toServer: Buffer[];
  readonly toClient: Buffer[];
}

/** A loopback proxy in front of one server that records every connection through it. */
export class RecordingProxy {
  readonly connections: { up: Buffer[]; down: Buffer[] }[] = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(target: string): Promise<RecordingProxy> {
    const [host, port] = splitAddress(target);
    let proxy: RecordingProxy | null = null;
    const server = net.createServer((client) => {
      const record = { up: [] as Buffer[], down: [] as Buffer[] };
      proxy!.connections.push(record);
      const upstream = net.connect({ host, port });
      for (const socket of [client, upstream]) {
        proxy!.sockets.add(socket);
        socket.on("close", () => proxy!.sockets.delete(socket));
        socket.on("error", () => undefined);
      }
      client.on("data", (d: Buffer) => {
        record.up.push(d);
        upstream.write(d);
      });
      upstream.on("data", (d: Buffer) => {
        record.down.push(d);
        client.write(d);
      });
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    proxy = new RecordingProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  recorded(): RecordedConnection[] {
    return this.connections.map((c) => ({
      toServer: splitFrames(Buffer.concat(c.up)),
      toClient: splitFrames(Buffer.concat(c.down)),
    }));
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(":");
  return [address.slice(0, at).replace(/^\[|\]$/g, ""), Number(address.slice(at + 1))];
}

/**
 * A loopback TCP proxy for tests: forwards 127.0.0.1:<port> to a target and can cut every connection
 * through it at once (both sockets destroyed, in-flight bytes lost), like a network failure.
 */
import net from "node:net";

export class CuttingProxy {
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(targetHost: string, targetPort: number): Promise<CuttingProxy> {
    let proxy: CuttingProxy | null = null;
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: targetHost, port: targetPort });
      for (const socket of [client, upstream]) {
        proxy!.sockets.add(socket);
        socket.on("close", () => proxy!.sockets.delete(socket));
        socket.on("error", () => undefined);
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    proxy = new CuttingProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Destroys every connection through the proxy; new ones are accepted. Returns how many sockets were cut. */
  cut(): number {
    const count = this.sockets.size;
    for (const socket of this.sockets) socket.destroy();
    return count;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

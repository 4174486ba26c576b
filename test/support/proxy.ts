/**
 * A loopback TCP proxy for tests: forwards 127.0.0.1:<port> to a target and can cut every connection
 * through it at once (both sockets destroyed, in-flight bytes lost), like a network failure.
 */
import net from "node:net";

export class CuttingProxy {
  private readonly sockets = new Set<net.Socket>();
  /** While blocked: connections are accepted and held without forwarding anything (a black hole). */
  private blocked = false;
  private readonly held = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(targetHost: string, targetPort: number): Promise<CuttingProxy> {
    let proxy: CuttingProxy | null = null;
    const server = net.createServer((client) => {
      if (proxy!.blocked) {
        proxy!.held.add(client);
        client.on("error", () => undefined);
        client.on("close", () => proxy!.held.delete(client));
        client.resume(); // read and drop whatever arrives
        return;
      }
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

  /**
   * Black-holes the target: every connection through the proxy is cut, and new ones are accepted but never
   * forwarded, so a peer's connects and queries hang until its own timeouts, as across a dead network.
   */
  block(): void {
    this.blocked = true;
    this.cut();
  }

  /** Ends the black hole: held connections are closed (their owners reconnect) and new ones are forwarded. */
  unblock(): void {
    this.blocked = false;
    for (const socket of this.held) socket.destroy();
    this.held.clear();
  }

  async close(): Promise<void> {
    this.unblock();
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Prometheus metrics (`--metrics-port N`): a tiny HTTP endpoint on 127.0.0.1 serving `GET /metrics` in the
 * text exposition format. The collector is called per scrape; it must be cheap and never throw.
 */
import http from "node:http";

export interface MetricSample {
  name: string;
  help: string;
  type: "counter" | "gauge";
  value: number | bigint;
}

export function formatMetrics(samples: MetricSample[]): string {
  return samples
    .map((s) => `# HELP ${s.name} ${s.help}\n# TYPE ${s.name} ${s.type}\n${s.name} ${s.value.toString()}\n`)
    .join("");
}

export async function serveMetrics(host: string, port: number, collect: () => MetricSample[]): Promise<{ close(): Promise<void> }> {
  const server = http.createServer((request, response) => {
    if (request.method !== "GET" || (request.url ?? "").split("?")[0] !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found: GET /metrics\n");
      return;
    }
    let body: string;
    try {
      body = formatMetrics(collect());
    } catch (error) {
      response.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${(error as Error).message}\n`);
      return;
    }
    response.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** Serves a member's metrics on 127.0.0.1:`port` (loopback: scrape it locally or through your agent). */
export async function serveMemberMetrics(
  member: { metrics(): MetricSample[] },
  port: number,
  log: (line: string) => void,
): Promise<{ close(): Promise<void> }> {
  const server = await serveMetrics("127.0.0.1", port, () => member.metrics());
  log(`metrics on http://127.0.0.1:${port}/metrics`);
  return server;
}

/**
 * The client's cached acquire+release, two ways (docs/performance.md, "Client"):
 * - Instructions (callgrind, repeatable on a noisy machine):
 *     node bench/cached-cost.mjs HOST:PORT N   (bundled with esbuild; bench/callgrind.sh runs it)
 *   Connects to a running `keylock up`, takes one key once (a grant from the server), then re-acquires and
 *   releases it N times from the cache; prints ns per acquire+release. Ir(3N) − Ir(N), divided by 2N, is
 *   the client's cost per cached acquire+release (the event-loop turn every SYNC_SETTLES_PER_TURN_MAX included).
 * - Before/after in one process (same machine, same moment):
 *     npx tsx bench/cached-cost.ts HOST:PORT N --against DIR [--rounds R]
 *   DIR is another checkout (e.g. `git worktree add /tmp/before <commit>`, with node_modules linked);
 *   its client and this one run R alternating rounds of N each, and the medians and their ratio are printed.
 */
import { connect, type LockClient } from "../src/client/client.js";

const args = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const at = args.indexOf(name);
  return at < 0 ? undefined : args.splice(at, 2)[1];
};
const against = option("--against");
const rounds = Number(option("--rounds") ?? 6);
const [server, count] = args;
const n = Number(count ?? 100_000);

async function loop(client: LockClient, key: string, times: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < times; i++) (await client.acquire(key, "write")).release();
  return Number(process.hrtime.bigint() - t0);
}

if (against === undefined) {
  const client = await connect({ servers: [server!], name: "cached-cost" });
  (await client.acquire("cached/1", "write")).release();
  const ns = await loop(client, "cached/1", n);
  await client.close();
  console.log(JSON.stringify({ n, nsPerOp: n > 0 ? ns / n : 0 }));
} else {
  const other = (await import(`${against}/src/client/client.ts`)) as { connect: typeof connect };
  const clients: [string, LockClient][] = [
    ["against", await other.connect({ servers: [server!], name: "cached-cost-against" })],
    ["this", await connect({ servers: [server!], name: "cached-cost-this" })],
  ];
  const rates = new Map<string, number[]>(clients.map(([name]) => [name, []]));
  for (const [name, client] of clients) (await client.acquire(`cached/${name}`, "write")).release();
  for (let round = 0; round < rounds; round++) {
    for (const [name, client] of round % 2 === 0 ? clients : [...clients].reverse()) {
      rates.get(name)!.push(n / ((await loop(client, `cached/${name}`, n)) / 1e9));
    }
  }
  const median = (values: number[]): number => [...values].sort((a, b) => a - b)[values.length >> 1]!;
  const summary = Object.fromEntries([...rates].map(([name, values]) => [name, { medianPerS: Math.round(median(values)), rounds: values.map(Math.round) }]));
  console.log(JSON.stringify({ n, ...summary, ratio: +(median(rates.get("this")!) / median(rates.get("against")!)).toFixed(2) }));
  for (const [, client] of clients) await client.close();
}
process.exit(0);

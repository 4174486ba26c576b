/**
 * Instructions per cached acquire+release on the client (callgrind, repeatable on a noisy machine):
 *   node bench/cached-cost.mjs HOST:PORT N   (bundled with esbuild; bench/callgrind.sh runs it)
 * Connects to a running `keylock up`, takes one key once (a grant from the server), then re-acquires and
 * releases it N times from the cache; prints ns per acquire+release. Ir(N) − Ir(0), divided by N, is the
 * client's cost per cached acquire+release (the event-loop turn every SYNC_SETTLES_PER_TURN_MAX included).
 */
import { connect } from "../src/client/client.js";

const [server, count] = process.argv.slice(2);
const n = Number(count ?? 100_000);
const client = await connect({ servers: [server!], name: "cached-cost" });
(await client.acquire("cached/1", "write")).release();
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) (await client.acquire("cached/1", "write")).release();
const ns = Number(process.hrtime.bigint() - t0);
await client.close();
console.log(JSON.stringify({ n, nsPerOp: n > 0 ? ns / n : 0 }));
process.exit(0);

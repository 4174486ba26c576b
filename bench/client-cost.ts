/**
 * The client process's whole cost per networked operation, for callgrind (bench/client-cost.sh runs it):
 *     node bench/client-cost.mjs MODE HOST:PORT N
 * against a running `keylock up`. Everything the process does is counted: the client, the codec, Node's
 * net and stream layers, promises and GC (user space only; the kernel's part of a socket read or write is not).
 * Ir(3N) − Ir(N), divided by 2N, is the client's cost per operation (start-up and warm-up cancel). Modes:
 * - cold: acquire+release `write` on a fresh key, idleLockLimit 1,000,000 (bench row "cold grant").
 * - fresh: the same with the default idleLockLimit, after IDLE_LOCK_LIMIT_DEFAULT warm-up acquires, so each
 *   acquire also releases the oldest idle lock (a null request and its answer): the 64-clients row's client.
 * - handoff: alternates a `write` lock on one key with a partner process (`node bench/client-cost.mjs
 *   partner HOST:PORT KEY`, started by the script, not counted); one operation is one hand-off: the grant
 *   of the key from the partner, and the invalidation the partner causes answered (bench row "hand-off").
 *   Both sides run bench/worker.ts's handoff loop: after each release, wait until the lock was taken away.
 */
import { randomBytes } from "node:crypto";
import { connect, IDLE_LOCK_LIMIT_DEFAULT, type LockClient } from "../src/client/client.js";

const [mode, server, arg] = process.argv.slice(2);
const prefix = randomBytes(6).toString("hex");

/**
 * bench/worker.ts's handoff loop: acquire, release, and unless the other side's request already took the
 * lock away (the invalidation came with the grant), wait until it does (or 200 ms).
 */
async function handoffLoop(client: LockClient, key: string, times: number): Promise<void> {
  let takenAway: (() => void) | null = null;
  let takenAwaySeen: boolean;
  client.on("invalidate", (event) => {
    if (event.to !== "null") return;
    takenAwaySeen = true;
    takenAway?.();
  });
  for (let i = 0; i < times; i++) {
    takenAwaySeen = false;
    const gone = new Promise<void>((resolve) => (takenAway = resolve));
    (await client.acquire(key, "write")).release();
    if (!takenAwaySeen) {
      let guard: NodeJS.Timeout | undefined;
      await Promise.race([gone, new Promise((r) => (guard = setTimeout(r, 200)))]);
      clearTimeout(guard);
    }
  }
}

async function fresh(client: LockClient, tag: string, times: number): Promise<void> {
  for (let i = 0; i < times; i++) (await client.acquire(`${prefix}/${tag}/${i}`, "write")).release();
}

if (mode === "cold" || mode === "fresh") {
  const n = Number(arg);
  const client = await connect({ servers: [server!], name: `client-cost-${mode}`, ...(mode === "cold" ? { idleLockLimit: 1_000_000 } : {}) });
  await fresh(client, "warm", mode === "fresh" ? IDLE_LOCK_LIMIT_DEFAULT : 3000);
  await fresh(client, "run", n);
  await client.close();
} else if (mode === "handoff") {
  const [key, count] = arg!.split(",");
  const client = await connect({ servers: [server!], name: "client-cost-handoff" });
  await handoffLoop(client, key!, 200 + Number(count));
  await client.close();
} else if (mode === "partner") {
  const client = await connect({ servers: [server!], name: "client-cost-partner" });
  process.stdout.write("ready\n");
  await handoffLoop(client, arg!, Number.MAX_SAFE_INTEGER);
} else {
  console.error("usage: client-cost.mjs cold|fresh HOST:PORT N | handoff HOST:PORT KEY,N | partner HOST:PORT KEY");
  process.exit(2);
}
process.exit(0);

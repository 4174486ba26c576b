/**
 * A benchmark load process. Reads one JSON job from argv[2], runs it, prints one JSON result line.
 * Jobs:
 *  - { kind: "echo", port, connections, durationMs }: closed-loop echo round trips, 1 in flight per connection
 *  - { kind: "fresh", servers, clients, durationMs, prefix }: each client acquires+releases fresh keys (write)
 *  - { kind: "hot", servers, clients, durationMs, key }: each client acquires+releases one shared key (write)
 *  - { kind: "handoff", servers, durationMs, key }: one client; after each release it waits until the lock was
 *    taken away (invalidated to null) before acquiring again, so every acquire is a hand-off from the other
 * Every job that connects clients takes an optional `tlsCaFile`: connect with TLS trusting that CA (bench/tls-cost.ts).
 * Results carry counts and latency samples (µs) so the parent computes rates and percentiles.
 */
import { readFileSync } from "node:fs";
import { connect } from "../client/client.js";
import { FramedConnection, connectTcp } from "../io/tcp.js";
import { Command, WireError, type Message } from "../protocol/messages.js";
import { keyFromText } from "../core/keys.js";
import { nowUs } from "./stats.js";

interface Job {
  kind: "echo" | "fresh" | "hot" | "handoff";
  port?: number;
  servers?: string[];
  connections?: number;
  clients?: number;
  durationMs: number;
  prefix?: string;
  key?: string;
  /** Connect with TLS, trusting the PEM CA in this file. */
  tlsCaFile?: string;
  /** Start all workers at the same wall-clock time (ms since epoch). */
  startAtMs: number;
}

const job = JSON.parse(process.argv[2]!) as Job;
const tls = job.tlsCaFile === undefined ? {} : { tls: { ca: readFileSync(job.tlsCaFile) } };
const SAMPLE_EVERY = 4;
const SAMPLES_MAX = 20_000;

async function untilStart(): Promise<void> {
  const wait = job.startAtMs - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

async function echo(): Promise<{ count: number; samples: number[] }> {
  const connections: FramedConnection[] = [];
  for (let i = 0; i < (job.connections ?? 1); i++) {
    connections.push(new FramedConnection(await connectTcp("127.0.0.1", job.port!, 5000)));
  }
  await untilStart();
  const deadline = Date.now() + job.durationMs;
  let count = 0;
  const samples: number[] = [];
  await Promise.all(
    connections.map(
      (connection) =>
        new Promise<void>((resolve) => {
          let seq = 0;
          let sentAt = 0;
          const message = (): Message => ({
            header: { seq: ++seq, ack: 0, id: seq, cmd: Command.LOCK, response: false, error: WireError.NONE },
            payload: {
              kind: "lock",
              body: { key: keyFromText(`echo/${seq}`), oldMode: "null", newMode: "read", writeSeq: 0n, noQueue: false },
            },
          });
          connection.start({
            onMessage: () => {
              count++;
              if (count % SAMPLE_EVERY === 0) samples.push(nowUs() - sentAt);
              if (Date.now() >= deadline) {
                connection.close("done");
                resolve();
                return;
              }
              sentAt = nowUs();
              connection.send(message());
            },
            onClose: () => resolve(),
          });
          sentAt = nowUs();
          connection.send(message());
        }),
    ),
  );
  return { count, samples };
}

async function handoff(): Promise<{ count: number; samples: number[] }> {
  let takenAway: (() => void) | null = null;
  const client = await connect({
    servers: job.servers!,
    ...tls,
    name: "bench-handoff",
    onInvalidate: (event) => {
      if (event.to === "null") takenAway?.();
    },
  });
  await untilStart();
  const deadline = Date.now() + job.durationMs;
  let count = 0;
  const samples: number[] = [];
  while (Date.now() < deadline) {
    const gone = new Promise<void>((resolve) => (takenAway = resolve));
    const start = nowUs();
    const handle = await client.acquire(job.key!, "write");
    samples.push(nowUs() - start);
    handle.release();
    count++;
    await Promise.race([gone, new Promise((r) => setTimeout(r, 200))]);
  }
  await client.close();
  return { count, samples: samples.slice(10) };
}

async function locks(hot: boolean): Promise<{ count: number; samples: number[] }> {
  const clients = await Promise.all(
    Array.from({ length: job.clients ?? 1 }, (_, i) => connect({ servers: job.servers!, ...tls, name: `bench-${i}` })),
  );
  await untilStart();
  const deadline = Date.now() + job.durationMs;
  let count = 0;
  const samples: number[] = [];
  await Promise.all(
    clients.map(async (client, c) => {
      let i = 0;
      while (Date.now() < deadline) {
        const key = hot ? job.key! : `${job.prefix}/${c}/${i++}`;
        const start = nowUs();
        const handle = await client.acquire(key, "write");
        const took = nowUs() - start;
        handle.release();
        count++;
        if (hot || count % SAMPLE_EVERY === 0) samples.push(took);
        // Let the other clients' invalidations run between iterations (a real app does work here).
        if (hot) await new Promise((r) => setImmediate(r));
      }
    }),
  );
  await Promise.all(clients.map((client) => client.close()));
  return { count, samples };
}

const result =
  job.kind === "echo" ? await echo() : job.kind === "handoff" ? await handoff() : await locks(job.kind === "hot");
// Keep the report small: at most SAMPLES_MAX latency samples, evenly strided.
const stride = Math.max(1, Math.ceil(result.samples.length / SAMPLES_MAX));
const samples = result.samples.filter((_, i) => i % stride === 0).map((us) => Math.round(us * 10) / 10);
process.stdout.write(`${JSON.stringify({ count: result.count, samples })}\n`, () => process.exit(0));

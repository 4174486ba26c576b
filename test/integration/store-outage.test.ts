// Store outages (DESIGN §9, issue 8): a lock server whose store is cut keeps its lock table whole — write
// grants wait while the fencing-token reservation is retried, nothing throws mid-grant — and a store that
// stays unreachable past limits.storeUnreachableMs stops the server cleanly (onFatal) so its member resigns.
// In-process servers on 127.0.0.1 over a memory store wrapped to fail or hang on demand
// (test/support/faulty-store.ts), with small write seq blocks so an outage exhausts the reserved tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type LockClient } from "../../src/index.js";
import { MemoryStore } from "../../src/store/memory.js";
import type { ClusterConfig } from "../../src/store/store.js";
import { LockServerRuntime } from "../../src/runtime/server.js";
import { listenTcp, type ServiceListener } from "../../src/runtime/listener.js";
import type { FenceAgent } from "../../src/io/fence.js";
import { FaultyStore } from "../support/faulty-store.js";
import { freePort } from "../support/processes.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const quietAgent: FenceAgent = { name: "test", fence: () => Promise.resolve() };

interface Harness {
  faulty: FaultyStore;
  server: LockServerRuntime;
  listener: ServiceListener;
  address: string;
  fatal: string[];
  logs: string[];
  stop(): Promise<void>;
}

async function startServer(options: { storeUnreachableMs: number; writeSeqBlock: bigint }): Promise<Harness> {
  const port = await freePort();
  const config: ClusterConfig = { clusterId: "outage", slots: [{ slot: 0, host: "127.0.0.1", port }], secretDigest: null, formattedAtMs: 0 };
  const memory = new MemoryStore();
  await memory.format(config);
  const faulty = new FaultyStore(memory);
  const fatal: string[] = [];
  const logs: string[] = [];
  const server = await LockServerRuntime.start({
    store: faulty.store,
    config,
    slot: 0,
    term: 1n,
    host: "127.0.0.1",
    port,
    fenceAgent: quietAgent,
    log: (line) => logs.push(line),
    onFatal: (reason) => fatal.push(reason),
    writeSeqBlock: options.writeSeqBlock,
    limits: { storeUnreachableMs: options.storeUnreachableMs },
  });
  const listener = await listenTcp("127.0.0.1", port, (socket) => server.accept(socket));
  return {
    faulty,
    server,
    listener,
    address: listener.address,
    fatal,
    logs,
    stop: async () => {
      faulty.restore();
      await server.stop();
      await listener.close();
    },
  };
}

async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await sleep(ms);
  return settled;
}

test("store outage - write grants wait while the token reservation fails and resume when the store returns (no throw mid-grant)", async () => {
  const h = await startServer({ storeUnreachableMs: 60_000, writeSeqBlock: 4n });
  let client: LockClient | null = null;
  try {
    client = await connect({ servers: [h.address], connectTimeoutMs: 5000 });
    const tokens: bigint[] = [];
    const grantWrite = async (key: string): Promise<void> => {
      const handle = await client!.acquire(key, "write");
      tokens.push(handle.writeSeq);
      handle.release();
    };
    await grantWrite("w/1");
    h.faulty.cut("fail");
    // The reserved block still has tokens: these are granted from memory while the store is cut.
    await grantWrite("w/2");
    await grantWrite("w/3");
    await grantWrite("w/4");
    // The block is used up: the next write grant waits (no InvariantError, no crash), reads carry on.
    const waiting = client.acquire("w/5", "write");
    assert.equal(await settledWithin(waiting, 600), false, "a write grant went ahead without a token in hand");
    const reader = await client.acquire("r/1", "read");
    assert.equal(reader.writeSeq, 0n);
    reader.release();
    const writeOnly = client.acquire("wo/1", "write_only");
    assert.equal(await settledWithin(writeOnly, 100), false, "write_only needs a token too");
    assert.ok(h.logs.some((l) => /reserving write seqs failed \(retrying\)/.test(l)), "the failed reservation is logged and retried");
    assert.deepEqual(h.fatal, [], "an outage shorter than the bound is not fatal");
    h.faulty.restore();
    const granted = await waiting;
    tokens.push(granted.writeSeq);
    granted.release();
    const wo = await writeOnly;
    tokens.push(wo.writeSeq);
    wo.release();
    await grantWrite("w/6");
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i]! > tokens[i - 1]!, `tokens strictly increase: ${tokens.join(", ")}`);
    assert.ok((await h.faulty.inner.readSeqHighWater()) >= tokens[tokens.length - 1]!, "every token is below the durable mark");
    assert.equal(h.server.isStopping, false);
  } finally {
    await client?.close().catch(() => undefined);
    await h.stop();
  }
});

for (const mode of ["fail", "hang"] as const) {
  test(`store outage - a store that ${mode === "fail" ? "keeps failing" : "hangs"} past storeUnreachableMs stops the server with a clear reason`, async () => {
    const h = await startServer({ storeUnreachableMs: 1000, writeSeqBlock: 2n });
    let client: LockClient | null = null;
    try {
      client = await connect({ servers: [h.address], connectTimeoutMs: 1000 });
      (await client.acquire("a", "write")).release();
      h.faulty.cut(mode);
      (await client.acquire("b", "write")).release(); // the last token of the block; its reservation fails
      const waiting = client.acquire("c", "write");
      waiting.catch(() => undefined);
      const started = Date.now();
      while (h.fatal.length === 0 && Date.now() - started < 10_000) await sleep(20);
      assert.equal(h.fatal.length, 1, "onFatal called once");
      assert.match(h.fatal[0]!, /the store is unreachable/);
      assert.match(h.fatal[0]!, mode === "fail" ? /store calls have failed for \d+ ms/ : /has not answered for \d+ ms/);
      assert.ok(Date.now() - started >= 900, "not before the bound");
      assert.equal(h.server.isStopping, true);
    } finally {
      await client?.close().catch(() => undefined);
      await h.stop();
    }
  });
}

test("store outage - a start whose store hangs past the bound is refused instead of hanging", async () => {
  const port = await freePort();
  const config: ClusterConfig = { clusterId: "outage", slots: [{ slot: 0, host: "127.0.0.1", port }], secretDigest: null, formattedAtMs: 0 };
  const memory = new MemoryStore();
  await memory.format(config);
  const faulty = new FaultyStore(memory);
  faulty.cut("hang");
  const started = Date.now();
  const error = await LockServerRuntime.start({
    store: faulty.store,
    config,
    slot: 0,
    term: 1n,
    host: "127.0.0.1",
    port,
    fenceAgent: quietAgent,
    log: () => undefined,
    limits: { storeUnreachableMs: 1000 },
  }).then(
    (server) => server,
    (e: Error) => e,
  );
  assert.ok(error instanceof Error, "the start was refused");
  assert.match(error.message, /the store is unreachable/);
  assert.ok(Date.now() - started < 10_000);
  faulty.restore(); // the abandoned start finishes and is stopped at once
  await sleep(50);
});

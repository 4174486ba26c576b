// The coherent cache (DESIGN §6, src/client/cache.ts) against a real embedded server on 127.0.0.1: values
// are loaded once per grant, dirty values are written back before another client is granted the key, a
// downgrade to read keeps the value and one to null drops it, and an idle lock released for idleLockLimit
// writes back first.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { CoherentCache, connect, type LockClient } from "../../src/index.js";
import { startEmbedded, type Embedded } from "../../src/runtime/embedded.js";
import { freePort, tempDir } from "../support/processes.js";

/** A store that counts its reads and writes, and records the token of each write. */
class CountingStore {
  readonly values = new Map<string, number>();
  reads = 0;
  writes: { key: string; value: number; writeSeq: bigint }[] = [];
  load = async (key: string): Promise<number> => {
    this.reads++;
    await new Promise((r) => setTimeout(r, 5));
    return this.values.get(key) ?? 0;
  };
  save = async (key: string, value: number, writeSeq: bigint): Promise<void> => {
    await new Promise((r) => setTimeout(r, 5));
    this.writes.push({ key, value, writeSeq });
    this.values.set(key, value);
  };
}

let dir: { path: string; remove(): void };
let embedded: Embedded;
const clients: LockClient[] = [];

before(async () => {
  dir = tempDir("cache");
  embedded = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port: await freePort(), reconnectTimeoutMs: 20_000, log: () => undefined });
});
after(async () => {
  for (const c of clients) await c.close();
  await embedded.stop();
  dir.remove();
});

async function client(options: { idleLockLimit?: number } = {}): Promise<LockClient> {
  const c = await connect({ servers: [embedded.address], ...options });
  clients.push(c);
  return c;
}

test("cache - values are loaded once per grant and written back before another client reads them", async () => {
  const store = new CountingStore();
  const a = new CoherentCache(await client(), store);
  const b = new CoherentCache(await client(), store);
  for (let i = 0; i < 3; i++) await a.update("cache/1", (v) => v + 1);
  assert.equal(store.reads, 1, "loaded once");
  assert.equal(store.writes.length, 0, "not written while a holds the write lock");
  for (let i = 0; i < 5; i++) assert.equal(await a.get("cache/1"), 3);
  assert.equal(store.reads, 1, "reads under the cached lock do not reach the store");

  assert.equal(await b.get("cache/1"), 3, "b reads what a wrote: a wrote back before b was granted");
  assert.equal(store.writes.length, 1);
  assert.ok(store.writes[0]!.writeSeq > 0n, "the write back carries a's fencing token");
  assert.equal(store.reads, 2);
  assert.deepEqual(a.stats(), { values: 1, dirty: 0, loads: 1 }, "a was downgraded to read: its value stays, clean");
  assert.equal(await a.get("cache/1"), 3);
  assert.equal(store.reads, 2, "a's value survived the downgrade to read");

  await b.update("cache/1", (v) => v * 10);
  assert.equal(a.stats().values, 0, "a's lock went to null: its value is dropped");
  assert.equal(await a.get("cache/1"), 30, "a reloads and sees b's write");
  assert.equal(store.writes.at(-1)!.value, 30);
  assert.ok(store.writes.at(-1)!.writeSeq > store.writes[0]!.writeSeq, "tokens grow");
  a.close();
  b.close();
});

test("cache - an idle lock released for idleLockLimit writes its dirty value back first", async () => {
  const store = new CountingStore();
  const small = await client({ idleLockLimit: 1 });
  const a = new CoherentCache(small, store);
  await a.set("idle/1", 42);
  assert.equal(store.writes.length, 0);
  for (let i = 2; i < 5; i++) (await small.acquire(`idle/${i}`, "read")).release(); // pushes idle/1 out of the LRU
  for (let i = 0; i < 100 && store.writes.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(store.writes.map((w) => [w.key, w.value]), [["idle/1", 42]]);
  assert.equal(a.stats().values, 0, "the value went with its lock");
  const b = new CoherentCache(await client(), store);
  assert.equal(await b.get("idle/1"), 42);
  a.close();
  b.close();
});

test("cache - flush writes every dirty value back and keeps them cached", async () => {
  const store = new CountingStore();
  const a = new CoherentCache(await client(), store);
  await a.set("flush/1", 1);
  await a.set("flush/2", 2);
  assert.deepEqual(a.stats(), { values: 2, dirty: 2, loads: 0 });
  await a.flush();
  assert.deepEqual(store.writes.map((w) => [w.key, w.value]).sort(), [["flush/1", 1], ["flush/2", 2]]);
  assert.deepEqual(a.stats(), { values: 2, dirty: 0, loads: 0 });
  a.close();
});

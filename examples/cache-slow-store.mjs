// The coherent cache in front of a slow store: reads cost a store round trip only when this client has
// not held the key's lock since the last change; a change by another client is seen at once.
//
//   node examples/cache-slow-store.mjs          (a keylock server on KEYLOCK_SERVERS, default 127.0.0.1:7411)
import { CoherentCache, connect } from "keylock";

const servers = (process.env.KEYLOCK_SERVERS ?? "127.0.0.1:7411").split(",");
const STORE_DELAY_MS = 50;

/** A store that takes STORE_DELAY_MS per call (think: a remote database or an object store). */
const slowStore = {
  data: new Map([["profile/ada", { name: "Ada", visits: 0 }]]),
  calls: 0,
  async load(key) {
    this.calls++;
    await new Promise((r) => setTimeout(r, STORE_DELAY_MS));
    return structuredClone(this.data.get(key) ?? null);
  },
  async save(key, value) {
    this.calls++;
    await new Promise((r) => setTimeout(r, STORE_DELAY_MS));
    this.data.set(key, structuredClone(value));
  },
};

const web = await connect({ servers, name: "web" });
const admin = await connect({ servers, name: "admin" });
const webCache = new CoherentCache(web, { load: (k) => slowStore.load(k), save: (k, v) => slowStore.save(k, v) });
const adminCache = new CoherentCache(admin, { load: (k) => slowStore.load(k), save: (k, v) => slowStore.save(k, v) });

let t = performance.now();
for (let i = 0; i < 1000; i++) await webCache.get("profile/ada");
console.log(`1000 reads took ${Math.round(performance.now() - t)} ms and ${slowStore.calls} store call(s) (each call takes ${STORE_DELAY_MS} ms)`);

await adminCache.update("profile/ada", (p) => ({ ...p, name: "Ada Lovelace" })); // web's read lock is invalidated
const seen = await webCache.get("profile/ada"); // the admin's write-back happens before web is granted read again
console.log(`web sees "${seen.name}" right after the admin's change (store calls so far: ${slowStore.calls})`);
if (seen.name !== "Ada Lovelace") process.exit(1);

t = performance.now();
for (let i = 0; i < 1000; i++) await webCache.get("profile/ada");
console.log(`1000 more reads took ${Math.round(performance.now() - t)} ms; store calls: ${slowStore.calls}`);

webCache.close();
adminCache.close();
await Promise.all([web.close(), admin.close()]);

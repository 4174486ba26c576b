// A counter kept coherent across processes without re-reading it on every use.
//
//   node examples/coherent-counter.mjs [processes=3] [increments=500]      (a keylock server on KEYLOCK_SERVERS,
//                                                                            default 127.0.0.1:7411)
// Starts that many copies of itself. Each increments one counter, kept in a JSON file (the "store"), through
// a CoherentCache: the value is read from the file only when this process does not hold the lock, and written
// back only when another process asks for the lock. The total is exact, and the file is read and written far
// fewer times than the counter is used.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CoherentCache, connect } from "keylock";

const servers = (process.env.KEYLOCK_SERVERS ?? "127.0.0.1:7411").split(",");

if (process.argv[2] === "--worker") {
  const [, , , file, increments] = process.argv;
  const client = await connect({ servers, name: `counter-${process.pid}` });
  let reads = 0;
  let writes = 0;
  const cache = new CoherentCache(client, {
    load: () => {
      reads++;
      try {
        return JSON.parse(readFileSync(file, "utf8")).value;
      } catch {
        return 0;
      }
    },
    save: (_key, value) => {
      writes++;
      writeFileSync(file, JSON.stringify({ value }));
    },
  });
  for (let i = 0; i < Number(increments); i++) await cache.update("examples/counter", (value) => value + 1);
  await cache.flush(); // write back what this process still holds dirty
  cache.close();
  await client.close();
  console.log(JSON.stringify({ reads, writes }));
} else {
  const processes = Number(process.argv[2] ?? 3);
  const increments = Number(process.argv[3] ?? 500);
  const dir = mkdtempSync(join(tmpdir(), "keylock-counter-"));
  const file = join(dir, "counter.json");
  const self = fileURLToPath(import.meta.url);
  const results = await Promise.all(
    Array.from({ length: processes }, () => {
      const child = spawn(process.execPath, [self, "--worker", file, String(increments)], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      return new Promise((resolve, reject) =>
        child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`worker exited ${code}`)))),
      );
    }),
  );
  const value = JSON.parse(readFileSync(file, "utf8")).value;
  rmSync(dir, { recursive: true, force: true });
  const reads = results.reduce((n, r) => n + r.reads, 0);
  const writes = results.reduce((n, r) => n + r.writes, 0);
  console.log(`counter = ${value} after ${processes * increments} increments by ${processes} processes; the store was read ${reads} and written ${writes} times`);
  if (value !== processes * increments) process.exit(1);
}

/**
 * Summarises V8 CPU profiles (`node --cpu-prof`) into the categories of docs/performance.md: codec,
 * session, lock table, client lock machine, drivers, socket writes, socket reads and wake-ups (event
 * loop, ticks, microtasks), GC, native/other, idle. Self time only (each sample counts once, for the
 * function on top of the stack).
 *
 *   npx tsx bench/profile-summary.ts [--top N] FILE.cpuprofile... | DIR
 * With a directory, summarises every profile in it whose busiest function is not the tsx loader's, and
 * names each by the keylock module that dominates it (server, client, echo, peer).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const CATEGORIES: [string, (fn: string, url: string) => boolean][] = [
  ["idle", (fn) => fn === "(idle)"],
  [
    "startup (module loading, tsx)",
    (fn, url) => /makeSyncRequest|waitForWorker|compileSourceTextModule|compileForInternalLoader|wrapSafe|parseSource/.test(fn) || /esm\/|cjs\/loader|tsx\/dist|cjs-module-lexer|undici|commander/i.test(url),
  ],
  ["store (SQLite)", (_fn, url) => /store\/|better-sqlite3/.test(url)],
  ["process spawning (bench)", (_fn, url) => /child_process/.test(url)],
  ["gc", (fn) => fn === "(garbage collector)"],
  ["codec", (_fn, url) => /protocol\/(codec|frame|scan|schema|lock-fast)|@msgpack/.test(url)],
  ["session", (_fn, url) => /core\/session/.test(url)],
  ["lock table", (_fn, url) => /core\/(lock-server|modes|keys|churn-map|limits|lock-messages)/.test(url)],
  ["client lock machine", (_fn, url) => /core\/client-locks/.test(url)],
  ["drivers (server/client/tcp)", (_fn, url) => /(runtime|client|io)\/[a-z-]+\.ts/.test(url) && !/node_modules/.test(url)],
  [
    "socket writes",
    (fn, url) =>
      /stream_base_commons|streams\/writable|node:net/.test(url) && /write|Write|cork|flush|_final|doWrite/.test(fn) ||
      /^(writev|writeBuffer|writeUtf8String|writeLatin1String)$/.test(fn),
  ],
  [
    "socket reads, wake-ups (event loop, ticks, microtasks)",
    (fn, url) =>
      /onStreamRead|processTicksAndRejections|runMicrotasks|processImmediate|listOnTimeout|emit|addChunk|readableAddChunk|Readable\.push|afterWriteDispatched|onWriteComplete/.test(fn) ||
      /streams\/readable|events|task_queues|timers/.test(url),
  ],
  ["bench harness", (_fn, url) => /\/bench\//.test(url)],
  ["native / program", (fn) => fn === "(program)" || fn === "(root)"],
];

export interface Summary {
  totalMs: number;
  busyMs: number;
  categories: { name: string; ms: number; share: number }[];
  top: { name: string; ms: number }[];
}

export function summarise(profile: Profile, topN = 12): Summary {
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) byId.set(node.id, node);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const categories = new Map<string, number>();
  const functions = new Map<string, number>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    total += us;
    const category = CATEGORIES.find(([, test]) => test(functionName, url))?.[0] ?? "other JS / native";
    categories.set(category, (categories.get(category) ?? 0) + us);
    const file = url.split("/").slice(-2).join("/");
    const name = `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
    functions.set(name, (functions.get(name) ?? 0) + us);
  }
  const idle = categories.get("idle") ?? 0;
  const busy = total - idle;
  return {
    totalMs: total / 1000,
    busyMs: busy / 1000,
    categories: [...categories]
      .filter(([name]) => name !== "idle")
      .sort((a, b) => b[1] - a[1])
      .map(([name, us]) => ({ name, ms: us / 1000, share: us / busy })),
    top: [...functions]
      .filter(([name]) => !name.startsWith("(idle)"))
      .sort((a, b) => b[1] - a[1])
      .slice(0, topN)
      .map(([name, us]) => ({ name, ms: us / 1000 })),
  };
}

/** What a profile is, by where its samples fell. */
export function roleOf(profile: Profile): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n.callFrame.url]));
  const hit = (pattern: RegExp): boolean => profile.samples.some((id) => pattern.test(byId.get(id) ?? ""));
  if (hit(/runtime\/server/)) return "server";
  if (hit(/bench\/run/)) return "bench main (cold-grant client)";
  if (hit(/client\/client|core\/client-locks/)) return "client worker";
  if (hit(/ioredis|redlock|redis-semaphore|node_modules\/pg/)) return "peer worker";
  if (hit(/bench\/(worker|echo-server)/)) return "echo worker or server";
  return "other (tsx loader thread)";
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].split("/").pop()!);
if (isMain) {
  const argv = process.argv.slice(2);
  const topAt = argv.indexOf("--top");
  const topN = topAt < 0 ? 12 : Number(argv.splice(topAt, 2)[1]);
  const files = argv.flatMap((path) =>
    statSync(path).isDirectory()
      ? readdirSync(path)
          .filter((f) => f.endsWith(".cpuprofile"))
          .map((f) => join(path, f))
      : [path],
  );
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
    const role = roleOf(profile);
    if (role.startsWith("other")) continue;
    const s = summarise(profile, topN);
    console.log(`\n${file}: ${role}; ${s.totalMs.toFixed(0)} ms profiled, ${s.busyMs.toFixed(0)} ms busy`);
    for (const c of s.categories) console.log(`  ${(100 * c.share).toFixed(1).padStart(5)}%  ${c.ms.toFixed(0).padStart(6)} ms  ${c.name}`);
    console.log("  top functions (self):");
    for (const t of s.top) console.log(`    ${t.ms.toFixed(0).padStart(6)} ms  ${t.name}`);
  }
}

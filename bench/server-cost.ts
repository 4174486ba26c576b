/**
 * The whole server process's instructions per grant, sockets and Node's net/stream layers included
 * (docs/performance.md, "Whole process"):
 *   npx tsx bench/server-cost.ts [N] [--tree DIR] [--keep DIR] [--only cold|fresh16]
 * `keylock up` (src/cli/main.ts of this checkout, or of DIR with --tree: the before/after of one sitting),
 * bundled with esbuild, runs under `valgrind --tool=callgrind` with `node --single-threaded`; a normal node
 * client process (this file with --drive, this checkout's client) then drives:
 *   cold    — one client (idleLockLimit 1,000,000), a fresh key each time: acquire "write", release
 *   fresh16 — 16 clients at once (default idleLockLimit), fresh keys each, acquire "write", release
 * N and 3N grants, each against a fresh server and store. Only the driven phase is counted: callgrind's
 * counters are zeroed (callgrind_control -z) once the clients have greeted and dumped (-d) when they are
 * done, so start-up, greetings, idle time, the farewell and shutdown are out. Instructions per grant =
 * (Ir(3N) − Ir(N)) / 2N: what is fixed in the phase (JIT warm-up, the zero and dump) cancels. User space only: the kernel's
 * share of each write(2) is not in it. With --keep, the callgrind files stay in DIR for callgrind_annotate, and
 *   npx tsx bench/server-cost.ts --breakdown DIR cold|fresh16 N
 * splits the per-grant figure by function and category (V8 builtins, GC, Node C++, libuv, libc; code that V8
 * compiled at run time has no name in callgrind and is one category, "JIT-compiled JavaScript", unless the
 * server ran with KEYLOCK_SERVER_NODE_FLAGS=--perf-basic-prof: then its /tmp/perf-PID.map names it), and
 * prints the figure without GC, write barriers and the compiler too (what moves when a full collection or
 * a tier-up falls in the measured phase: compare that one between runs).
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "../src/client/client.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const at = args.indexOf(name);
  return at < 0 ? undefined : args.splice(at, 2)[1];
};

type Scenario = "cold" | "fresh16";

/** The client side: `--drive SCENARIO HOST:PORT N`, then exit without a farewell. */
async function drive(scenario: Scenario, server: string, n: number): Promise<void> {
  const go = async (): Promise<void> => {
    console.log("ready");
    for await (const _ of process.stdin) return;
  };
  if (scenario === "cold") {
    const client = await connect({ servers: [server], name: "server-cost", idleLockLimit: 1_000_000, connectTimeoutMs: 300_000 });
    await go();
    for (let i = 0; i < n; i++) (await client.acquire(`cold/${String(i).padStart(7, "0")}`, "write")).release();
  } else {
    // One after another: sixteen greetings at once can outlast a client's greeting deadline under valgrind.
    const clients = [];
    for (let c = 0; c < 16; c++) clients.push(await connect({ servers: [server], name: `server-cost-${c}`, connectTimeoutMs: 300_000 }));
    await go();
    await Promise.all(
      clients.map(async (client, c) => {
        for (let i = c; i < n; i += clients.length) (await client.acquire(`fresh/${String(i).padStart(7, "0")}`, "write")).release();
      }),
    );
  }
  console.log("done");
  process.exit(0);
}

function bundle(tree: string, out: string): void {
  const result = spawnSync(
    "npx",
    ["esbuild", join(tree, "src/cli/main.ts"), "--bundle", "--platform=node", "--format=esm", "--log-level=warning", "--packages=external", `--outfile=${out}`],
    { stdio: "inherit", cwd: join(HERE, "..") },
  );
  if (result.status !== 0) throw new Error("esbuild failed");
}

async function waitFor(file: string, text: string, child: { exitCode: number | null }): Promise<void> {
  for (;;) {
    if (existsSync(file) && readFileSync(file, "utf8").includes(text)) return;
    if (child.exitCode !== null) throw new Error(`server exited early: ${readFileSync(file, "utf8")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Extra node flags for the server (e.g. --perf-basic-prof, to name JIT code addresses from /tmp/perf-PID.map). */
const nodeFlags = (process.env.KEYLOCK_SERVER_NODE_FLAGS ?? "").split(" ").filter((flag) => flag !== "");

function control(what: string, pid: number): void {
  const result = spawnSync("callgrind_control", [what, String(pid)], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`callgrind_control ${what} failed: ${result.stdout} ${result.stderr}`);
}

/** One server run under callgrind: returns its total instructions (Ir). */
async function serverRun(dir: string, main: string, scenario: Scenario, n: number): Promise<number> {
  const name = `${scenario}.${n}`;
  const store = join(dir, `store.${name}`);
  const port = 20_000 + Math.floor(Math.random() * 40_000);
  const log = join(dir, `${name}.log`);
  const out = join(dir, `${name}.callgrind`);
  const fd = openSync(log, "w");
  const server = spawn(
    "valgrind",
    ["--tool=callgrind", `--callgrind-out-file=${out}`, "node", "--single-threaded", ...nodeFlags, main, "up", "--dir", store, "--port", String(port), "--fence-command", "true"],
    { stdio: ["ignore", fd, fd] },
  );
  const exited = new Promise<void>((r) => server.once("exit", () => r()));
  await waitFor(log, "serving on", server);
  // The measured phase only: counters zeroed once the clients have greeted, dumped when they are done
  // (idle time before and after, the greetings and the shutdown are left out).
  const driver = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--drive", scenario, `127.0.0.1:${port}`, String(n)], {
    stdio: ["pipe", "pipe", "inherit"],
    cwd: join(HERE, ".."),
  });
  let said = "";
  const heard = (word: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (said.includes(word)) resolve();
        else if (driver.exitCode !== null) reject(new Error(`driver exited without "${word}": ${said}`));
        else setTimeout(check, 50);
      };
      check();
    });
  driver.stdout.on("data", (chunk: Buffer) => (said += chunk.toString()));
  await heard("ready");
  control("-z", server.pid!);
  driver.stdin.write("go\n");
  await heard("done");
  control("-d", server.pid!);
  server.kill("SIGTERM");
  await exited;
  const dumps = readdirSync(dir).filter((f) => f.startsWith(`${name}.callgrind.`));
  if (dumps.length !== 1) throw new Error(`expected one dump of ${name}, found ${dumps.join(", ")}`);
  const text = readFileSync(join(dir, dumps[0]!), "utf8");
  const match = /^(?:summary|totals): (\d+)/m.exec(text);
  if (!match) throw new Error(`no totals in ${dumps[0]}`);
  return Number(match[1]);
}

/** Where an instruction went, from the function callgrind names (JIT-compiled JavaScript has no name). */
function category(fn: string): string {
  if (/^0x[0-9a-f]+$|^\?\?\?:0x/.test(fn) || fn === "???") return "JIT-compiled JavaScript (unnamed)";
  if (fn.startsWith("JS: ")) return /JS: (Builtin|BytecodeHandler|Stub|RegExp)/.test(fn) ? "V8 builtins (Map, Array, calls, allocation, ...)" : "JIT-compiled JavaScript (named)";
  if (/Scaveng|MarkCompact|Heap::|Sweeper|Marking|ConcurrentMarking|GCTracer|MemoryAllocator|heap::base|cppgc/.test(fn)) return "GC";
  if (/Builtins_(LoadIC|KeyedLoadIC|StoreIC|KeyedStoreIC|DefineKeyedOwnIC|CloneObjectIC|LoadGlobalIC|CallIC)/.test(fn)) return "V8 inline caches (unoptimised property access)";
  if (/Builtins_(Interpreter|.*Handler|BaselineOutOfLinePrologue)|Builtins_.*Baseline/.test(fn)) return "V8 interpreter / baseline";
  if (/Builtins_/.test(fn)) return "V8 builtins (Map, Array, calls, allocation, ...)";
  if (/compiler::|Turbofan|Maglev|Pipeline|interpreter::Bytecode|Parser|Scanner|AstValue/.test(fn)) return "V8 compiler / parser";
  if (/node::|StreamBase|LibuvStreamWrap|TCPWrap|AsyncWrap|WriteWrap/.test(fn)) return "Node C++ (streams, wraps, bindings)";
  if (/uv_|uv__/.test(fn)) return "libuv";
  if (/v8::internal::Runtime_|v8::internal::/.test(fn)) return "V8 runtime (C++)";
  if (/malloc|free|_int_|memcpy|memmove|memset|pthread|epoll|write|read|clock_gettime|libc/.test(fn)) return "libc (malloc, memcpy, syscalls' user side)";
  if (/sqlite/i.test(fn)) return "SQLite";
  return "other";
}

/**
 * JIT code names from node's --perf-basic-prof map of the process that wrote `file` (/tmp/perf-PID.map):
 * a lookup from a code address to "JS: name", or null when there is no map.
 */
function jitNames(file: string): ((address: number) => string | undefined) | null {
  const pid = /^pid: (\d+)/m.exec(readFileSync(file, "utf8").slice(0, 4096))?.[1];
  const mapFile = `/tmp/perf-${pid}.map`;
  if (pid === undefined || !existsSync(mapFile)) return null;
  const ranges: { start: number; end: number; name: string }[] = [];
  for (const line of readFileSync(mapFile, "utf8").split("\n")) {
    const match = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    if (match) ranges.push({ start: parseInt(match[1]!, 16), end: parseInt(match[1]!, 16) + parseInt(match[2]!, 16), name: match[3]! });
  }
  ranges.sort((a, b) => a.start - b.start);
  return (address) => {
    let lo = 0;
    let hi = ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const range = ranges[mid]!;
      if (address < range.start) hi = mid - 1;
      else if (address >= range.end) lo = mid + 1;
      else return `JS: ${range.name}`;
    }
    return undefined;
  };
}

/** Instructions per function in one callgrind file (callgrind_annotate, exclusive counts). */
function perFunction(file: string): Map<string, number> {
  const names = jitNames(file);
  const text = spawnSync("callgrind_annotate", ["--threshold=100", "--inclusive=no", "--auto=no", file], { encoding: "utf8", maxBuffer: 1 << 28 }).stdout;
  const counts = new Map<string, number>();
  let total = Infinity;
  for (const line of text.split("\n")) {
    const match = /^\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[.*\])?$/.exec(line);
    if (!match) continue;
    const value = Number(match[1]!.replaceAll(",", ""));
    if (match[2]!.includes("PROGRAM TOTALS")) total = value;
    // A dump taken mid-run charges the frames on the stack at the zeroing (main, uv_run's callers) with
    // everything as their "self" cost: those lines are the whole total again and are left out.
    if (value >= total * 0.99) continue;
    let name = match[2]!.replace(/^[^:]*:/, "") || match[2]!;
    const address = /^(?:\?\?\?:)?(0x[0-9a-f]+)$/.exec(name)?.[1];
    if (address !== undefined && names !== null) name = names(parseInt(address, 16)) ?? name;
    counts.set(name, (counts.get(name) ?? 0) + value);
  }
  return counts;
}

/** `--breakdown DIR SCENARIO N`: per grant, by category and top functions, from the kept N and 3N dumps. */
function breakdown(dir: string, scenario: string, n: number): void {
  const dump = (count: number): string => join(dir, readdirSync(dir).find((f) => f.startsWith(`${scenario}.${count}.callgrind.`))!);
  const a = perFunction(dump(n));
  const b = perFunction(dump(3 * n));
  const per = new Map<string, number>();
  for (const name of new Set([...a.keys(), ...b.keys()])) per.set(name, ((b.get(name) ?? 0) - (a.get(name) ?? 0)) / (2 * n));
  const categories = new Map<string, number>();
  let total = 0;
  for (const [name, value] of per) {
    categories.set(category(name), (categories.get(category(name)) ?? 0) + value);
    total += value;
  }
  // GC work that callgrind names outside the GC category (write barriers, scavenger helpers) and the
  // compiler move with when a collection or a tier-up falls in the phase: the rest is what compares.
  let timingDependent = 0;
  for (const [name, value] of per) {
    if (category(name) === "GC" || category(name) === "V8 compiler / parser" || /RecordWrite|WriteBarrier|IterateObjectCache|IteratePointers|Evacuat|RememberedSet|PretenuringHandler|OnMoveEvent|RootScavenge|ArrayBufferSweeper/.test(name)) {
      timingDependent += value;
    }
  }
  console.log(`${scenario}: ${Math.round(total)} instructions per grant (${Math.round(total - timingDependent)} without GC, write barriers and the compiler)`);
  for (const [name, value] of [...categories].sort((x, y) => y[1] - x[1])) console.log(`  ${String(Math.round(value)).padStart(7)}  ${name}`);
  console.log("  top functions:");
  for (const [name, value] of [...per].sort((x, y) => y[1] - x[1]).slice(0, Number(process.env.TOP ?? 30))) {
    console.log(`  ${String(Math.round(value)).padStart(7)}  ${name.slice(0, 110)}`);
  }
}

if (args[0] === "--breakdown") {
  breakdown(args[1]!, args[2]!, Number(args[3]));
  process.exit(0);
} else if (args[0] === "--drive") {
  await drive(args[1] as Scenario, args[2]!, Number(args[3]));
} else {
  const tree = resolve(option("--tree") ?? join(HERE, ".."));
  const keep = option("--keep");
  const only = option("--only");
  const n = Number(args[0] ?? 2000);
  const dir = keep ?? mkdtempSync(join(tmpdir(), "keylock-server-cost-"));
  mkdirSync(dir, { recursive: true });
  // The bundle imports its packages (better-sqlite3, commander, ...) from node_modules: give its directory this checkout's.
  if (!existsSync(join(dir, "node_modules"))) symlinkSync(resolve(HERE, "../node_modules"), join(dir, "node_modules"));
  const main = join(dir, "main.mjs");
  bundle(tree, main);
  try {
    for (const scenario of ["cold", "fresh16"] as const) {
      if (only !== undefined && only !== scenario) continue;
      const a = await serverRun(dir, main, scenario, n);
      const b = await serverRun(dir, main, scenario, 3 * n);
      console.log(`${scenario}: server instructions per grant ${Math.round((b - a) / (2 * n))} (Ir(${n}) ${a}, Ir(${3 * n}) ${b}; tree ${tree})`);
    }
  } finally {
    if (keep === undefined) rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

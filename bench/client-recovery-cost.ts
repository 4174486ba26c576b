/**
 * One client process's CPU from a server SIGKILL to its "recovered" event (the recovery row of
 * bench/run.ts, one holder process alone), for comparing trees in one sitting:
 *   node --import tsx bench/client-recovery-cost.ts [--locks N] [--runs R] [--client FILE]... [--flags "F"]
 * The parent starts `keylock up` (as bench/run.ts does: --fence-command true, a fresh store), then per run
 * and per client FILE (alternating, so old and new trees share the machine's mood): spawns the client
 * (FILE: this harness bundled by esbuild from some tree, or this .ts under tsx; default: this file), which
 * connects with idleLockLimit N+1, acquires N write locks 256 in flight and keeps them cached; then the
 * parent asks it to mark its CPU (process.cpuUsage), SIGKILLs and restarts the server; the client prints
 * its CPU (user+system ms) from the mark to its "reconnect" and to its "recovered" event, and exits.
 * Prints one line per run and the median per client FILE. KEYLOCK_RECOVERY_PROFILE=FILE: the client writes
 * a CPU profile (inspector, KEYLOCK_RECOVERY_PROFILE_US sampling, default 100 µs) of just that window to FILE;
 * KEYLOCK_RECOVERY_PROFILE_PHASE=reconnect ends it at "reconnect" instead. `--flags` adds node flags to the client
 * (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"). Bundle a tree's client with:
 *   npx esbuild bench/client-recovery-cost.ts --bundle --platform=node --format=esm \
 *     --external:better-sqlite3 --external:pg --outfile=/tmp/client-new.mjs
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connect } from "../src/client/client.js";

const args = process.argv.slice(2);

if (args[0] === "--child") {
  await child(args[1]!, Number(args[2]));
} else {
  await parent();
}

async function child(server: string, locks: number): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  const next = (): Promise<string> => new Promise((resolve) => lines.once("line", resolve));
  const client = await connect({ servers: [server], idleLockLimit: locks + 1, name: "recovery-cost" });
  const IN_FLIGHT = 256;
  for (let at = 0; at < locks; at += IN_FLIGHT) {
    const batch: Promise<void>[] = [];
    for (let i = at; i < Math.min(locks, at + IN_FLIGHT); i++) {
      batch.push(client.acquire(`held/0/${i}`, "write").then((h) => h.release()));
    }
    await Promise.all(batch);
  }
  process.stdout.write("ready\n");
  await next(); // "mark"
  // KEYLOCK_RECOVERY_PROFILE=FILE: a CPU profile of just the window (mark → recovered), with a 100 µs interval.
  const profileFile = process.env.KEYLOCK_RECOVERY_PROFILE;
  const session = profileFile === undefined ? null : new Session();
  if (session !== null) {
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.setSamplingInterval", { interval: Number(process.env.KEYLOCK_RECOVERY_PROFILE_US ?? 100) });
    await session.post("Profiler.start");
  }
  const mark = process.cpuUsage();
  const ms = (): number => {
    const c = process.cpuUsage(mark);
    return (c.user + c.system) / 1000;
  };
  let reconnectMs = 0;
  const stopProfile = async (): Promise<void> => {
    if (session === null) return;
    const { profile } = await session.post("Profiler.stop");
    writeFileSync(profileFile!, JSON.stringify(profile));
  };
  // KEYLOCK_RECOVERY_PROFILE_PHASE=reconnect: the profile ends at "reconnect" (the failed attempts and the greeting).
  const untilReconnect = process.env.KEYLOCK_RECOVERY_PROFILE_PHASE === "reconnect";
  const recovered = new Promise<number>((resolve) => {
    client.on("reconnect", () => {
      reconnectMs = ms();
      if (untilReconnect) void stopProfile();
    });
    client.on("recovered", () => resolve(ms()));
  });
  client.on("error", () => undefined);
  process.stdout.write("marked\n");
  const recoveredMs = await recovered;
  if (!untilReconnect) await stopProfile();
  process.stdout.write(`${JSON.stringify({ reconnectMs, recoveredMs })}\n`);
  await client.close().catch(() => undefined);
  process.exit(0);
}

function option(name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) if (args[i] === name && i + 1 < args.length) out.push(args[i + 1]!);
  return out;
}

function firstLine(proc: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout! });
    const onLine = (line: string): void => {
      if (pattern.test(line)) {
        rl.off("line", onLine);
        resolve(line);
      }
    };
    rl.on("line", onLine);
    proc.once("exit", (code) => reject(new Error(`exited with ${code} before ${pattern}`)));
  });
}

async function parent(): Promise<void> {
  const here = fileURLToPath(new URL(".", import.meta.url));
  const locks = Number(option("--locks")[0] ?? 10_000);
  const runs = Number(option("--runs")[0] ?? 5);
  const clientFiles = option("--client");
  if (clientFiles.length === 0) clientFiles.push(fileURLToPath(import.meta.url));
  const flags = (option("--flags")[0] ?? "").split(" ").filter((f) => f !== "");
  const dir = mkdtempSync(join(tmpdir(), "keylock-recovery-cost-"));
  const port = 20000 + Math.floor(Math.random() * 40000);
  const cli = join(here, "../src/cli/main.ts");
  let up: ChildProcess | null = null;
  const start = async (): Promise<void> => {
    up = spawn(process.execPath, ["--import", "tsx", cli, "up", "--dir", join(dir, "store"), "--port", String(port), "--fence-command", "true"], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    await firstLine(up, /^keylock: serving on/);
  };
  const kill = async (): Promise<void> => {
    const proc = up;
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGKILL");
    await exited;
  };
  const results = new Map<string, { reconnectMs: number; recoveredMs: number }[]>();
  try {
    await start();
    for (let run = 0; run < runs; run++) {
      for (const file of clientFiles) {
        const nodeArgs = file.endsWith(".ts") ? ["--import", "tsx"] : [];
        const proc = spawn(process.execPath, [...flags, ...nodeArgs, file, "--child", `127.0.0.1:${port}`, String(locks)], {
          stdio: ["pipe", "pipe", "inherit"],
        });
        // --verbose: the client's other output (e.g. --flags "--trace-opt --trace-deopt") is shown, after "marked".
        if (args.includes("--verbose")) {
          let shown = false;
          createInterface({ input: proc.stdout }).on("line", (line) => {
            if (line === "marked") shown = true;
            else if (shown && !line.startsWith("{")) console.log(`  client: ${line}`);
          });
        }
        await firstLine(proc, /^ready$/);
        const marked = firstLine(proc, /^marked$/);
        proc.stdin.write("mark\n");
        await marked;
        const result = firstLine(proc, /^\{/);
        await kill();
        await start();
        const figures = JSON.parse(await result) as { reconnectMs: number; recoveredMs: number };
        await new Promise((r) => proc.once("exit", r));
        console.log(`run ${run} ${file}: reconnect ${figures.reconnectMs.toFixed(1)} ms, recovered ${figures.recoveredMs.toFixed(1)} ms (report ${(figures.recoveredMs - figures.reconnectMs).toFixed(1)} ms)`);
        results.set(file, [...(results.get(file) ?? []), figures]);
      }
    }
  } finally {
    await kill().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  for (const [file, list] of results) {
    const rec = median(list.map((r) => r.reconnectMs));
    const all = median(list.map((r) => r.recoveredMs));
    const report = median(list.map((r) => r.recoveredMs - r.reconnectMs));
    console.log(`median ${file}: reconnect ${rec.toFixed(1)} ms, recovered ${all.toFixed(1)} ms, report ${report.toFixed(1)} ms (${runs} runs)`);
  }
}

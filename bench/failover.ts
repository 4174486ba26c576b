/**
 * The failover benchmark (DESIGN §7: "failover after a silent leader loss ≤ heartbeat timeout + 1 s;
 * after a graceful leader exit ≤ 500 ms") on a cluster from `startCluster()` (keylock/testing, src/testing).
 *
 * What is measured: from the moment the leader is sent SIGKILL (silent loss) or SIGTERM (graceful exit:
 * it stops its server, records STOP and resigns) until another member answers a greeting as leader.
 * The probe (`TestCluster.probeLeader`) greets (as an admin, so nothing is recorded) every running member
 * every LEADER_PROBE_INTERVAL_MS.
 * After each round the old leader's slot is restarted and rejoins as a follower.
 *
 * Run alone: `npx tsx bench/failover.ts [--quick] [--rounds N] [--heartbeat-timeout-ms MS] [--store URL]`
 * (`--store` as `startCluster` takes it: `sqlite:PATH`, or a postgres:// URL in which a fresh database is made);
 * `runFailoverBench` is what `npm run bench` calls.
 */
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { startCluster, type TestCluster } from "../src/testing/index.js";
import { percentile } from "./stats.js";

export interface FailoverOptions {
  quick?: boolean;
  rounds?: number;
  heartbeatTimeoutMs?: number;
  store?: string;
  members?: number;
  print?: (line: string) => void;
}

export interface FailoverResult {
  heartbeatTimeoutMs: number;
  silentMs: number[];
  gracefulMs: number[];
}

export const GRACEFUL_TARGET_MS = 500;

/** Which member answers a greeting as leader now. */
async function currentLeader(cluster: TestCluster): Promise<number> {
  const probed = await cluster.probeLeader(20_000);
  return probed.slot;
}

export async function runFailoverBench(options: FailoverOptions = {}): Promise<FailoverResult> {
  const print = options.print ?? ((line: string) => console.log(line));
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 2000;
  const rounds = options.rounds ?? (options.quick ? 2 : 5);
  const cluster = await startCluster({
    ...(options.store === undefined ? {} : { store: options.store }),
    members: options.members ?? 3,
    heartbeatTimeoutMs,
  });
  const silentMs: number[] = [];
  const gracefulMs: number[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      for (const kind of ["silent", "graceful"] as const) {
        const leader = await currentLeader(cluster);
        // Let the followers see a few heartbeats from this leader first.
        await new Promise((r) => setTimeout(r, 300));
        const t0 = performance.now();
        const exited = cluster.kill(leader, kind === "silent" ? "SIGKILL" : "SIGTERM");
        const next = await cluster.probeLeader(heartbeatTimeoutMs + 20_000, leader);
        const elapsed = next.atMs - t0;
        (kind === "silent" ? silentMs : gracefulMs).push(elapsed);
        print(`failover: ${kind.padEnd(8)} slot ${leader} -> slot ${next.slot} serving after ${elapsed.toFixed(0)} ms`);
        await exited;
        await cluster.restart(leader);
      }
    }
  } finally {
    await cluster.stop();
  }
  const silentTarget = heartbeatTimeoutMs + 1000;
  const report = (name: string, samples: number[], target: number): void => {
    const p50 = percentile(samples, 50);
    const max = Math.max(...samples);
    print(
      `failover: ${name}: p50 ${p50.toFixed(0)} ms, max ${max.toFixed(0)} ms over ${samples.length} rounds; ` +
        `target ≤ ${target} ms: ${max <= target ? "met" : "MISSED"} (p50 ${(p50 / target).toFixed(2)} × target)`,
    );
  };
  print(`failover: 3 members on ${options.store === undefined ? "SQLite" : "the given store"}, heartbeat timeout ${heartbeatTimeoutMs} ms`);
  report(`silent leader loss (SIGKILL), target heartbeat timeout + 1 s`, silentMs, silentTarget);
  report(`graceful leader exit (SIGTERM)`, gracefulMs, GRACEFUL_TARGET_MS);
  return { heartbeatTimeoutMs, silentMs, gracefulMs };
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i < 0 ? undefined : argv[i + 1];
  };
  const rounds = value("--rounds");
  const hb = value("--heartbeat-timeout-ms");
  const store = value("--store");
  runFailoverBench({
    quick: argv.includes("--quick"),
    ...(rounds === undefined ? {} : { rounds: Number(rounds) }),
    ...(hb === undefined ? {} : { heartbeatTimeoutMs: Number(hb) }),
    ...(store === undefined ? {} : { store }),
  }).then(
    () => process.exit(0),
    (error: Error) => {
      console.error(`failover bench failed: ${error.stack ?? error.message}`);
      process.exit(1);
    },
  );
}

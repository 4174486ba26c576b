/**
 * The cluster simulator (issue 5 §7, issue 10 "one driver"; DESIGN §8; reference §7, §8): members AND
 * clients in one simulated world (sim-world.ts), all of them production code. Each member is the real
 * member driver (runtime/member.ts, through election.ts `MemberCluster`): it runs the election, and as
 * leader fences its predecessors and starts the real LockServerRuntime for its term, exactly as in
 * production; its service address answers ENOTLEADER while it does not serve. Clients are real
 * LockClients (client/) given every member's address: they find the leader by ENOTLEADER answers and
 * reconnect across failovers. One durable MemoryDatabase holds slot records, client records and the
 * write-seq high-water mark. Nothing here mirrors a driver.
 *
 * Faults (faulty phase): every member fault of the election simulator (crashes and restarts with a new
 * rid, graceful exits, stalls, clock skew, lock-server failures, fence failures, store latency and
 * outages, datagram loss/duplication/delay, partitions incl. one-way) and THE isolated old leader (cut
 * off from every other member, still reachable by clients: it may keep granting until it steps down or
 * the new leader's fence kills it), plus client faults: connection resets, client↔member partitions and
 * client crashes. Some seeds are faultless.
 *
 * Checkers (sim/violation.ts `Violation`; the run stops at the first): the election simulator's
 * (one-leader-per-term, one-vote-per-term, one-serving, serve-terms-increase, slot-terms-increase,
 * forged-term-dropped, member-failed) and:
 * - exclusion: a lock granted never conflicts (core/modes.ts `compatible`) with a valid handle another
 *   live client holds on the key — across failovers too;
 * - fencing: write-mode grants on a key carry strictly increasing write seqs across every server of the
 *   run (a client's cached re-grant may repeat its own);
 * - honesty: no honest client gets EPROTO, no server logs a protocol error, nothing throws;
 * - liveness: after healing, a leader serves and every member follows it; then every live client
 *   finishes its workload.
 * Mutations (wrappers around real parts): `skip-fence` (a fence agent that reports success without
 * killing; with the isolated leader this is caught by one-serving or exclusion) and
 * `unconditional-elect` (a MemoryStore whose ELECT is not conditional).
 *
 * Guarantees: a run is a pure function of (seed, options).
 * Relies on: election.ts `MemberCluster`; connectInWorld (client/client.ts) to run a LockClient in a
 * simulated process.
 */
import { connectInWorld, type AcquireMode, type LockClient, type LockHandle } from "../src/client/client.js";
import { KeylockError } from "../src/core/errors.js";
import { carriesWriteSeq, compatible } from "../src/core/modes.js";
import { MemberCluster, SIM_SECRET, SLOT_PORT, drawMemberFaults, slotHost, type ElectionCheckerName, type ElectionMutation, type MemberFaultConfig } from "./election.js";
import type { Prng } from "./prng.js";
import { SimWorld, type SimProcess } from "./sim-world.js";
import { formatViolationReport, type ViolationReport } from "./violation.js";
import { TokenOrder } from "./token-order.js";

export const CLUSTER_MUTATIONS = ["none", "skip-fence", "unconditional-elect"] as const;
export type ClusterMutation = (typeof CLUSTER_MUTATIONS)[number];

export interface ClusterOptions {
  /** Members (slots): drawn from {1, 2, 3, 3, 3, 5} when absent. */
  readonly members?: number;
  readonly clients?: number;
  readonly mutation?: ClusterMutation;
  /** Force the isolated-old-leader fault (and a faulty seed). */
  readonly isolateLeader?: boolean;
  readonly keepTrace?: boolean;
}

export type ClusterCheckerName = ElectionCheckerName | "exclusion" | "fencing" | "honesty" | "cluster-liveness";

export interface ClusterConfig {
  readonly members: MemberFaultConfig;
  readonly faulty: boolean;
  readonly clients: number;
  readonly keys: number;
  readonly opsPerClient: number;
  readonly thinkMaxMs: number;
  readonly holdMaxMs: number;
  readonly clientResets: number;
  readonly clientCuts: number;
  readonly clientCrashes: number;
  readonly farewellChance: number;
  readonly mutation: ClusterMutation;
}

export interface ClusterRunResult {
  readonly seed: number;
  readonly config: ClusterConfig;
  readonly violation?: ViolationReport<ClusterCheckerName> & { readonly phase: "faulty" | "healed" };
  readonly events: number;
  readonly virtualUs: number;
  readonly traceHash: string;
  readonly trace?: readonly string[];
  readonly cluster: Record<string, number>;
}

const MODES: Record<AcquireMode, number> = { read: 5, write: 4, write_only: 1 };
/** After healing and convergence: how long every live client has to finish its workload. */
const CLIENTS_FINISH_US = 120_000_000;

export function drawClusterConfig(prng: Prng, options: ClusterOptions = {}): ClusterConfig {
  const count = options.members ?? prng.pick([1, 2, 3, 3, 3, 5]);
  const faulty = options.isolateLeader === true || prng.chance(0.8);
  const drawn = drawMemberFaults(prng.fork("members"), count);
  const members: MemberFaultConfig = faulty
    ? {
        ...drawn,
        faultyMs: prng.int(3_000, 10_000),
        crashPerSecond: prng.pick([0, 0.05, 0.1]),
        exitPerSecond: prng.pick([0, 0.03]),
        isolateLeaderPerSecond: options.isolateLeader === true ? 0.5 : prng.pick([0, 0.1, 0.2]),
      }
    : {
        ...drawn,
        faultyMs: prng.int(1_000, 3_000),
        lossRate: 0,
        duplicateRate: 0,
        crashPerSecond: 0,
        exitPerSecond: 0,
        stallPerSecond: 0,
        serverFailPerSecond: 0,
        fenceFailRate: 0,
        partitionPerSecond: 0,
        storeSlowPerSecond: 0,
        storeOutagePerSecond: 0,
        isolateLeaderPerSecond: 0,
      };
  return {
    members,
    faulty,
    clients: options.clients ?? prng.int(2, 4),
    keys: prng.int(1, 4),
    opsPerClient: prng.int(5, 20),
    thinkMaxMs: prng.pick([20, 200, 600]),
    holdMaxMs: prng.pick([2, 50, 200]),
    clientResets: faulty ? prng.int(0, 4) : 0,
    clientCuts: faulty ? prng.int(0, 2) : 0,
    clientCrashes: faulty ? prng.int(0, 1) : 0,
    farewellChance: prng.pick([0, 0.5, 1]),
    mutation: options.mutation ?? "none",
  };
}

interface Held {
  readonly client: number;
  readonly process: SimProcess;
  readonly mode: AcquireMode;
  readonly handle: LockHandle;
}

export async function runClusterSeed(seed: number, options: ClusterOptions = {}): Promise<ClusterRunResult> {
  const world = new SimWorld(seed, { keepTrace: options.keepTrace === true });
  const prng = world.prng.fork("cluster");
  const config = drawClusterConfig(prng.fork("config"), options);
  const stats: Record<string, number> = {
    grants: 0,
    memberFences: 0,
    isolations: 0,
    isolatedLeaderGrants: 0,
    termsThatGranted: 0,
    maxTerm: 0,
    clientResets: 0,
    clientCrashes: 0,
    farewells: 0,
  };
  const mutation: ElectionMutation = config.mutation;
  const grantTerms = new Set<bigint>();
  let isolated: string | null = null;
  const members = new MemberCluster(world, config.members, mutation, prng.fork("members"), {
    onServe: (_member, term) => {
      if (Number(term) > stats.maxTerm!) stats.maxTerm = Number(term);
    },
  });
  const violate = (checker: ClusterCheckerName, detail: string): void => members.violate(checker as ElectionCheckerName, detail);
  world.trace.add(`config ${JSON.stringify(config)}`);
  // Isolations of the serving leader: remember who, so its grants are counted.
  const isolate = members.isolateLeader.bind(members);
  members.isolateLeader = () => {
    const leader = members.serving();
    isolate();
    if (leader !== undefined && config.members.slots.length > 1) {
      isolated = leader.name;
      stats.isolations!++;
    }
  };
  const partition = members.partition.bind(members);
  members.partition = () => {
    isolated = null;
    partition();
  };
  const servers = config.members.slots.map((slot) => `${slotHost(slot)}:${SLOT_PORT}`);

  // ------------------------------------------------------------------ clients, workload, lock checkers
  const holders = new Map<string, Held[]>();
  /** Fencing: the tokens of write-mode grants per key only grow (token-order.ts). */
  const tokens = new TokenOrder();
  const clientProcesses: SimProcess[] = [];
  const finished: boolean[] = [];

  const onGrant = (held: Held, key: string): void => {
    stats.grants!++;
    const leader = members.serving();
    if (leader !== undefined) grantTerms.add(leader.member.status().term);
    if (isolated !== null && leader?.name === isolated) stats.isolatedLeaderGrants!++;
    const list = holders.get(key) ?? [];
    for (const other of list) {
      if (other.client === held.client || !other.process.alive || !other.handle.isValid) continue;
      if (!compatible(other.mode, held.mode, false)) violate("exclusion", `c${held.client} granted ${key} ${held.mode} while c${other.client} holds it ${other.mode}`);
    }
    list.push(held);
    holders.set(key, list);
    if (carriesWriteSeq(held.mode)) {
      const problem = tokens.observe(key, held.mode, held.handle.writeSeq, held.client);
      if (problem !== null) violate("fencing", problem);
    }
  };
  const onRelease = (held: Held, key: string): void => {
    const list = holders.get(key) ?? [];
    const index = list.indexOf(held);
    if (index >= 0) list.splice(index, 1);
  };

  const runClient = async (index: number): Promise<void> => {
    const process = world.spawn(`c${index}`);
    clientProcesses[index] = process;
    const cprng = prng.fork(`client ${index}`);
    let rid = cprng.u64NonZero();
    members.fenceAgent.owners.set(rid, process);
    let fenced = false;
    let client: LockClient;
    try {
      client = await connectInWorld(
        {
          servers,
          name: `c${index}`,
          connectTimeoutMs: 600_000,
          onInvalidate: () => process.sleep(cprng.int(0, 20)),
          ...(config.members.secret ? { secret: SIM_SECRET } : {}),
        },
        process,
        rid,
        {
          ridChanged: (newRid) => {
            members.fenceAgent.owners.delete(rid);
            rid = newRid;
            members.fenceAgent.owners.set(rid, process);
          },
        },
      );
    } catch (error) {
      world.trace.add(`c${index} could not connect: ${(error as Error).message}`);
      finished[index] = true;
      return;
    }
    client.on("error", (error) => {
      world.trace.add(`c${index} error: ${error.message}`);
      if (error instanceof KeylockError && error.code === "EPROTO") violate("honesty", `c${index}: ${error.message}`);
    });
    client.on("fenced", () => {
      fenced = true;
      world.trace.add(`c${index} fenced`);
    });
    for (let op = 0; op < config.opsPerClient && !fenced; op++) {
      await process.sleep(cprng.int(0, config.thinkMaxMs));
      const key = `k${cprng.int(1, config.keys)}`;
      const mode = cprng.weighted(MODES);
      let handle: LockHandle;
      try {
        handle = await client.acquire(key, mode, { nonblock: cprng.chance(0.1) });
      } catch (error) {
        world.trace.add(`c${index} acquire ${key} ${mode}: ${(error as Error).message}`);
        continue;
      }
      world.trace.add(`c${index} holds ${key} ${mode} seq=${handle.writeSeq}`);
      const held: Held = { client: index, process, mode, handle };
      onGrant(held, key);
      await process.sleep(cprng.int(0, config.holdMaxMs));
      onRelease(held, key);
      if (!handle.isReleased) handle.release();
    }
    if (!fenced && cprng.chance(config.farewellChance)) {
      try {
        await client.close();
        stats.farewells!++;
        world.trace.add(`c${index} said farewell`);
      } catch (error) {
        world.trace.add(`c${index} close: ${(error as Error).message}`);
      }
    }
    finished[index] = true;
  };

  // ------------------------------------------------------------------ client faults
  const faults = prng.fork("client faults");
  const windowUs = config.members.faultyMs * 1000;
  const at = (): number => faults.int(0, windowUs);
  const liveClients = (): SimProcess[] => clientProcesses.filter((p, n) => p?.alive && finished[n] !== true);
  const memberProcess = (): SimProcess | undefined => members.live().map((i) => i.process)[faults.int(0, Math.max(0, members.live().length - 1))];
  for (let i = 0; i < config.clientResets; i++) {
    world.at(at(), () => {
      const candidates = liveClients();
      if (members.phase !== "faulty" || candidates.length === 0) return;
      const process = faults.pick(candidates);
      stats.clientResets!++;
      for (const end of [...process.ends]) world.network.reset(end.link, "reset fault");
    });
  }
  for (let i = 0; i < config.clientCuts; i++) {
    world.at(at(), () => {
      const candidates = liveClients();
      const target = memberProcess();
      if (members.phase !== "faulty" || candidates.length === 0 || target === undefined) return;
      world.network.partition(faults.pick(candidates), target, faults.int(100, 3_000) * 1000);
    });
  }
  for (let i = 0; i < config.clientCrashes; i++) {
    world.at(at(), () => {
      const alive = liveClients();
      if (members.phase !== "faulty" || alive.length <= 1) return;
      stats.clientCrashes!++;
      faults.pick(alive).kill("crash fault");
    });
  }

  // ------------------------------------------------------------------ run
  const uncaught = (error: unknown): void => violate("honesty", `thrown into the event loop: ${String((error as Error)?.stack ?? error)}`);
  process.on("uncaughtException", uncaught);
  process.on("unhandledRejection", uncaught);
  const add = world.trace.add.bind(world.trace);
  world.trace.add = (line: string) => {
    if (/protocol error/.test(line) && /^s\d+#\d+: /.test(line)) violate("honesty", `a server logged: ${line}`);
    add(line);
  };
  try {
    await members.format();
    for (const slot of config.members.slots) world.at(prng.int(0, 200) * 1000, () => members.startInstance(slot));
    for (let i = 0; i < config.clients; i++) world.at(prng.int(0, 300) * 1000, () => void runClient(i));
    if (config.faulty) world.at(0, () => members.faultTick());
    world.at(50_000, () => members.forgeTick());
    members.events += await world.run(windowUs);
    if (world.stopped === null) {
      isolated = null;
      members.heal();
      const convergedAfterMs = await members.converge();
      if (convergedAfterMs !== undefined && members.violation === null) {
        const untilUs = world.nowUs + CLIENTS_FINISH_US;
        const check = (): void => {
          if (clientProcesses.every((p, n) => !p?.alive || finished[n] === true) && clientProcesses.length === config.clients) {
            world.stopped = "clients finished";
            return;
          }
          world.at(100_000, check);
        };
        world.at(0, check);
        members.events += await world.run(untilUs);
        if (world.stopped === "clients finished") world.stopped = null;
        for (let i = 0; i < config.clients && members.violation === null; i++) {
          const p = clientProcesses[i];
          if (p === undefined || (p.alive && finished[i] !== true)) {
            violate("cluster-liveness", `c${i} has not finished its workload ${CLIENTS_FINISH_US / 1e6} s after the members converged (${members.describe()})`);
          }
        }
      }
    } else if (members.violation === null) violate("liveness", world.stopped);
  } catch (error) {
    violate("honesty", `the run threw: ${String((error as Error)?.stack ?? error)}`);
  } finally {
    process.off("uncaughtException", uncaught);
    process.off("unhandledRejection", uncaught);
    members.end();
  }
  stats.memberFences = members.fenceAgent.fenced;
  stats.termsThatGranted = grantTerms.size;
  const v = members.violation;
  return {
    seed,
    config,
    ...(v === null ? {} : { violation: { seed, checker: v.checker, detail: v.detail, atUs: members.violationAtUs, phase: members.phase, trace: members.violationTrace } }),
    events: members.events,
    virtualUs: world.nowUs,
    traceHash: world.trace.hash,
    ...(world.trace.all === undefined ? {} : { trace: world.trace.all }),
    cluster: { ...stats, ...members.coverage },
  };
}

export function formatClusterViolation(result: ClusterRunResult, options: ClusterOptions = {}): string {
  const v = result.violation;
  if (v === undefined) return `seed ${result.seed}: no violation`;
  const shown = Object.entries(options).filter(([k]) => k !== "keepTrace");
  const flags = shown.length === 0 ? "" : ` with runClusterSeed options ${JSON.stringify(Object.fromEntries(shown))}`;
  return formatViolationReport(v, `KEYLOCK_SEED=${result.seed} node --import tsx --test test/sim/cluster.test.ts${flags}`).replace(
    /^violation of (\S+) at ([^ ]+ ms)/,
    `violation of $1 at $2 (${v.phase})`,
  );
}

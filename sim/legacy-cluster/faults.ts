/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * Fault injection (STYLE "TigerBeetle and FoundationDB": a faulty phase, then a healed phase that must
 * converge). Every seed draws its own fault profile (faultless in some seeds); the faults of a run are
 * scheduled up front at random times inside the faulty window, and the world heals at its end: no new
 * faults, fence agents succeed, partitions already drawn run out.
 *
 * Faults:
 * - server crash: the process dies (volatile state lost, store kept, store writes in flight committed or
 *   lost); its clients notice after up to `detectMaxUs` (a silent death); the member starts a new server
 *   with a greater term after a delay. Some clients come back slower than the recovery timeout
 *   (`slowReturnChance`): they are fenced with reason client_recovery.
 * - connection reset: one client's socket ends abruptly (both directions lose what is in flight, but
 *   for a prefix that may still arrive late); the client reconnects after 100 ms, or, with
 *   `longPartitionChance`, stays unreachable beyond the reconnect timeout and is fenced (client_reconnect).
 * - client crash: the process vanishes; the server waits the reconnect timeout, fences, reclaims.
 * - failure after a farewell (`farewellCrashChance`): just after a client sent its farewell the server
 *   dies (the farewell is resent to a new server, maybe during lock recovery: B5) or the client's socket
 *   resets (the farewell or its answer is lost and resent, reference §6.8).
 * - fence agent failure (server-node.ts, `fenceFailChance`): the server stops and a new one starts.
 * Relies on: world.ts and the nodes; the rare paths (batch size 1, tiny timeouts, very slow callbacks)
 * are forced through the drawn configuration (run.ts), not here.
 */
import type { Prng } from "../prng.js";
import type { World } from "./world.js";

export interface FaultConfig {
  /** False: a faultless seed (the healed phase from the start). */
  readonly enabled: boolean;
  /** Faults happen at uniform times in [0, windowUs]; the world heals at windowUs. */
  readonly windowUs: number;
  readonly serverCrashes: number;
  readonly resets: number;
  readonly clientCrashes: number;
  /** After a server crash each client notices after uniform [0, detectMaxUs]. */
  readonly detectMaxUs: number;
  /** At an abrupt end, the chance that a prefix of what is in flight still arrives (late). */
  readonly lateChance: number;
  readonly longPartitionChance: number;
  readonly slowReturnChance: number;
  readonly farewellCrashChance: number;
}

export class Faults {
  readonly #world: World;
  readonly #config: FaultConfig;
  readonly #prng: Prng;

  constructor(world: World, config: FaultConfig, prng: Prng) {
    this.#world = world;
    this.#config = config;
    this.#prng = prng;
  }

  /** Schedules every fault of the run and the heal. */
  start(): void {
    const world = this.#world;
    const cfg = this.#config;
    if (!cfg.enabled) {
      world.healed = true;
      return;
    }
    world.onFarewellSent = (client) => this.#afterFarewell(client);
    const at = (): number => this.#prng.int(0, cfg.windowUs);
    for (let i = 0; i < cfg.serverCrashes; i++) world.clock.schedule(at(), () => this.crashServer());
    for (let i = 0; i < cfg.resets; i++) world.clock.schedule(at(), () => this.#reset());
    for (let i = 0; i < cfg.clientCrashes; i++) world.clock.schedule(at(), () => this.#crashClient());
    world.clock.schedule(cfg.windowUs, () => {
      world.healed = true;
      world.trace.add("--- healed: no more faults ---");
    });
  }

  crashServer(): void {
    const world = this.#world;
    const cfg = this.#config;
    if (world.healed || world.server.status === "down") return;
    world.server.crash(cfg.detectMaxUs, cfg.lateChance);
    const recoveryUs = world.server.config.recoveryTimeoutUs;
    for (const client of world.clients) {
      if (!client.acting || !this.#prng.chance(cfg.slowReturnChance)) continue;
      const partitionUs = this.#prng.int(recoveryUs, 2 * recoveryUs);
      client.partitionUntilUs = Math.max(client.partitionUntilUs, world.clock.nowUs + partitionUs);
      world.trace.add(`${client.name} slow to come back: unreachable for ${partitionUs}us`);
    }
  }

  #reset(): void {
    const world = this.#world;
    const cfg = this.#config;
    const candidates = world.clients.filter((c) => c.acting);
    if (world.healed || candidates.length === 0) return;
    const client = this.#prng.pick(candidates);
    const reconnectUs = world.server.config.reconnectTimeoutUs;
    const partitionUs = this.#prng.chance(cfg.longPartitionChance)
      ? this.#prng.int(reconnectUs, 2 * reconnectUs)
      : 0;
    world.checkers.coverage.resets++;
    client.resetConnection(partitionUs, cfg.lateChance, 2_000);
  }

  #crashClient(): void {
    const world = this.#world;
    const candidates = world.clients.filter((c) => c.acting && !c.leaving);
    // Keep one client working, so the run still has a workload after the faults.
    if (world.healed || candidates.length <= 1) return;
    world.checkers.coverage.clientCrashes++;
    this.#prng.pick(candidates).crash("crash fault");
  }

  /** Now and then the farewell meets a failure: the server dies, or the client's socket resets (B5, §6.8 resend). */
  #afterFarewell(client: number): void {
    const world = this.#world;
    if (world.healed || !this.#prng.chance(this.#config.farewellCrashChance)) return;
    const delayUs = this.#prng.int(0, 3_000);
    if (this.#prng.chance(0.5)) {
      world.trace.add(`fault: the server will crash ${delayUs}us after c${client}'s farewell`);
      world.clock.schedule(delayUs, () => this.crashServer());
    } else {
      world.trace.add(`fault: c${client}'s connection will reset ${delayUs}us after its farewell`);
      world.clock.schedule(delayUs, () => {
        if (world.healed) return;
        world.checkers.coverage.resets++;
        world.clients[client]!.resetConnection(0, this.#config.lateChance, 2_000);
      });
    }
  }
}

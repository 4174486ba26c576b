/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * The simulated world (DESIGN §5, STYLE "TigerBeetle and FoundationDB"): a virtual clock with one event
 * queue, a network of sockets, one member running the lock server as src/runtime/server.ts composes the
 * real machines (server-node.ts), a durable store that outlives server crashes, and client nodes each
 * running the real `ClientLocks` and `ReliableSession` as src/client drives them plus a small application
 * (client-node.ts). Faults (faults.ts) crash and restart the server, reset connections, crash clients
 * and fail fence agents during a faulty phase; then the world heals and must converge.
 *
 * Guarantees:
 * - A run is a pure function of its seed and options: nothing reads a real clock or a real timer, and
 *   every random draw comes from a `Prng` fork.
 * - Effects of one machine call are carried out in the order returned (the machines require it), and
 *   the world never re-enters a machine while carrying out its effects: application work that calls a
 *   machine again (release, abort, invalidationDone) is always a separately scheduled event.
 * - Every step that changes anything appends one line to the `Trace`; the checkers see every message
 *   and every effect where it is decided or delivered (see checkers.ts), and `afterEvent` runs after
 *   every event.
 * - The fence agent (`fenceAgentSucceeded`) either kills the client (the `local` agent: the process
 *   stops acting) or, in seeds that model a fence command that does not kill, cuts it off the shared
 *   resource (its application's reads and writes fail) while the process keeps running; such a client
 *   must learn EFENCED when it reconnects and stop using its handles.
 *
 * Relies on: the machines being deterministic (no clock, no randomness: DESIGN §5), and Map iteration
 * being insertion-ordered (it is, in JavaScript).
 */
import { InvariantError } from "../../src/core/errors.js";
import { ridToHex, type Key } from "../../src/core/keys.js";
import type { Rid } from "../../src/core/lock-messages.js";
import { Clock, Trace, type CallbackConfig, type Mutation, type Resource } from "./base.js";
import type { Checkers } from "./checkers.js";
import { ClientNode } from "./client-node.js";
import { Network, type NetworkConfig } from "./network.js";
import type { Prng } from "../prng.js";
import { ServerNode, type ServerConfig } from "./server-node.js";

export {
  MUTATIONS,
  MachineThrew,
  SimAbort,
  formatUs,
  fmtDown,
  fmtKey,
  fmtUp,
  isMutation,
  Clock,
  Trace,
  type CallbackConfig,
  type DownMessage,
  type Mutation,
  type Resource,
  type UpMessage,
  type Waiter,
  type WaiterState,
} from "./base.js";
export type { NetworkConfig } from "./network.js";
export { ClientNode } from "./client-node.js";
export { ServerNode, type ServerConfig } from "./server-node.js";

export interface WorldConfig {
  readonly clients: number;
  readonly idleLockLimit: number;
  readonly network: NetworkConfig;
  readonly callback: CallbackConfig;
  readonly server: ServerConfig;
  /** Locks per recovery batch a client sends. */
  readonly recoverBatchMax: number;
  readonly mutation: Mutation;
  readonly keepTrace: boolean;
}

export class World {
  readonly clock = new Clock();
  readonly trace: Trace;
  readonly network: Network;
  readonly clients: ClientNode[] = [];
  readonly server: ServerNode;
  readonly checkers: Checkers;
  readonly mutation: Mutation;
  readonly resources = new Map<Key, Resource>();
  /** The faulty phase is over: no new faults, fence agents succeed. */
  healed = false;
  /** Hook for faults.ts: a client just sent its farewell. */
  onFarewellSent: (client: number) => void = () => {};
  readonly #ridToIndex = new Map<Rid, number>();
  #started = false;
  #firstUp = false;

  constructor(config: WorldConfig, prng: Prng, makeCheckers: (world: World) => Checkers) {
    this.mutation = config.mutation;
    this.trace = new Trace(this.clock, config.keepTrace);
    this.network = new Network(this.clock, prng.fork("network"), config.network);
    const ridPrng = prng.fork("rids");
    for (let i = 0; i < config.clients; i++) {
      let rid = ridPrng.u64NonZero();
      while (this.#ridToIndex.has(rid)) rid = ridPrng.u64NonZero();
      this.#ridToIndex.set(rid, i);
      this.clients.push(
        new ClientNode(
          this,
          i,
          rid,
          {
            idleLockLimit: config.idleLockLimit,
            callback: config.callback,
            recoverBatchMax: config.recoverBatchMax,
          },
          prng.fork(`callbacks.${i}`),
        ),
      );
    }
    this.checkers = makeCheckers(this);
    this.server = new ServerNode(this, config.server, prng.fork("server"));
    this.network.deliverUp = (socket, packet) => {
      if (packet.kind === "greeting") this.server.receiveGreeting(socket, packet.greeting);
      else this.server.receiveMessage(socket, packet.message);
    };
    this.network.deliverDown = (socket, packet) => this.clients[socket.client]!.receive(socket, packet);
    this.network.noticeClosed = (socket, side) => {
      if (side === "client") this.clients[socket.client]!.socketClosed(socket);
      else this.server.socketClosed(socket);
    };
    for (const c of this.clients) this.trace.add(`${c.name} rid=${ridToHex(c.rid)}`);
  }

  /** The first server starts (on a freshly formatted store); clients connect once it is up. */
  start(): void {
    if (this.#started) throw new InvariantError("sim: world started twice");
    this.#started = true;
    this.server.start();
  }

  /** The server node reports it is accepting connections. */
  serverUp(): void {
    if (this.#firstUp) return;
    this.#firstUp = true;
    for (const client of this.clients) client.connect();
  }

  clientIndexOf(rid: Rid): number {
    const index = this.#ridToIndex.get(rid);
    if (index === undefined) throw new InvariantError(`sim: server addressed unknown rid ${ridToHex(rid)}`);
    return index;
  }

  resource(key: Key): Resource {
    let r = this.resources.get(key);
    if (r === undefined) {
      r = { version: 0, maxToken: 0n, maxWriteToken: 0n };
      this.resources.set(key, r);
    }
    return r;
  }

  /**
   * The fence agent's command exited 0 for client `index`, whichever server asked (an agent outlives the
   * server that started it). `kills`: the local agent, the process is gone (a dead one stays dead, as
   * "exit 0 when already gone"). Otherwise the client is cut off the shared resource and keeps running.
   */
  fenceAgentSucceeded(index: number, kills: boolean): void {
    const client = this.clients[index]!;
    this.trace.add(`fence agent: ${client.name} fenced (${kills ? "killed" : "cut off, not killed"})`);
    if (kills) {
      if (client.alive) this.checkers.coverage.fenceKills++;
      client.crash("killed by the fence agent");
    } else {
      if (client.alive && !client.cutOff) this.checkers.coverage.fenceCutOffs++;
      client.cutOffByFence();
    }
  }

  afterFarewellSent(index: number): void {
    this.onFarewellSent(index);
  }
}

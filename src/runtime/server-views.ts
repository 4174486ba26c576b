/**
 * What the lock server shows of itself (runtime/server.ts): the admin connection's answers (`keylock
 * status`, `locks`, `stats`; `ServerViews.onAdmin`), the status page's view, the server's metric gauges,
 * and who may ask (`adminRefusal`). Read-only over the server's parts (the lock table, the server
 * machine's registry, the driver's sessions).
 *
 * Guarantees:
 * - Bounded whatever the table's size: lock and stats pages come from the lock table's ordered key index
 *   (O(log n + page), never a sort or scan of the table) and fit about ADMIN_PAGE_BYTES_MAX bytes; the
 *   status answer lists at most STATUS_CLIENTS_MAX clients (lowest rids first) and STATUS_FENCES_MAX fences
 *   (oldest first), with totals counting all of them (docs/protocol.md "Admin queries"); the status page
 *   lists at most `clientsMax` clients and the `hotMax` hottest keys from the bounded hot-key summary;
 *   queued requests are summed over the clients' loads (no scan of the table).
 * - An admin connection gets an answer to each admin query, in order; anything else there is EPROTO and
 *   closes that connection only.
 * - Nothing here changes the server.
 * Relies on: `statsOf` answering for every key `keysAfter` yields; the source's fields staying the server's
 * own for its life (the maps are read live, never copied).
 */
import { performance } from "node:perf_hooks";
import type { AdminLockRow, AdminMember, AdminPage, AdminStatsRow, AdminStatus } from "../protocol/admin.js";
import { ADMIN_PAGE_ROWS_MAX, Command, WireError, type Message } from "../protocol/messages.js";
import { keyToBytes, keyToHex, keyToText, ridToHex, type Key } from "../core/keys.js";
import type { LockServer } from "../core/lock-server.js";
import type { ServerMachine, SessionView } from "../core/server-machine.js";
import { ADMIN_PAGE_BYTES_MAX, STATUS_CLIENTS_MAX, STATUS_FENCES_MAX } from "../core/limits.js";
import { isLoopbackAddress } from "../io/fence.js";
import type { MessageConnection } from "../io/world.js";
import type { HotKeyRow, HotKeys } from "./hot-keys.js";
import type { ServerGauges } from "./metrics.js";

/** What the views read of a running server. */
export interface ServerView {
  readonly term: bigint;
  readonly slot: number;
  readonly address: string;
  /** The member layer's list (members, roles), if it gives one. */
  readonly members: AdminMember[] | undefined;
  /** The driver's client sessions: the machine's view of each, and whether a connection is attached. */
  readonly sessions: Iterable<{ readonly rid: bigint; readonly state: SessionView; readonly connection: unknown }>;
  readonly machine: ServerMachine;
  readonly locks: LockServer;
  readonly hotKeys: HotKeys;
  readonly writeSeq: bigint;
  readonly queuedRequests: () => number;
  readonly upForMs: number;
  readonly recoveryTimeoutMs: number;
}

/** What `ServerViews` reads of a running server, live. */
export interface ViewSource {
  readonly term: bigint;
  readonly slot: number;
  readonly address: string;
  readonly sessions: ReadonlyMap<bigint, { readonly rid: bigint; readonly state: SessionView; readonly connection: unknown }>;
  readonly machine: ServerMachine;
  readonly locks: LockServer;
  readonly hotKeys: HotKeys;
  /** performance.now() when the server was made. */
  readonly startedAtMs: number;
  readonly recoveryTimeoutMs: number;
  /** The member layer's list (members, roles), if it gives one. */
  members(): AdminMember[] | undefined;
  writeSeq(): bigint;
  /** Refuses a message (answering it if it is a request) and closes the connection. */
  refuse(connection: MessageConnection, message: Message, error: WireError, reason: string): void;
}

/** One server's admin answers, status views and gauges. */
export class ServerViews {
  /** The server's gauges, read by its metrics at scrape time (runtime/metrics.ts). */
  readonly gauges: ServerGauges;

  constructor(private readonly source: ViewSource) {
    this.gauges = {
      get term() {
        return source.term;
      },
      get recovering() {
        return source.machine.recovering;
      },
      get clientCount() {
        return source.sessions.size;
      },
      get keyCount() {
        return source.locks.keyCount;
      },
      get entryCount() {
        return source.locks.entryCount;
      },
      get queuedRequests() {
        return queuedRequestsOf(source);
      },
      get writeSeq() {
        return source.writeSeq();
      },
      get writeSeqWaitingKeys() {
        return source.locks.keysWaitingForWriteSeqs;
      },
    };
  }

  /** A message on an admin connection: an admin query is answered, anything else closes the connection. */
  onAdmin(connection: MessageConnection, message: Message): void {
    const { header, payload } = message;
    if (payload.kind !== "admin-request") {
      this.source.refuse(connection, message, WireError.EPROTO, `unexpected ${payload.kind} message on an admin connection`);
      return;
    }
    const body = adminAnswer(header.cmd, payload.body, this.source.locks, () => this.status());
    if (body === undefined) {
      this.source.refuse(connection, message, WireError.EPROTO, `command ${header.cmd} is not an admin query`);
      return;
    }
    connection.send({
      header: { seq: header.seq, ack: header.seq, id: header.id, cmd: header.cmd, response: true, error: WireError.NONE },
      payload: { kind: "admin-response", body },
    });
  }

  /** The status answer (`keylock status`). */
  status(): AdminStatus {
    return statusOf(this.view());
  }

  /** What the status page shows of this server. */
  operatorStatus(clientsMax: number, hotMax: number): OperatorStatus {
    return operatorStatusOf(this.view(), clientsMax, hotMax);
  }

  private view(): ServerView {
    const source = this.source;
    return {
      term: source.term,
      slot: source.slot,
      address: source.address,
      members: source.members(),
      sessions: source.sessions.values(),
      machine: source.machine,
      locks: source.locks,
      hotKeys: source.hotKeys,
      writeSeq: source.writeSeq(),
      queuedRequests: () => queuedRequestsOf(source),
      upForMs: Math.round(performance.now() - source.startedAtMs),
      recoveryTimeoutMs: source.recoveryTimeoutMs,
    };
  }
}

/** Lock requests waiting for their grant, summed over the clients (no scan of the table). */
function queuedRequestsOf(source: Pick<ViewSource, "sessions" | "locks">): number {
  let queued = 0;
  for (const rid of source.sessions.keys()) queued += source.locks.clientLoad(rid).requests;
  return queued;
}

/** The answer to an admin query, or undefined when `cmd` is not one. */
export function adminAnswer(
  cmd: Command,
  page: { after: Key | null; limit: number },
  locks: LockServer,
  status: () => AdminStatus,
): AdminStatus | AdminPage<AdminLockRow> | AdminPage<AdminStatsRow> | undefined {
  const limit = Math.min(Math.max(1, page.limit), ADMIN_PAGE_ROWS_MAX);
  switch (cmd) {
    case Command.ADMIN_STATUS:
      return status();
    case Command.ADMIN_LOCKS:
      // Pages come from the table's ordered key index: O(log n + page), never a sort of the table.
      return pageRows(locks.keysAfter(page.after), limit, (key) =>
        locks.entriesOf(key).map((row) => ({ key: keyToBytes(row.key), mode: row.mode, state: row.state, rid: ridToHex(row.rid) })),
      );
    case Command.ADMIN_STATS:
      return pageRows(locks.keysAfter(page.after), limit, (key) => {
        const row = locks.statsOf(key)!;
        return [{ key: keyToBytes(row.key), requests: row.requests, invalidations: row.invalidations, responses: row.responses, grants: row.grants }];
      });
    default:
      return undefined;
  }
}

function liveSessions(view: ServerView): { rid: bigint; state: SessionView; connection: unknown }[] {
  return [...view.sessions].filter((s) => !s.state.farewellDone);
}

/** The status answer. Not paged, so bounded to fit a frame whatever the number of clients. */
export function statusOf(view: ServerView): AdminStatus {
  const clients = liveSessions(view);
  const fences = view.machine.fences();
  return {
    term: view.term,
    leader: { slot: view.slot, address: view.address },
    members: view.members ?? [{ slot: view.slot, address: view.address, role: "leader" }],
    clients: lowest(clients, STATUS_CLIENTS_MAX, (s) => s.rid).map((s) => ({
      rid: ridToHex(s.rid),
      name: s.state.name,
      address: s.state.address,
      connected: s.connection !== null,
    })),
    clientsTotal: clients.length,
    recovering: view.machine.recovering,
    fences: fences.slice(0, STATUS_FENCES_MAX).map((f) => ({ rid: ridToHex(f.rid), address: f.address, reason: f.reason, state: f.state })),
    fencesTotal: fences.length,
  };
}

/**
 * What the status page shows of this server (runtime/status-page.ts): at most `clientsMax` clients (lowest
 * rids) with the lock entries each holds, the fences, and the `hotMax` hottest keys (never a table scan).
 */
export function operatorStatusOf(view: ServerView, clientsMax: number, hotMax: number): OperatorStatus {
  const clients = liveSessions(view);
  const fences = view.machine.fences();
  return {
    term: view.term.toString(),
    recovering: view.machine.recovering,
    recovery: { clients: view.machine.recoveryTotal, pending: view.machine.recoveryPending, timeoutMs: view.recoveryTimeoutMs },
    upForMs: view.upForMs,
    clients: lowest(clients, clientsMax, (s) => s.rid).map((s) => ({
      rid: ridToHex(s.rid),
      name: s.state.name,
      address: s.state.address,
      connected: s.connection !== null,
      locks: view.locks.clientLoad(s.rid).entries,
      waiting: view.locks.clientLoad(s.rid).requests,
    })),
    clientsTotal: clients.length,
    fences: fences.slice(0, STATUS_FENCES_MAX).map((f) => ({ rid: ridToHex(f.rid), address: f.address, reason: f.reason, state: f.state })),
    fencesTotal: fences.length,
    hottest: view.hotKeys.top(hotMax).map((row) => hotRow(row)),
    table: { keys: view.locks.keyCount, entries: view.locks.entryCount, queuedRequests: view.queuedRequests(), writeSeq: view.writeSeq.toString() },
  };
}

/** The lock server part of the status page (`GET /status.json`); see `operatorStatus`. */
export interface OperatorStatus {
  term: string;
  recovering: boolean;
  recovery: { clients: number; pending: number; timeoutMs: number };
  upForMs: number;
  clients: { rid: string; name: string; address: string; connected: boolean; locks: number; waiting: number }[];
  clientsTotal: number;
  fences: { rid: string; address: string; reason: string; state: string }[];
  fencesTotal: number;
  hottest: { key: string; keyHex: string; total: number; error: number; requests: number; invalidations: number; grants: number; responses: number }[];
  table: { keys: number; entries: number; queuedRequests: number; writeSeq: string };
}

function hotRow(row: HotKeyRow): OperatorStatus["hottest"][number] {
  const { key, ...counts } = row;
  return { key: keyToText(key), keyHex: keyToHex(key), ...counts };
}

/**
 * Admin pages: the rows of the keys after the cursor, in key order, at most `limit` rows and about
 * ADMIN_PAGE_BYTES_MAX bytes of keys. A page never splits a key (a key has one row per client at most), so
 * "after key" resumes exactly; it always holds at least one key when one is left.
 */
function pageRows<Row>(keys: Iterator<Key>, limit: number, rowsOf: (key: Key) => Row[]): AdminPage<Row> {
  const rows: Row[] = [];
  let bytes = 0;
  for (let next = keys.next(); next.done !== true; next = keys.next()) {
    const key = next.value;
    if (rows.length > 0 && (rows.length >= limit || bytes + key.length + 64 > ADMIN_PAGE_BYTES_MAX)) return { rows, more: true };
    for (const row of rowsOf(key)) {
      rows.push(row);
      bytes += key.length + 64;
    }
  }
  return { rows, more: false };
}

/** The `count` items with the lowest ids, in id order (all of them when there are fewer). */
function lowest<T>(items: T[], count: number, id: (item: T) => bigint): T[] {
  return items.sort((a, b) => (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0)).slice(0, count);
}

/**
 * DESIGN §9: admin queries list lock names and clients. With a cluster secret the greeting proof already
 * gates them; without one they are served on loopback only, or to a client whose TLS certificate the member
 * verified (--tls-client-auth). Returns why a greeting is refused, or undefined.
 */
export function adminRefusal(peer: { address: string; hasSecret: boolean; tlsClientVerified: boolean }): string | undefined {
  if (peer.hasSecret || peer.tlsClientVerified || (peer.address !== "unknown" && isLoopbackAddress(peer.address))) return undefined;
  return (
    `admin queries from ${peer.address} refused: a cluster without a secret serves them on loopback only ` +
    `(format the cluster with --secret-file, or require client certificates with --tls-client-auth)`
  );
}

/**
 * Which process on this machine owns the other end of a TCP connection (DESIGN §9 "Fencing"): the
 * `local` fence agent kills only a process the server found this way, never a pid a peer names.
 *
 * Guarantees:
 * - `findPeerProcess(socket)` looks at the kernel's view, not at anything the peer sent: it finds the
 *   socket in /proc/net/tcp or /proc/net/tcp6 whose local address:port is the peer's address:port as we
 *   see it and whose remote address:port is ours, takes its inode and the uid that created it, and
 *   looks through /proc/[pid]/fd/* of that uid's processes for `socket:[inode]`. Only a process running
 *   as the socket's creator is ever answered, so whatever a peer makes us find is a process its own user
 *   could kill anyway: no peer can turn a fence into killing someone else's process. This process
 *   itself is answered only when no other holds the socket (an in-process client). Anything else — the
 *   peer is on another machine, it already closed its end, its process is unreadable, the lookup ran
 *   out of time, the system has no /proc — answers `process: null` with the reason.
 * - A found process is named by its pid and a start token `HOST MACHINE_ID BOOT_ID START_TICKS`
 *   (hostname, /etc/machine-id or "-", /proc/sys/kernel/random/boot_id, field 22 of /proc/[pid]/stat).
 *   `sameProcess(pid, start)` later tells whether that very process still runs: a reused pid, a reboot
 *   or a zombie is "gone"; a token from another machine is "elsewhere" (we cannot tell).
 * - Bounded: the socket tables are read (synchronously: procfs answers from memory) once for all the
 *   lookups queued by then, so a reconnection storm reads them a few times, not once per client. Hinted
 *   pids (the caller's, e.g. a client record's, then the last few owners found) are tried first;
 *   otherwise the lookup joins one shared scan over every process, which runs synchronously in slices
 *   of at most PEER_PROCESS_SLICE_MS, yielding to the event loop between them, so a storm of new
 *   clients costs about one scan, not one per client. Each lookup gives up after
 *   `timeoutMs` (default PEER_PROCESS_LOOKUP_MS_MAX). Errors reading /proc (processes vanish, other
 *   users' fds are unreadable) are tolerated. When several processes hold the socket (a fork), the
 *   first found is answered.
 *
 * Relies on: Linux procfs (elsewhere every lookup answers null); this process and the peer sharing a
 * network and pid namespace (a peer in another container is not found); hostnames (with machine ids)
 * telling machines apart when several share one store.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { endianness, hostname } from "node:os";
import { PEER_PROCESS_LOOKUP_MS_MAX } from "../core/limits.js";

/** The fd scan holds the event loop for at most this long at a time. */
export const PEER_PROCESS_SLICE_MS = 4;

/** A process found on this machine: its pid and what tells it apart from any later process with that pid. */
export interface PeerProcess {
  pid: number;
  /** `HOST MACHINE_ID BOOT_ID START_TICKS`; compare with `sameProcess`. */
  start: string;
}

export type PeerProcessLookup = { process: PeerProcess; reason?: undefined } | { process: null; reason: string };

/** The addresses of an accepted socket, as node:net reports them. */
export interface SocketEnds {
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
}

// ---------------------------------------------------------------------------------------------------
// Process identity

function readTrimmed(path: string): string | null {
  try {
    const text = readFileSync(path, "utf8").trim();
    return text === "" ? null : text;
  } catch {
    return null;
  }
}

let hostIdentity: string | null | undefined;

/** `HOST MACHINE_ID BOOT_ID` of this machine and boot, or null without /proc. Cached (it cannot change). */
function thisHost(): string | null {
  if (hostIdentity !== undefined) return hostIdentity;
  const boot = readTrimmed("/proc/sys/kernel/random/boot_id");
  const machine = readTrimmed("/etc/machine-id") ?? readTrimmed("/var/lib/dbus/machine-id") ?? "-";
  hostIdentity = boot === null ? null : [hostname(), machine, boot].map((part) => part.replace(/\s+/g, "_")).join(" ");
  return hostIdentity;
}

interface ProcStat {
  state: string;
  startTicks: string;
}

/** State and start time (clock ticks since boot) from /proc/[pid]/stat, or null if there is no such process. */
function readProcStat(pid: number): ProcStat | null {
  const text = readTrimmed(`/proc/${pid}/stat`);
  if (text === null) return null;
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so fields are counted after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = fields[0];
  const startTicks = fields[19]; // field 22 of the whole line
  if (state === undefined || startTicks === undefined || !/^\d+$/.test(startTicks)) return null;
  return { state, startTicks };
}

/** The start token of a running process on this machine, or null (no such process, or no /proc). */
export function processStart(pid: number): string | null {
  const host = thisHost();
  const stat = readProcStat(pid);
  return host === null || stat === null ? null : `${host} ${stat.startTicks}`;
}

/** This process, as a member records itself in its slot events; null where /proc is missing. */
export function ownProcess(): PeerProcess | null {
  const start = processStart(process.pid);
  return start === null ? null : { pid: process.pid, start };
}

/**
 * Whether the process `pid` that had start token `start` still runs: "running"; "gone" (no such pid, a
 * later process reusing the pid, a zombie, or the machine rebooted since); or "elsewhere" when the token
 * names another machine or cannot be read (nothing can be said from here).
 */
export function sameProcess(pid: number, start: string): "running" | "gone" | "elsewhere" {
  const parts = start.split(" ");
  const host = thisHost();
  if (parts.length !== 4 || host === null) return "elsewhere";
  const [name, machine, boot] = host.split(" ");
  if (parts[0] !== name || parts[1] !== machine) return "elsewhere";
  if (parts[2] !== boot) return "gone"; // this machine rebooted since: every process of that boot is gone
  const stat = readProcStat(pid);
  if (stat === null || stat.startTicks !== parts[3]) return "gone";
  return stat.state === "Z" || stat.state === "X" ? "gone" : "running";
}

// ---------------------------------------------------------------------------------------------------
// /proc/net/tcp

/** "127.0.0.1", "::ffff:127.0.0.1" and "::1" in one spelling: IPv4-mapped addresses as IPv4, lower case. */
function canonicalHost(address: string): string {
  const bare = address.replace(/%.*$/, "").toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  return mapped ? mapped[1]! : bare;
}

const littleEndian = endianness() === "LE";

/** A /proc/net/tcp{,6} "ADDR:PORT" (address words in host byte order, port big-endian hex) → "host port". */
function procEndpoint(field: string): string | null {
  const [hex, portHex] = field.split(":");
  if (hex === undefined || portHex === undefined || !/^[0-9A-Fa-f]+$/.test(hex) || hex.length % 8 !== 0) return null;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = [0, 2, 4, 6].map((i) => parseInt(hex.slice(w + i, w + i + 2), 16));
    bytes.push(...(littleEndian ? word.reverse() : word));
  }
  let host: string;
  if (bytes.length === 4) host = bytes.join(".");
  else if (bytes.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    host = groups.join(":");
    // Compare in one spelling: the fully expanded one for IPv6, dotted quad for IPv4-mapped.
    if (groups.slice(0, 5).every((g) => g === "0") && groups[5] === "ffff") host = bytes.slice(12).join(".");
  } else return null;
  return `${host} ${parseInt(portHex, 16)}`;
}

/** Expands an IPv6 address to eight unpadded hex groups (the spelling procEndpoint produces). */
function expandedHost(address: string): string {
  const host = canonicalHost(address);
  if (!host.includes(":")) return host;
  const [head, tail] = host.split("::") as [string, string | undefined];
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const fill = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill("0");
  return [...left, ...fill, ...right].map((g) => parseInt(g, 16).toString(16)).join(":");
}

interface SocketRow {
  inode: string;
  /** The effective uid of the process that created the socket. */
  uid: number;
}

/** Sockets whose local end is `peer` and remote end is `self` ("host port"); inode 0 (orphaned) excluded. */
function matchingSockets(tables: string[], peer: string, self: string): SocketRow[] {
  const out: SocketRow[] = [];
  for (const table of tables) {
    for (const line of table.split("\n")) {
      const fields = line.trim().split(/\s+/);
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
      if (fields.length < 10 || fields[0] === "sl") continue;
      const inode = fields[9]!;
      if (inode === "0" || !/^\d+$/.test(inode) || !/^\d+$/.test(fields[7]!)) continue; // 0: its process closed it
      if (procEndpoint(fields[1]!) === peer && procEndpoint(fields[2]!) === self) out.push({ inode, uid: Number(fields[7]) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// The fd scan

/** Pids that owned connections lately: checked first (a client reconnecting, one process with many clients). */
const recentOwners: number[] = [];
const RECENT_OWNERS_MAX = 64;
/** How many of them a lookup tries before it joins the scan (each try reads that process's fd list). */
const RECENT_OWNERS_TRIED = 8;

function remember(pid: number): void {
  const at = recentOwners.indexOf(pid);
  if (at >= 0) recentOwners.splice(at, 1);
  recentOwners.unshift(pid);
  if (recentOwners.length > RECENT_OWNERS_MAX) recentOwners.pop();
}

/** The uid owning /proc/[pid] (the process's effective uid), or null if it is gone. */
function processUid(pid: number): number | null {
  try {
    return statSync(`/proc/${pid}`).uid;
  } catch {
    return null;
  }
}

/** Whether process `pid` holds `link` ("socket:[inode]") among its fds; unreadable or gone → false. */
function holds(pid: number, link: string): boolean {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false; // gone, or another user's: not ours to judge
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === link) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}

/**
 * One lookup waiting for the shared scan. The scan walks the pids listed at the start of each round;
 * a lookup has seen every process that could hold its socket once a round that began after it joined
 * has ended (its `lastRound`): earlier rounds may have listed pids before the client's process existed.
 */
interface Wanted {
  link: string;
  uid: number;
  /** performance.now() by which this lookup must be answered. */
  deadline: number;
  lastRound: number;
  done: (result: PeerProcessLookup) => void;
}

const wanted = new Set<Wanted>();
let pids: number[] = [];
let cursor = 0;
let round = 0;
let scanning = false;

function listPids(): number[] {
  try {
    return readdirSync("/proc")
      .filter((n) => /^\d+$/.test(n))
      .map(Number)
      .filter((p) => p !== process.pid)
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

function answer(w: Wanted, result: PeerProcessLookup): void {
  wanted.delete(w);
  w.done(result);
}

/** A found owner, confirmed by its start token (it may have ended meanwhile). */
function found(w: Wanted, pid: number): void {
  const start = processStart(pid);
  if (start === null) {
    answer(w, { process: null, reason: `process ${pid} ended during the lookup` });
    return;
  }
  remember(pid);
  answer(w, { process: { pid, start } });
}

/** Nothing else holds it: an in-process client, or none we can see. */
function exhausted(w: Wanted): void {
  if (processUid(process.pid) === w.uid && holds(process.pid, w.link)) found(w, process.pid);
  else answer(w, { process: null, reason: "no process of the socket's user that we can inspect holds its end (another user's, or it just closed it)" });
}

function scan(): void {
  const sliceEnd = performance.now() + PEER_PROCESS_SLICE_MS;
  while (wanted.size > 0) {
    if (cursor >= pids.length) {
      for (const w of wanted) if (w.lastRound <= round) exhausted(w);
      if (wanted.size === 0) break;
      pids = listPids();
      cursor = 0;
      round++;
    }
    const pid = pids[cursor++]!;
    const uid = processUid(pid);
    if (uid !== null) {
      for (const w of wanted) {
        if (w.uid === uid && holds(pid, w.link)) found(w, pid);
      }
    }
    const now = performance.now();
    for (const w of wanted) {
      if (now > w.deadline) answer(w, { process: null, reason: "the lookup ran out of time" });
    }
    if (now > sliceEnd && wanted.size > 0) {
      setImmediate(scan);
      return;
    }
  }
  scanning = false;
}

interface Request {
  peer: string;
  self: string;
  hints: readonly number[];
  deadline: number;
  done: (result: PeerProcessLookup) => void;
}

/** Lookups waiting for the next read of the socket tables: one read serves every lookup queued by then. */
let tableQueue: Request[] = [];

function readTables(): { tables: string[]; missing: string[] } {
  const tables: string[] = [];
  const missing: string[] = [];
  for (const path of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    try {
      tables.push(readFileSync(path, "utf8"));
    } catch (error) {
      missing.push(`${path}: ${(error as Error).message}`);
    }
  }
  return { tables, missing };
}

function tablePass(): void {
  const batch = tableQueue;
  tableQueue = [];
  const { tables, missing } = readTables();
  for (const request of batch) {
    if (tables.length === 0) {
      request.done({ process: null, reason: `this system does not show its sockets (${missing.join("; ")})` });
      continue;
    }
    const sockets = matchingSockets(tables, request.peer, request.self);
    if (sockets.length === 0) {
      request.done({ process: null, reason: "its end is not a socket on this machine (another machine, or already closed)" });
    } else if (sockets.length > 1) {
      request.done({ process: null, reason: "several sockets match its address" });
    } else {
      lookFor(request, sockets[0]!);
    }
  }
}

/** Tries the hinted pids, then joins the shared scan. */
function lookFor(request: Request, socket: SocketRow): void {
  const link = `socket:[${socket.inode}]`;
  for (const pid of [...request.hints, ...recentOwners.slice(0, RECENT_OWNERS_TRIED)]) {
    if (pid !== process.pid && processUid(pid) === socket.uid && holds(pid, link)) {
      const start = processStart(pid);
      if (start !== null) {
        remember(pid);
        request.done({ process: { pid, start } });
        return;
      }
    }
  }
  const w = { link, uid: socket.uid, deadline: request.deadline, done: request.done };
  if (scanning) {
    // Looked for in the rest of this round, and in the whole next one.
    wanted.add({ ...w, lastRound: round + 1 });
    return;
  }
  scanning = true;
  pids = listPids();
  cursor = 0;
  round++;
  wanted.add({ ...w, lastRound: round });
  setImmediate(scan);
}

/**
 * The process on this machine that owns the peer's end of `socket` (a connection we accepted or made),
 * found from /proc; `process: null` with the reason when there is none we can name. Never rejects.
 * Only processes running as the user who created the socket are considered: whatever is found, its user
 * could have killed it anyway, so no peer gets a process killed that it could not kill itself.
 * `hints` are pids worth trying first (a client record's pid).
 */
export function findPeerProcess(
  socket: SocketEnds,
  options: { timeoutMs?: number; hints?: readonly number[] } = {},
): Promise<PeerProcessLookup> {
  const deadline = performance.now() + (options.timeoutMs ?? PEER_PROCESS_LOOKUP_MS_MAX);
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) {
    return Promise.resolve({ process: null, reason: "the connection is already closed" });
  }
  return new Promise((resolve) => {
    tableQueue.push({
      peer: `${expandedHost(remoteAddress)} ${remotePort}`,
      self: `${expandedHost(localAddress)} ${localPort}`,
      hints: options.hints ?? [],
      deadline,
      done: resolve,
    });
    if (tableQueue.length === 1) setImmediate(tablePass);
  });
}

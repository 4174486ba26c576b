/**
 * Which process on this machine owns the other end of a TCP connection (DESIGN §9 "Fencing"): the
 * `local` fence agent kills only a process the server found this way, never a pid a peer names.
 *
 * Guarantees:
 * - `findPeerProcess(socket)` looks at the kernel's view, not at anything the peer sent: it finds the
 *   socket in /proc/net/tcp or /proc/net/tcp6 whose local address:port is the peer's address:port as we
 *   see it and whose remote address:port is ours, takes its inode, and scans /proc/[pid]/fd/* for
 *   `socket:[inode]`. It answers a process only when exactly one process other than this one holds the
 *   socket (a socket several processes share is attributed to none: one of them could have been handed
 *   it to be framed); this process itself is answered only when it is the sole holder (an in-process
 *   client). Anything else — the peer is on another machine, it already closed its end, its process
 *   is another user's (unreadable), the lookup ran out of time, the system has no /proc — answers
 *   `process: null` with the reason.
 * - A found process is named by its pid and a start token `HOST MACHINE_ID BOOT_ID START_TICKS`
 *   (hostname, /etc/machine-id or "-", /proc/sys/kernel/random/boot_id, field 22 of /proc/[pid]/stat).
 *   `sameProcess(pid, start)` later tells whether that very process still runs: a reused pid, a reboot
 *   or a zombie is "gone"; a token from another machine is "elsewhere" (we cannot tell).
 * - Bounded: the fd scan runs synchronously in slices of at most PEER_PROCESS_SLICE_MS, yielding to the
 *   event loop between slices, and gives up after `timeoutMs` (default PEER_PROCESS_LOOKUP_MS_MAX).
 *   Lookups that arrive together share one scan, so a reconnection storm costs a few scans, not one per
 *   client. Errors reading /proc (processes vanish, other users' fds are unreadable) are tolerated.
 *
 * Relies on: Linux procfs (elsewhere every lookup answers null); this process and the peer sharing a
 * network and pid namespace (a peer in another container is not found); hostnames (with machine ids)
 * telling machines apart when several share one store.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { readFile } from "node:fs/promises";
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

/** Inodes of the sockets whose local end is `peer` and remote end is `self` ("host port"), 0 excluded. */
function matchingInodes(tables: string[], peer: string, self: string): string[] {
  const out: string[] = [];
  for (const table of tables) {
    for (const line of table.split("\n")) {
      const fields = line.trim().split(/\s+/);
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
      if (fields.length < 10 || fields[0] === "sl") continue;
      const inode = fields[9]!;
      if (inode === "0" || !/^\d+$/.test(inode)) continue; // 0: orphaned (its process closed it)
      if (procEndpoint(fields[1]!) === peer && procEndpoint(fields[2]!) === self) out.push(inode);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// The fd scan, shared by the lookups that arrive together

interface Wanted {
  link: string;
  /** performance.now() by which this lookup must be answered. */
  deadline: number;
  owners: number[];
  ownedBySelf: boolean;
  done: (result: PeerProcessLookup) => void;
}

const waiting: Wanted[] = [];
let scanning = false;

function startScan(): void {
  if (scanning || waiting.length === 0) return;
  scanning = true;
  const batch = waiting.splice(0);
  const byLink = new Map<string, Wanted[]>();
  for (const w of batch) byLink.set(w.link, [...(byLink.get(w.link) ?? []), w]);
  const deadline = Math.min(...batch.map((w) => w.deadline));
  let pids: number[];
  try {
    pids = readdirSync("/proc").filter((n) => /^\d+$/.test(n)).map(Number).filter((p) => p !== process.pid);
  } catch (error) {
    finish(batch, `cannot list /proc: ${(error as Error).message}`);
    return;
  }
  pids.push(process.pid); // ourselves last: only an in-process client is found here
  let next = 0;
  const slice = (): void => {
    const sliceEnd = performance.now() + PEER_PROCESS_SLICE_MS;
    while (next < pids.length) {
      const pid = pids[next++]!;
      let fds: string[];
      try {
        fds = readdirSync(`/proc/${pid}/fd`);
      } catch {
        fds = []; // gone, or another user's: not ours to judge
      }
      for (const fd of fds) {
        let link: string;
        try {
          link = readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          continue; // closed meanwhile
        }
        const wanted = byLink.get(link);
        if (wanted === undefined) continue;
        for (const w of wanted) {
          if (pid === process.pid) w.ownedBySelf = true;
          else if (!w.owners.includes(pid)) w.owners.push(pid);
        }
      }
      const now = performance.now();
      if (now > deadline) {
        finish(batch, "the lookup ran out of time");
        return;
      }
      if (now > sliceEnd) {
        setImmediate(slice);
        return;
      }
    }
    finish(batch, null);
  };
  slice();
}

function finish(batch: Wanted[], failure: string | null): void {
  for (const w of batch) w.done(failure === null ? verdict(w) : { process: null, reason: failure });
  scanning = false;
  // Lookups that arrived during this scan get the next one.
  startScan();
}

function verdict(w: Wanted): PeerProcessLookup {
  const pids = w.owners.length > 0 ? w.owners : w.ownedBySelf ? [process.pid] : [];
  if (pids.length === 0) return { process: null, reason: "no process we can inspect holds its end (another user's, or it just closed it)" };
  if (pids.length > 1) return { process: null, reason: `processes ${pids.join(", ")} share its end` };
  const pid = pids[0]!;
  const start = processStart(pid);
  return start === null ? { process: null, reason: `process ${pid} ended during the lookup` } : { process: { pid, start } };
}

/**
 * The process on this machine that owns the peer's end of `socket` (a connection we accepted or made),
 * found from /proc; `process: null` with the reason when there is none we can name. Never rejects.
 */
export async function findPeerProcess(socket: SocketEnds, timeoutMs: number = PEER_PROCESS_LOOKUP_MS_MAX): Promise<PeerProcessLookup> {
  const deadline = performance.now() + timeoutMs;
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) {
    return { process: null, reason: "the connection is already closed" };
  }
  const tables: string[] = [];
  const missing: string[] = [];
  for (const path of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    try {
      tables.push(await readFile(path, "utf8"));
    } catch (error) {
      missing.push(`${path}: ${(error as Error).message}`);
    }
  }
  if (tables.length === 0) return { process: null, reason: `this system does not show its sockets (${missing.join("; ")})` };
  const inodes = matchingInodes(tables, `${expandedHost(remoteAddress)} ${remotePort}`, `${expandedHost(localAddress)} ${localPort}`);
  if (inodes.length === 0) return { process: null, reason: "its end is not a socket on this machine (another machine, or already closed)" };
  if (inodes.length > 1) return { process: null, reason: "several sockets match its address" };
  return new Promise((resolve) => {
    waiting.push({ link: `socket:[${inodes[0]}]`, deadline, owners: [], ownedBySelf: false, done: resolve });
    startScan();
  });
}

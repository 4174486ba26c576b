/**
 * A member's HTTP endpoint (`--http-port N [--http-host H]`, DESIGN §6): `/` the live status page
 * (runtime/status-page.ts), `/status.json` what it shows, `/metrics` Prometheus text
 * (runtime/metrics.ts), `/healthz` and `/readyz`.
 *
 * Guarantees:
 * - GET and HEAD only; anything else is 405, an unknown path 404. At most HTTP_CONNECTIONS_MAX connections,
 *   and a request's headers must arrive within 10 s. Every answer is `no-store`; the page
 *   carries a content security policy that allows only its own inline script and same-origin fetches.
 * - `/healthz` is 200 while the member takes part in the quorum (it has not ended), else 503.
 * - `/readyz` is 200 when this member leads and serves, or follows a leader it knows; else 503. The body
 *   says which.
 * - `/status.json` is bounded whatever the lock table's size: at most STATUS_PAGE_CLIENTS clients and
 *   STATUS_PAGE_HOT_KEYS keys (from the bounded hot-key summary; never a scan of the table).
 * - A member that does not serve asks the leader it knows for its status (an admin query, at most one
 *   in flight, reused for LEADER_STATUS_TTL_MS), so its page shows the leader's clients and a link to
 *   the leader's page; a failure is shown, never thrown.
 * - Binds `host` as given; the CLI refuses a non-loopback host without `--insecure` (this endpoint has
 *   no authentication and shows lock names and clients).
 * Relies on: the member's public status (member.ts) and the lock server's `operatorStatus` (server.ts).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { adminQuery } from "../client/admin.js";
import { Command } from "../protocol/messages.js";
import type { ClientTlsOptions } from "../io/tcp.js";
import type { Logger } from "../io/log.js";
import { FastHistogram } from "./metrics.js";
import type { Member, MemberDescription } from "./member.js";
import type { OperatorStatus } from "./server.js";
import { statusPageHtml } from "./status-page.js";

/** Clients and hot keys the status page shows at most. */
export const STATUS_PAGE_CLIENTS = 50;
export const STATUS_PAGE_HOT_KEYS = 20;
/** Open HTTP connections at most (more are closed at once); requests must arrive within 10 s. */
export const HTTP_CONNECTIONS_MAX = 100;
/** A follower reuses the leader's status for this long (pages poll once a second each). */
export const LEADER_STATUS_TTL_MS = 1000;

export interface HttpOptions {
  host: string;
  /** 0 picks a free port (see `MemberHttp.url`). */
  port: number;
  member: Member;
  log: Logger;
  /** How this member asks the leader for its status (an admin query): the cluster secret and TLS. */
  admin?: { secret?: string; tls?: ClientTlsOptions };
}

export interface MemberHttp {
  /** e.g. "http://127.0.0.1:9411/" */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** What the leader's admin status answer holds (server.ts `status()`). */
interface LeaderAdminStatus {
  term: bigint | number | string;
  recovering: boolean;
  members: MemberDescription[];
  clients: { rid: string; name: string; address: string; connected?: boolean }[];
  clientsTotal?: number;
  fences?: { rid: string; address: string; reason: string; state: string }[];
  fencesTotal?: number;
}

export interface StatusJson {
  time: number;
  self: { slot: number; address: string; rid: string; role: string; term: string; httpUrl: string | null };
  serving: boolean;
  ready: boolean;
  leader: { slot: number; address: string; httpUrl: string | null } | null;
  members: MemberDescription[];
  heartbeatGaps: { buckets: { le: string; count: number }[]; count: number; maxSeconds: number };
  counts: { grants: number; invalidations: number; requests: number };
  elections: { stood: number; won: number };
  grantLatency: string;
  server: OperatorStatus | null;
  leaderView: (Omit<LeaderAdminStatus, "term" | "members"> & { term: string }) | { error: string } | null;
}

export function readiness(member: Member): { ready: boolean; why: string } {
  const status = member.status();
  if (member.isServing) return { ready: true, why: `leader of term ${status.term}, serving` };
  if (status.leader !== null && status.leader !== member.slot) return { ready: true, why: `following slot ${status.leader} in term ${status.term}` };
  if (status.leader === member.slot) return { ready: false, why: `leader of term ${status.term}, not serving yet` };
  return { ready: false, why: `${status.role} in term ${status.term}, no leader known` };
}

export async function serveHttp(options: HttpOptions): Promise<MemberHttp> {
  const { member } = options;
  member.metrics.collectProcessMetrics();
  const page = statusPageHtml();
  const leaderStatus = new LeaderStatusCache(options.admin ?? {});
  let ended = false;
  void member.ended.then(() => (ended = true));

  const server = http.createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    const send = (status: number, type: string, body: string, extra: Record<string, string> = {}): void => {
      response.writeHead(status, { "content-type": type, "cache-control": "no-store", "x-content-type-options": "nosniff", ...extra });
      response.end(request.method === "HEAD" ? undefined : body);
    };
    if (request.method !== "GET" && request.method !== "HEAD") {
      send(405, "text/plain; charset=utf-8", "only GET and HEAD\n", { allow: "GET, HEAD" });
      return;
    }
    const failed = (error: unknown): void => send(500, "text/plain; charset=utf-8", `failed: ${(error as Error).message}\n`);
    switch (path) {
      case "/":
        send(200, "text/html; charset=utf-8", page, {
          "content-security-policy":
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
          "x-frame-options": "DENY",
        });
        return;
      case "/status.json":
        statusJson(member, leaderStatus).then((body) => send(200, "application/json", JSON.stringify(body)), failed);
        return;
      case "/metrics":
        member.metrics.text().then((body) => send(200, member.metrics.contentType, body), failed);
        return;
      case "/healthz":
        if (ended) send(503, "text/plain; charset=utf-8", `member ${member.slot} has ended\n`);
        else send(200, "text/plain; charset=utf-8", `ok: member ${member.slot} takes part in the quorum\n`);
        return;
      case "/readyz": {
        const { ready, why } = ended ? { ready: false, why: "the member has ended" } : readiness(member);
        send(ready ? 200 : 503, "text/plain; charset=utf-8", `${ready ? "ready" : "not ready"}: ${why}\n`);
        return;
      }
      default:
        send(404, "text/plain; charset=utf-8", "not found: try /, /status.json, /metrics, /healthz, /readyz\n");
    }
  });
  server.maxConnections = HTTP_CONNECTIONS_MAX;
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (error) => options.log(`HTTP endpoint error: ${error.message}`));
  const port = (server.address() as AddressInfo).port;
  const host = options.host.includes(":") ? `[${options.host}]` : options.host;
  const url = `http://${host}:${port}/`;
  member.httpUrl = url;
  options.log(`status page on ${url} (metrics on ${url}metrics)`);
  return {
    url,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The body of `/status.json` (see the contract for its bounds). */
async function statusJson(member: Member, leaderStatus: LeaderStatusCache): Promise<StatusJson> {
  const status = member.status();
  const members = member.describeMembers();
  const self = members.find((m) => m.slot === member.slot)!;
  const server = member.server;
  const leaderRow = status.leader === null ? undefined : members.find((m) => m.slot === status.leader);
  let leaderView: StatusJson["leaderView"] = null;
  let leaderHttpUrl: string | null = status.leader === member.slot ? member.httpUrl : null;
  if (server === null && leaderRow !== undefined && status.leader !== member.slot) {
    const answer = await leaderStatus.get(leaderRow.address);
    if ("error" in answer) {
      leaderView = answer;
    } else {
      leaderHttpUrl = answer.members.find((m) => m.slot === status.leader)?.httpUrl ?? null;
      leaderView = {
        term: String(answer.term),
        recovering: answer.recovering,
        clients: answer.clients,
        clientsTotal: answer.clientsTotal ?? answer.clients.length,
        fences: answer.fences ?? [],
        fencesTotal: answer.fencesTotal ?? answer.fences?.length ?? 0,
      };
    }
  }
  const gaps = (await member.metrics.heartbeatGap.get()).values;
  let below = 0;
  const buckets: { le: string; count: number }[] = [];
  let count = 0;
  for (const v of gaps) {
    if (v.metricName?.endsWith("_bucket") === true) {
      buckets.push({ le: String(v.labels.le), count: v.value - below });
      below = v.value;
    } else if (v.metricName?.endsWith("_count") === true) count = v.value;
  }
  const { counts } = member.metrics;
  return {
    time: Date.now(),
    self: {
      slot: member.slot,
      address: member.address,
      rid: member.rid.toString(16).padStart(16, "0"),
      role: status.role,
      term: status.term.toString(),
      httpUrl: member.httpUrl,
    },
    serving: server !== null,
    ready: readiness(member).ready,
    leader: leaderRow === undefined ? null : { slot: leaderRow.slot, address: leaderRow.address, httpUrl: leaderHttpUrl },
    members: members.map((m) => ({ slot: m.slot, address: m.address, role: m.role, term: m.term, ...(m.slot === member.slot && self.httpUrl !== undefined ? { httpUrl: self.httpUrl } : m.slot === status.leader && leaderHttpUrl !== null ? { httpUrl: leaderHttpUrl } : {}) })),
    heartbeatGaps: { buckets, count, maxSeconds: status.heartbeatGapMaxMs / 1000 },
    counts: { grants: counts.grants, invalidations: counts.invalidations, requests: counts.requests },
    elections: {
      stood: (await member.metrics.value("keylock_elections_total", { result: "stood" })) ?? 0,
      won: (await member.metrics.value("keylock_elections_total", { result: "won" })) ?? 0,
    },
    grantLatency: latencySummary(Object.values(member.metrics.grantLatency)),
    server: server === null ? null : server.operatorStatus(STATUS_PAGE_CLIENTS, STATUS_PAGE_HOT_KEYS),
    leaderView,
  };
}

/** "≤ 0.25 ms / ≤ 5 ms": the bucket bounds holding p50 and p99 of the histograms together. */
function latencySummary(histograms: FastHistogram[]): string {
  const bounds = histograms[0]?.bounds ?? [];
  const counts = new Array<number>(bounds.length + 1).fill(0);
  let total = 0;
  for (const h of histograms) {
    h.counts.forEach((c, i) => (counts[i]! += c));
    total += h.count;
  }
  if (total === 0) return "no grants yet";
  const at = (q: number): string => {
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i]!;
      if (seen >= q * total) return i < bounds.length ? `≤ ${formatSeconds(bounds[i]!)}` : `> ${formatSeconds(bounds[bounds.length - 1]!)}`;
    }
    return "?";
  };
  return `${at(0.5)} / ${at(0.99)}`;
}

function formatSeconds(seconds: number): string {
  return seconds < 1 ? `${+(seconds * 1000).toFixed(3)} ms` : `${seconds} s`;
}

/** The leader's admin status, asked at most once per LEADER_STATUS_TTL_MS (one query in flight). */
class LeaderStatusCache {
  private cached: { address: string; atMs: number; answer: Promise<LeaderAdminStatus | { error: string }> } | null = null;

  constructor(private readonly admin: { secret?: string; tls?: ClientTlsOptions }) {}

  get(address: string): Promise<LeaderAdminStatus | { error: string }> {
    const now = Date.now();
    if (this.cached !== null && this.cached.address === address && now - this.cached.atMs < LEADER_STATUS_TTL_MS) return this.cached.answer;
    const answer = adminQuery(
      {
        servers: [address],
        ...(this.admin.secret === undefined ? {} : { secret: this.admin.secret }),
        ...(this.admin.tls === undefined ? {} : { tls: this.admin.tls }),
        timeoutMs: 2000,
      },
      Command.ADMIN_STATUS,
    ).then(
      (status) => status as LeaderAdminStatus,
      (error: Error) => ({ error: error.message }),
    );
    this.cached = { address, atMs: now, answer };
    return answer;
  }
}

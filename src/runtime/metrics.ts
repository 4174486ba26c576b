/**
 * Prometheus metrics of a member (DESIGN §6, served at `/metrics` by runtime/http.ts), kept in one
 * prom-client Registry per member so members in one process (tests) never share a metric.
 *
 * Guarantees:
 * - Names follow Prometheus conventions: base units (`_seconds`), counters end in `_total`.
 * - The hot path never touches prom-client: the lock server bumps plain numbers (`counts`) and observes
 *   latencies into `FastHistogram` (a fixed bucket array: one comparison loop, no allocation, no label
 *   hashing). They are turned into exposition text only when scraped.
 * - Counters are cumulative for the member's life: each lock server it runs (one per term it leads)
 *   adds to the same numbers. Gauges are read at scrape time from the member and the server it runs now
 *   (`attachServer`), and read 0 (server gauges) while it serves nothing.
 * - Reading (`value`, `text`) never throws for a missing source: sources are optional.
 * Relies on: prom-client's Registry accepting any object with name, help, type and get() (its own
 * metric classes have the same shape).
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { LockMode } from "../core/modes.js";

/** Buckets for request latencies (grant latency, invalidation round trips): 50 µs to 10 s. */
export const LATENCY_BUCKETS_SECONDS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;
/** Buckets for lock recovery after a failover: 10 ms to 2 min. */
export const RECOVERY_BUCKETS_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] as const;
/** Buckets for gaps between heartbeats (sent as leader, received as follower). */
export const HEARTBEAT_GAP_BUCKETS_SECONDS = [0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60] as const;

/** A histogram recorded with one loop over fixed bounds; exported through `HistogramFamily`. */
export class FastHistogram {
  /** counts[i]: observations ≤ bounds[i] and > bounds[i-1]; the last one counts those above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(seconds: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += seconds;
    this.count++;
  }
}

interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** The shape prom-client's Registry reads from a metric (its own classes have the same). */
interface ExportedMetric {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: "sum" }>;
  reset(): void;
}

/** A metric whose values are read when scraped. */
function computed(
  registry: Registry,
  name: string,
  help: string,
  type: "counter" | "gauge",
  read: () => MetricValue[],
): void {
  const metric: ExportedMetric = {
    name,
    help,
    type,
    aggregator: "sum",
    get: () => Promise.resolve({ name, help, type, values: read(), aggregator: "sum" }),
    reset: () => undefined,
  };
  registry.registerMetric(metric as unknown as Counter);
}

/** Exports FastHistograms under one name, one label set each. */
function histogramFamily(registry: Registry, name: string, help: string, members: () => { labels: Record<string, string>; histogram: FastHistogram }[]): void {
  const metric: ExportedMetric = {
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    get: () => {
      const values: MetricValue[] = [];
      for (const { labels, histogram } of members()) {
        let cumulative = 0;
        histogram.bounds.forEach((bound, i) => {
          cumulative += histogram.counts[i]!;
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
        });
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: histogram.count });
        values.push({ metricName: `${name}_sum`, labels, value: histogram.sum });
        values.push({ metricName: `${name}_count`, labels, value: histogram.count });
      }
      return Promise.resolve({ name, help, type: "histogram", values, aggregator: "sum" });
    },
    reset: () => undefined,
  };
  registry.registerMetric(metric as unknown as Histogram);
}

/** What the lock server counts on its hot path (plain numbers; see the contract). */
export interface ServerCounts {
  requests: number;
  grants: number;
  invalidations: number;
  refusals: number;
  responses: number;
  reclaims: number;
  /** Fence requests started by the lock server (clients). */
  fences: number;
  /** Connections closed because the peer broke the protocol (ProtocolError). */
  protocolErrors: number;
  greetingTimeouts: number;
  clientLimitViolations: number;
  invalidationTimeouts: number;
}

/** The lock server's gauges, read at scrape time from the server a member runs now. */
export interface ServerGauges {
  readonly term: bigint;
  readonly recovering: boolean;
  readonly clientCount: number;
  readonly keyCount: number;
  readonly entryCount: number;
  readonly queuedRequests: number;
  readonly writeSeq: bigint;
  readonly writeSeqWaitingKeys: number;
}

/** The member's gauges and counters kept elsewhere (election, sockets), read at scrape time. */
export interface MemberGauges {
  term: bigint;
  isLeader: boolean;
  serving: boolean;
  heartbeatGapMaxMs: number;
  droppedTerm: number;
  droppedSource: number;
  droppedAuth: number;
  refusedConnections: number;
  tlsClientErrors: number;
}

export type FenceOutcome = "fenced" | "failed";

export class Metrics {
  readonly registry = new Registry();
  readonly counts: ServerCounts = {
    requests: 0,
    grants: 0,
    invalidations: 0,
    refusals: 0,
    responses: 0,
    reclaims: 0,
    fences: 0,
    protocolErrors: 0,
    greetingTimeouts: 0,
    clientLimitViolations: 0,
    invalidationTimeouts: 0,
  };
  /** Request received → grant sent, by the granted mode. */
  readonly grantLatency: Readonly<Record<LockMode, FastHistogram>> = {
    null: new FastHistogram(LATENCY_BUCKETS_SECONDS),
    read: new FastHistogram(LATENCY_BUCKETS_SECONDS),
    write: new FastHistogram(LATENCY_BUCKETS_SECONDS),
    write_only: new FastHistogram(LATENCY_BUCKETS_SECONDS),
  };
  /** `grantLatency[mode]` by a switch: a keyed load by four mode names is a megamorphic lookup per grant. */
  grantLatencyOf(mode: LockMode): FastHistogram {
    switch (mode) {
      case "null":
        return this.grantLatency.null;
      case "read":
        return this.grantLatency.read;
      case "write":
        return this.grantLatency.write;
      case "write_only":
        return this.grantLatency.write_only;
    }
  }
  /** Invalidation sent → its answer received. */
  readonly invalidationRoundTrip = new FastHistogram(LATENCY_BUCKETS_SECONDS);
  readonly recoveryDuration: Histogram;
  readonly heartbeatGap: Histogram;
  readonly fences: Counter<"reason" | "outcome">;
  readonly elections: Counter<"result">;
  readonly leaderChanges: Counter;
  private server: ServerGauges | null = null;
  private member: (() => MemberGauges) | null = null;
  private defaultsOn = false;

  constructor() {
    const registry = this.registry;
    const c = this.counts;
    const counter = (name: string, help: string, read: () => number): void =>
      computed(registry, name, help, "counter", () => [{ labels: {}, value: read() }]);
    const gauge = (name: string, help: string, read: () => number | bigint | boolean | undefined): void =>
      computed(registry, name, help, "gauge", () => {
        const value = read();
        return [{ labels: {}, value: value === undefined ? 0 : Number(value) }];
      });

    // Member (election, sockets)
    const m = (): MemberGauges | undefined => this.member?.();
    gauge("keylock_member_term", "this member's election term", () => m()?.term);
    gauge("keylock_member_is_leader", "1 while this member is the leader", () => m()?.isLeader);
    gauge("keylock_member_serving", "1 while this member serves locks", () => m()?.serving);
    gauge("keylock_heartbeat_gap_max_seconds", "longest gap between heartbeats seen in this role and term (1 s or more)", () => (m()?.heartbeatGapMaxMs ?? 0) / 1000);
    counter("keylock_member_quorum_dropped_term_total", "quorum messages dropped for a term above TERM_MAX or too far above ours", () => m()?.droppedTerm ?? 0);
    counter("keylock_member_quorum_dropped_source_total", "quorum datagrams dropped for not coming from the address of the slot they claim", () => m()?.droppedSource ?? 0);
    counter("keylock_member_quorum_dropped_auth_total", "quorum datagrams dropped for a missing, bad or unexpected authentication tag", () => m()?.droppedAuth ?? 0);
    counter("keylock_refused_connections_total", "connections closed at once because --max-connections were open", () => m()?.refusedConnections ?? 0);
    counter("keylock_member_tls_client_errors_total", "TLS handshakes on the service port that failed or timed out, and clients refused for their certificate", () => m()?.tlsClientErrors ?? 0);
    this.heartbeatGap = new Histogram({
      name: "keylock_heartbeat_gap_seconds",
      help: "time between consecutive heartbeats: sent (leader) or received from the leader (follower)",
      buckets: [...HEARTBEAT_GAP_BUCKETS_SECONDS],
      registers: [registry],
    });
    this.elections = new Counter({
      name: "keylock_elections_total",
      help: "elections this member took part in as a candidate: result stood (it asked for votes) or won (it became leader)",
      labelNames: ["result"],
      registers: [registry],
    });
    this.leaderChanges = new Counter({ name: "keylock_leader_changes_total", help: "times the leader this member knows changed", registers: [registry] });

    // Lock server
    const s = (): ServerGauges | null => this.server;
    gauge("keylock_server_term", "election term of the lock server this member runs (0: none)", () => s()?.term ?? 0);
    gauge("keylock_recovering", "1 while lock recovery is in progress", () => s()?.recovering ?? false);
    gauge("keylock_clients", "clients with a session on this server", () => s()?.clientCount ?? 0);
    gauge("keylock_lock_keys", "keys with granted, requested or invalidated entries", () => s()?.keyCount ?? 0);
    gauge("keylock_lock_entries", "granted, requested and invalidated entries", () => s()?.entryCount ?? 0);
    gauge("keylock_queued_requests", "lock requests waiting for their grant", () => s()?.queuedRequests ?? 0);
    gauge("keylock_write_seq", "last fencing token issued", () => s()?.writeSeq ?? 0);
    gauge("keylock_write_seq_waiting_keys", "keys whose write grant waits for a fencing-token reservation (store slow or unreachable)", () => s()?.writeSeqWaitingKeys ?? 0);
    counter("keylock_lock_requests_total", "lock requests received", () => c.requests);
    counter("keylock_grants_total", "grants sent", () => c.grants);
    counter("keylock_invalidations_total", "invalidations sent", () => c.invalidations);
    counter("keylock_invalidation_responses_total", "invalidation responses received", () => c.responses);
    counter("keylock_nonblock_refusals_total", "nonblock requests answered EAGAIN", () => c.refusals);
    counter("keylock_fence_requests_total", "client fence requests started by the lock server", () => c.fences);
    counter("keylock_reclaims_total", "clients reclaimed (farewell excluded)", () => c.reclaims);
    counter("keylock_protocol_errors_total", "connections closed because the peer broke the protocol", () => c.protocolErrors);
    counter("keylock_greeting_timeouts_total", "connections closed for not greeting in time", () => c.greetingTimeouts);
    counter("keylock_client_limit_violations_total", "client connections closed for exceeding requests in flight or lock entries", () => c.clientLimitViolations);
    counter("keylock_invalidation_timeouts_total", "clients fenced for not answering an invalidation in time", () => c.invalidationTimeouts);
    histogramFamily(registry, "keylock_grant_latency_seconds", "lock request received to grant sent, by granted mode", () =>
      (Object.keys(this.grantLatency) as LockMode[]).map((mode) => ({ labels: { mode }, histogram: this.grantLatency[mode] })),
    );
    histogramFamily(registry, "keylock_invalidation_round_trip_seconds", "invalidation sent to its answer received", () => [
      { labels: {}, histogram: this.invalidationRoundTrip },
    ]);
    this.recoveryDuration = new Histogram({
      name: "keylock_recovery_duration_seconds",
      help: "lock server start to the end of lock recovery (terms that had clients to recover)",
      buckets: [...RECOVERY_BUCKETS_SECONDS],
      registers: [registry],
    });
    this.fences = new Counter({
      name: "keylock_fences_total",
      help: "fence requests finished, by reason (client_recovery, client_reconnect, quorum_block_leader) and outcome (fenced, failed)",
      labelNames: ["reason", "outcome"],
      registers: [registry],
    });
  }

  /** The gauges of the lock server this member runs now (null: none). */
  attachServer(server: ServerGauges | null): void {
    this.server = server;
  }

  detachServer(server: ServerGauges): void {
    if (this.server === server) this.server = null;
  }

  attachMember(read: () => MemberGauges): void {
    this.member = read;
  }

  /** Adds prom-client's default process metrics and event-loop lag (once; when served over HTTP). */
  collectProcessMetrics(): void {
    if (this.defaultsOn) return;
    this.defaultsOn = true;
    collectDefaultMetrics({ register: this.registry });
  }

  fenceFinished(reason: string, outcome: FenceOutcome): void {
    this.fences.inc({ reason, outcome });
  }

  /** The exposition text (`GET /metrics`). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** One sample's value (tests, status): the first sample of `name` whose labels include `labels`. */
  async value(name: string, labels: Record<string, string | number> = {}): Promise<number | undefined> {
    const family = name.replace(/_(bucket|sum|count)$/, "");
    const metric = this.registry.getSingleMetric(name) ?? this.registry.getSingleMetric(family);
    if (metric === undefined) return undefined;
    const { values } = await metric.get();
    const wanted = Object.entries(labels);
    const found = (values as MetricValue[]).find(
      (v) => (v.metricName ?? name) === name && wanted.every(([k, want]) => String(v.labels[k]) === String(want)),
    );
    return found?.value;
  }
}

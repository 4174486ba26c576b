#!/usr/bin/env node
/**
 * The `keylock` command (DESIGN §6): up, format, status, locks, stats.
 * Unknown flags and bad values are refused with a message that names them; every command exits 0 on
 * success and 1 with a one-line reason on failure.
 */
import { randomBytes } from "node:crypto";
import { Command as Cli, InvalidArgumentError, Option } from "commander";
import { adminQuery } from "../client/admin.js";
import type { AdminAnswer, AdminQueryName } from "../protocol/admin.js";
import { parseAddress } from "../io/tcp.js";
import { LOG_LEVELS, processLogger } from "../io/log.js";
import { openStore } from "../store/open.js";
import { startEmbedded } from "../runtime/embedded.js";
import { serveHttp } from "../runtime/http.js";
import { httpEndpointFromFlags, integerIn, isLoopbackHost, limitsFromFlags, MEMBER_FLAG_LIMITS, SERVER_LIMIT_FLAGS, SERVER_LIMIT_HELP, SERVER_LIMITS_DEFAULT, type MemberFlags } from "./options.js";
import { formatTable } from "./table.js";
import { registerMemberCommand } from "./member.js";
import { clientTlsFromFlags, memberTlsFromFlags, type ClientTlsFlags } from "./tls-files.js";
import { readSecret } from "./secret.js";
import { secretDigest } from "../io/keys.js";
import { keyFromBytes, keyToHex, keyToText } from "../core/keys.js";
import { SLOTS_MAX, SLOT_MAX } from "../core/limits.js";

const program = new Cli("keylock")
  .description("keylock: a cache-coherent distributed lock service")
  .showHelpAfterError()
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 1));

function addMemberFlags(command: Cli): Cli {
  const l = MEMBER_FLAG_LIMITS;
  command
    .option("--fence-command <cmd>", "shell command that fences a client or member (env KEYLOCK_FENCE_RID, _ADDRESS, _REASON)")
    .addOption(
      new Option(`${l.heartbeatTimeoutMs.flag} <ms>`, "heartbeat timeout before a follower stands for election")
        .argParser(integerIn(l.heartbeatTimeoutMs.flag, l.heartbeatTimeoutMs.min, l.heartbeatTimeoutMs.max))
        .default(l.heartbeatTimeoutMs.default),
    )
    .addOption(
      new Option(`${l.recoveryTimeoutMs.flag} <ms>`, "how long a new server waits for clients to recover their locks")
        .argParser(integerIn(l.recoveryTimeoutMs.flag, l.recoveryTimeoutMs.min, l.recoveryTimeoutMs.max))
        .default(l.recoveryTimeoutMs.default),
    )
    .addOption(
      new Option(`${l.reconnectTimeoutMs.flag} <ms>`, "how long a disconnected client may take to reconnect")
        .argParser(integerIn(l.reconnectTimeoutMs.flag, l.reconnectTimeoutMs.min, l.reconnectTimeoutMs.max))
        .default(l.reconnectTimeoutMs.default),
    )
    .addOption(
      new Option(`${l.httpPort.flag} <port>`, "serve the status page (/), /metrics, /healthz and /readyz over HTTP on this port").argParser(
        integerIn(l.httpPort.flag, l.httpPort.min, l.httpPort.max),
      ),
    )
    .addOption(new Option("--metrics-port <port>", "the old name of --http-port").argParser(integerIn("--metrics-port", l.httpPort.min, l.httpPort.max)))
    .option("--http-host <host>", "address of the HTTP endpoint (a non-loopback one needs --insecure: it has no authentication)", "127.0.0.1")
    .option("--tls-cert <file>", "serve TLS only, with this PEM certificate (chain) of the member")
    .option("--tls-key <file>", "the PEM private key of --tls-cert (owner-only)")
    .option("--tls-ca <file>", "PEM CA certificate(s) that sign the client certificates to accept")
    .option("--tls-client-auth", "require a client certificate signed by --tls-ca (mutual TLS)")
    .addOption(
      new Option("--log-level <level>", "lines below this level are not logged (JSON lines on stderr; readable lines on a terminal)")
        .choices(LOG_LEVELS)
        .default("info"),
    );
  for (const name of Object.keys(SERVER_LIMIT_FLAGS) as (keyof typeof SERVER_LIMIT_FLAGS)[]) {
    const { flag, min, max } = SERVER_LIMIT_FLAGS[name];
    command.addOption(
      new Option(`${flag} <n>`, `${SERVER_LIMIT_HELP[name]} (default ${SERVER_LIMITS_DEFAULT[name]})`).argParser(integerIn(flag, min, max)),
    );
  }
  return command;
}

addMemberFlags(
  program
    .command("up")
    .description("run an embedded one-member cluster on an SQLite store (formatted on first use)")
    .option("--dir <dir>", "directory for the store", ".keylock")
    .option("--host <host>", "address to serve on (loopback by default)", "127.0.0.1")
    .addOption(new Option("--port <port>", "TCP port to serve on").argParser(integerIn("--port", 0, 65534)).default(7411))
    .option("--secret-file <file>", "file holding the cluster secret (owner-only); set when --dir is first formatted")
    .option("--insecure", "allow a non-loopback --host without a cluster secret, and a non-loopback --http-host"),
).action(async (flags: { dir: string; host: string; port: number; secretFile?: string; insecure?: boolean } & MemberFlags) => {
  let member: { status(): { term: bigint } } | null = null;
  const log = processLogger({ base: { slot: 0 }, level: flags.logLevel, context: () => (member === null ? {} : { term: member.status().term }) });
  const tls = memberTlsFromFlags(flags);
  const httpEndpoint = httpEndpointFromFlags(flags);
  // Protected mode (Redis's lesson): anyone who can reach a non-loopback address could take and hold locks.
  // Mutual TLS authenticates clients too (a certificate from the given CA), so it lifts protected mode.
  if (flags.secretFile === undefined && tls?.clientAuth !== true && flags.insecure !== true && !isLoopbackHost(flags.host)) {
    throw new InvalidArgumentError(
      `--host ${flags.host} is reachable from other machines and no --secret-file was given: anyone who reaches it could ` +
        `take, hold and inspect locks. Pass --secret-file F (a file only you can read), or --tls-client-auth with --tls-ca (mutual TLS), ` +
        `or --insecure if the network is trusted.`,
    );
  }
  const embedded = await startEmbedded({
    ...(flags.secretFile === undefined ? {} : { secret: readSecret(flags.secretFile) }),
    dir: flags.dir,
    host: flags.host,
    port: flags.port,
    reconnectTimeoutMs: flags.reconnectTimeoutMs,
    recoveryTimeoutMs: flags.recoveryTimeoutMs,
    heartbeatTimeoutMs: flags.heartbeatTimeoutMs,
    ...(flags.fenceCommand === undefined ? {} : { fenceCommand: flags.fenceCommand }),
    ...(tls === undefined ? {} : { tls }),
    limits: limitsFromFlags(flags),
    log,
  });
  member = embedded.member;
  const httpServer =
    httpEndpoint === null
      ? null
      : await serveHttp({ ...httpEndpoint, member: embedded.member, log }).catch(async (error: Error) => {
          await embedded.stop();
          throw new Error(`cannot serve HTTP on ${httpEndpoint.host}:${httpEndpoint.port}: ${error.message}`);
        });
  console.log(`keylock: serving on ${embedded.server.address}`);
  const shutdown = (signal: string): void => {
    log(`${signal}: shutting down`);
    Promise.all([embedded.stop(), httpServer?.close()]).then(
      () => process.exit(0),
      (error: Error) => {
        log(`shutdown failed: ${error.message}`);
        process.exit(1);
      },
    );
  };
  process.once("SIGINT", () => shutdown("SIGINT"));
  process.once("SIGTERM", () => shutdown("SIGTERM"));
});

registerMemberCommand(program, addMemberFlags);

/** One `--slot N=HOST:PORT` of `format`, checked against the ones before it (the store checks again). */
function collectSlot(value: string, previous: { slot: number; host: string; port: number }[]) {
  const match = /^(\d+)=(.+)$/.exec(value);
  if (!match) throw new InvalidArgumentError(`--slot must be N=HOST:PORT, not "${value}"`);
  const slot = Number(match[1]);
  if (slot > SLOT_MAX) throw new InvalidArgumentError(`--slot ${value}: slot number must be 0..${SLOT_MAX}, not ${slot}`);
  let address: { host: string; port: number };
  try {
    address = parseAddress(match[2]!);
  } catch (error) {
    throw new InvalidArgumentError(`--slot ${value}: ${(error as Error).message}`);
  }
  if (previous.some((p) => p.slot === slot)) throw new InvalidArgumentError(`--slot ${value}: slot ${slot} is given twice`);
  const same = previous.find((p) => p.host.toLowerCase() === address.host.toLowerCase() && p.port === address.port);
  if (same) throw new InvalidArgumentError(`--slot ${value}: slots ${same.slot} and ${slot} share the address ${match[2]}`);
  if (previous.length >= SLOTS_MAX) throw new InvalidArgumentError(`--slot ${value}: at most ${SLOTS_MAX} slots`);
  return [...previous, { slot, ...address }];
}

program
  .command("format")
  .description("write a new cluster config to a store")
  .requiredOption("--store <url>", "sqlite:PATH or postgres://...")
  .requiredOption("--slot <N=HOST:PORT>", `a member slot (repeat for each member, up to ${SLOTS_MAX})`, collectSlot, [])
  .option("--secret-file <file>", "file holding the cluster secret")
  .action(async (flags: { store: string; slot: { slot: number; host: string; port: number }[]; secretFile?: string }) => {
    const store = await openStore(flags.store);
    try {
      const secret = flags.secretFile ? readSecret(flags.secretFile) : undefined;
      const clusterId = randomBytes(8).toString("hex");
      await store.format({
        clusterId,
        slots: flags.slot,
        secretDigest: secret === undefined ? null : secretDigest(secret),
        formattedAtMs: Date.now(),
      });
      console.log(`keylock: formatted cluster ${clusterId} with ${flags.slot.length} slot(s) in ${store.url}`);
    } finally {
      await store.close();
    }
  });

interface QueryFlags extends ClientTlsFlags {
  servers: string;
  secretFile?: string;
  json?: boolean;
}

function addQueryFlags(command: Cli): Cli {
  return command
    .requiredOption("--servers <list>", "members to ask: HOST:PORT[,HOST:PORT...]")
    .option("--secret-file <file>", "file holding the cluster secret")
    .option("--tls", "connect with TLS, trusting the system CAs (implied by the other --tls-* flags)")
    .option("--tls-ca <file>", "connect with TLS, trusting the PEM CA certificate(s) in this file")
    .option("--tls-cert <file>", "client certificate (PEM) for members run with --tls-client-auth")
    .option("--tls-key <file>", "the PEM private key of --tls-cert (owner-only)")
    .option("--tls-servername <name>", "name to verify in the member's certificate (default: the host of each address)")
    .option("--json", "print JSON");
}

async function runQuery<Q extends AdminQueryName>(flags: QueryFlags, query: Q): Promise<AdminAnswer<Q>> {
  const servers = flags.servers.split(",").map((s) => s.trim()).filter(Boolean);
  for (const server of servers) {
    try {
      parseAddress(server);
    } catch (error) {
      throw new InvalidArgumentError(`--servers: ${(error as Error).message}`);
    }
  }
  const tls = clientTlsFromFlags(flags);
  return adminQuery({ servers, secret: flags.secretFile ? readSecret(flags.secretFile) : undefined, ...(tls === undefined ? {} : { tls }) }, query);
}

function printJson(value: unknown): void {
  console.log(JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2));
}

addQueryFlags(program.command("status").description("the leader, members, clients and recovery state")).action(
  async (flags: QueryFlags) => {
    const status = await runQuery(flags, "status");
    const shaped = {
      term: Number(status.term),
      leader: status.leader,
      members: status.members.map((m) => ({ slot: m.slot, address: m.address, role: m.role })),
      clients: status.clients.map((c) => ({ rid: c.rid, name: c.name, address: c.address })),
      clientsTotal: status.clientsTotal ?? status.clients.length,
      recovering: status.recovering,
    };
    if (flags.json) return printJson(shaped);
    console.log(`term ${shaped.term}, leader ${shaped.leader ? `slot ${shaped.leader.slot} at ${shaped.leader.address}` : "none"}${shaped.recovering ? ", recovering" : ""}`);
    console.log(formatTable(["SLOT", "ADDRESS", "ROLE", "TERM"], status.members.map((m) => [m.slot, m.address, m.role, m.term ?? null])));
    const self = status.members.find((m) => m.heartbeatGaps !== undefined);
    if (self?.heartbeatGaps !== undefined) {
      const gaps = self.heartbeatGaps;
      console.log(`heartbeat gaps of 1 s or more seen by slot ${self.slot}${gaps.length === 0 ? ": none" : ` (longest ${self.heartbeatGapMaxMs ?? 0} ms)`}`);
      if (gaps.length > 0) {
        console.log(formatTable(["GAP", "COUNT", "LAST"], gaps.map((g) => [`${g.seconds} s`, g.count, `${Math.round(g.ageMs / 1000)} s ago`])));
      }
    }
    const shown = shaped.clients.length < shaped.clientsTotal ? ` (the ${shaped.clients.length} with the lowest rids shown)` : "";
    console.log(`${shaped.clientsTotal} client(s)${shown}`);
    if (shaped.clients.length > 0) {
      console.log(formatTable(["RID", "NAME", "ADDRESS"], shaped.clients.map((c) => [c.rid, c.name, c.address])));
    }
  },
);

function keyColumns(raw: Uint8Array): { key: string; keyHex: string } {
  const key = keyFromBytes(raw);
  return { key: keyToText(key), keyHex: keyToHex(key) };
}

addQueryFlags(program.command("locks").description("every lock entry: granted, requested or invalidated")).action(
  async (flags: QueryFlags) => {
    const rows = await runQuery(flags, "locks");
    const shaped = rows.map((r) => ({ ...keyColumns(r.key), mode: r.mode, state: r.state, rid: r.rid }));
    if (flags.json) return printJson(shaped);
    console.log(formatTable(["KEY", "MODE", "STATE", "RID"], shaped.map((r) => [r.key, r.mode, r.state, r.rid])));
  },
);

addQueryFlags(program.command("stats").description("per-lock message counts")).action(async (flags: QueryFlags) => {
  const rows = await runQuery(flags, "stats");
  const shaped = rows.map((r) => ({
    ...keyColumns(r.key),
    requests: r.requests,
    invalidations: r.invalidations,
    responses: r.responses,
    grants: r.grants,
  }));
  if (flags.json) return printJson(shaped);
  console.log(
    formatTable(
      ["KEY", "REQUESTS", "INVALIDATIONS", "RESPONSES", "GRANTS"],
      shaped.map((r) => [r.key, r.requests, r.invalidations, r.responses, r.grants]),
    ),
  );
});

addQueryFlags(program.command("fences").description("fence requests the leader is running or finished")).action(
  async (flags: QueryFlags) => {
    const status = await runQuery(flags, "status");
    const fences = status.fences ?? [];
    if (flags.json) return printJson(fences);
    if (fences.length === 0) console.log("no fence requests");
    else console.log(formatTable(["RID", "ADDRESS", "REASON", "STATE"], fences.map((f) => [f.rid, f.address, f.reason, f.state])));
  },
);

program.parseAsync(process.argv).catch((error: Error) => {
  console.error(`keylock: ${error.message}`);
  process.exit(1);
});

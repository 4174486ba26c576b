/**
 * `keylock member --store <url> --slot N [member flags]` (DESIGN §6): runs one member of a formatted
 * cluster (runtime/member.ts). Prints `keylock: member N up` once it takes part in elections and
 * `keylock: serving on HOST:PORT` whenever it becomes leader and serves.
 *
 * Guarantees: a slot outside 0..SLOT_MAX (core/limits.ts), an unknown flag or an out-of-range value is refused before anything
 * is opened, naming the flag; an unformatted store, a slot missing from the config (the message lists
 * the configured slots), a slot address in use, or a missing or wrong `--secret-file` for a cluster formatted
 * with a secret (or a group/other-readable one) is refused with exit status 1, and so are bad TLS flags
 * (tls-files.ts). SIGINT/SIGTERM leave gracefully (the server stops, a leader resigns so another member
 * takes over at once) and exit 0; a member that can no longer rely on its store exits 1.
 * Relies on: options.ts for the member flags' ranges.
 */
import { Option, type Command as Cli } from "commander";
import { fenceAgentFor } from "../io/fence.js";
import { processLogger } from "../io/log.js";
import { openStore } from "../store/open.js";
import { Member } from "../runtime/member.js";
import { serveHttp, type MemberHttp } from "../runtime/http.js";
import { httpEndpointFromFlags, integerIn, limitsFromFlags, type MemberFlags } from "./options.js";
import { SLOT_MAX } from "../core/limits.js";
import { memberTlsFromFlags } from "./tls-files.js";
import { readSecret } from "./secret.js";

interface MemberCommandFlags extends MemberFlags {
  store: string;
  slot: number;
  secretFile?: string;
}

export function registerMemberCommand(program: Cli, addMemberFlags: (command: Cli) => Cli): void {
  addMemberFlags(
    program
      .command("member")
      .description("run one member of a formatted cluster: take part in elections, serve locks while leader")
      .requiredOption("--store <url>", "sqlite:PATH or postgres://... (the store the cluster was formatted in)")
      .addOption(
        new Option("--slot <N>", `this member's slot in the cluster config (0..${SLOT_MAX})`).argParser(integerIn("--slot", 0, SLOT_MAX)).makeOptionMandatory(),
      )
      .option("--secret-file <file>", "file holding the cluster secret (owner-only); required when the cluster was formatted with one")
      .option("--insecure", "allow a non-loopback --http-host (the status page and metrics have no authentication)"),
  ).action(async (flags: MemberCommandFlags) => {
    const running: { member: Member | null } = { member: null };
    const log = processLogger({ base: { slot: flags.slot }, level: flags.logLevel, context: () => (running.member === null ? {} : { term: running.member.status().term }) });
    const tls = memberTlsFromFlags(flags);
    const httpEndpoint = httpEndpointFromFlags(flags);
    const secret = flags.secretFile === undefined ? undefined : readSecret(flags.secretFile);
    const store = await openStore(flags.store);
    let member: Member;
    try {
      member = await Member.start({
        store,
        slot: flags.slot,
        heartbeatTimeoutMs: flags.heartbeatTimeoutMs,
        recoveryTimeoutMs: flags.recoveryTimeoutMs,
        reconnectTimeoutMs: flags.reconnectTimeoutMs,
        fenceAgent: fenceAgentFor(flags.fenceCommand),
        limits: limitsFromFlags(flags),
        ...(tls === undefined ? {} : { tls }),
        log,
        ...(secret === undefined ? {} : { secret }),
      });
    } catch (error) {
      await store.close();
      throw error;
    }
    running.member = member;
    let httpServer: MemberHttp | null = null;
    if (httpEndpoint !== null) {
      try {
        httpServer = await serveHttp({
          ...httpEndpoint,
          member,
          log,
          admin: {
            ...(secret === undefined ? {} : { secret }),
            // Asking the leader for the status page: trust the CA we trust clients with, show our certificate.
            ...(tls === undefined ? {} : { tls: { ...(tls.ca === undefined ? {} : { ca: tls.ca }), cert: tls.cert, key: tls.key } }),
          },
        });
      } catch (error) {
        await member.stop().catch(() => undefined);
        await store.close();
        throw new Error(`cannot serve HTTP on ${httpEndpoint.host}:${httpEndpoint.port}: ${(error as Error).message}`, { cause: error });
      }
    }
    let leaving = false;
    const leave = (signal: string): void => {
      if (leaving) return;
      leaving = true;
      log(`${signal}: leaving the cluster`);
      member.stop().then(
        async () => {
          await httpServer?.close();
          await store.close();
          process.exit(0);
        },
        (error: Error) => {
          log(`leaving failed: ${error.message}`);
          process.exit(1);
        },
      );
    };
    process.once("SIGINT", () => leave("SIGINT"));
    process.once("SIGTERM", () => leave("SIGTERM"));
    const error = await member.ended;
    if (error !== null) {
      await store.close().catch(() => undefined);
      throw error;
    }
  });
}

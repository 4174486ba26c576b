// Transcript tests of the reliable session (reference §6.1–6.3, §6.5, §6.11, §6.13). Each file under
// test/transcripts/session/ runs against one fresh WireSession (the ReliableSession over wire messages): "our" side; the peer is played by
// the `receive` lines.
//
// Commands (commands are lock, lock-recover, farewell, admin-status, admin-locks, admin-stats):
//   request lock                                  queue a request: `send ...` (attached) or `kept id=N (detached)`
//   respond lock 3 [EAGAIN]                        answer the peer's request 3: `send ...`, `kept (detached)`,
//                                                  or `dropped` (it was the previous server's)
//   receive lock request seq=4 ack=2 id=3          a header from the peer arrives: prints the verdict
//   attach | detach | reset | forget 3             reset = resetForNewServer
//   new [continues-predecessor]                    replace the session by a fresh one (the server's
//                                                  farewell-retry session with the option)
//   A "protocol-error" verdict prints the session's `problem` after it.
//   state                                          attached/detached and the counters
//   classify last=0 farewell=no term=7 session=no  classifyGreeting (no session involved)
// Printed messages: `send seq=1 ack=0 id=1 lock request` (error shown after "response" when not NONE).
import { fileURLToPath } from "node:url";
import { transcriptTests, type CommandHandler } from "../support/transcript.js";
import { classifyGreeting } from "../../src/core/session.js";
import { WireSession } from "../../src/protocol/session.js";
import { Command, WireError, type Body, type Message } from "../../src/protocol/messages.js";

const TRANSCRIPTS_DIR = fileURLToPath(new URL("../transcripts/session/", import.meta.url));

const COMMANDS: Readonly<Record<string, Command>> = {
  lock: Command.LOCK,
  "lock-recover": Command.LOCK_RECOVER,
  farewell: Command.FAREWELL,
  "admin-status": Command.ADMIN_STATUS,
  "admin-locks": Command.ADMIN_LOCKS,
  "admin-stats": Command.ADMIN_STATS,
  greeting: Command.GREETING,
};

const COMMAND_NAMES = new Map(Object.entries(COMMANDS).map(([name, code]) => [code, name]));
const ERROR_NAMES = new Map(Object.entries(WireError).map(([name, code]) => [code, name]));

/** The session never looks at payloads; every message carries this one. */
const PAYLOAD: Body = { kind: "farewell", body: {} };

function commandOf(text: string | undefined): Command {
  const cmd = text === undefined ? undefined : COMMANDS[text];
  if (cmd === undefined) throw new Error(`unknown command ${text}`);
  return cmd;
}

function errorOf(text: string | undefined): WireError {
  if (text === undefined) return WireError.NONE;
  const error = (WireError as Record<string, WireError>)[text];
  if (error === undefined) throw new Error(`unknown wire error ${text}`);
  return error;
}

/** `seq=4 ack=2 id=3` → { seq: 4, ack: 2, id: 3 }; every field is required. */
function fieldsOf(args: string[], names: readonly string[]): Record<string, number> {
  const fields: Record<string, number> = {};
  for (const arg of args) {
    const match = /^([a-z]+)=(\d+)$/.exec(arg);
    if (!match || !names.includes(match[1]!)) throw new Error(`bad field ${arg}`);
    fields[match[1]!] = Number(match[2]);
  }
  for (const name of names) if (fields[name] === undefined) throw new Error(`missing ${name}=`);
  return fields;
}

function describeMessage(message: Message): string {
  const { seq, ack, id, cmd, response, error } = message.header;
  const kind = response ? "response" : "request";
  const err = error === WireError.NONE ? "" : ` ${ERROR_NAMES.get(error)}`;
  return `seq=${seq} ack=${ack} id=${id} ${COMMAND_NAMES.get(cmd) ?? cmd} ${kind}${err}`;
}

function yesNo(text: string | undefined): boolean {
  if (text === "yes") return true;
  if (text === "no") return false;
  throw new Error(`expected yes or no, got ${text}`);
}

function makeHandler(): CommandHandler {
  let session = new WireSession();
  return (command, args) => {
    switch (command) {
      case "request": {
        const { id, message } = session.request(commandOf(args[0]), PAYLOAD);
        return [message ? `send ${describeMessage(message)}` : `kept id=${id} (detached)`];
      }
      case "respond": {
        const [cmdText, idText, errorText] = args;
        const before = session.unackedResponses;
        const message = session.respond(commandOf(cmdText), Number(idText), PAYLOAD, errorOf(errorText));
        if (message) return [`send ${describeMessage(message)}`];
        return [session.unackedResponses > before ? "kept (detached)" : "dropped"];
      }
      case "receive": {
        const [cmdText, kind, ...rest] = args;
        if (kind !== "request" && kind !== "response")
          throw new Error(`expected request or response, got ${kind}`);
        const { seq, ack, id } = fieldsOf(rest, ["seq", "ack", "id"]);
        const verdict = session.receive({
          seq: seq!,
          ack: ack!,
          id: id!,
          cmd: commandOf(cmdText),
          response: kind === "response",
          error: WireError.NONE,
        });
        return [verdict === "protocol-error" ? `protocol-error: ${session.problem}` : verdict];
      }
      case "new":
        if (args.length > 1 || (args.length === 1 && args[0] !== "continues-predecessor"))
          throw new Error(`expected "new" or "new continues-predecessor"`);
        session = new WireSession({ continuesPredecessor: args.length === 1 });
        return [];
      case "attach": {
        const messages = session.attach();
        return messages.length === 0
          ? ["(nothing to resend)"]
          : messages.map((m) => `send ${describeMessage(m)}`);
      }
      case "detach":
        session.detach();
        return [];
      case "reset":
        session.resetForNewServer();
        return [];
      case "forget":
        session.forgetRequest(Number(args[0]));
        return [];
      case "state":
        return [
          `${session.attached ? "attached" : "detached"} unanswered=${session.unansweredRequests} ` +
            `unacked=${session.unackedResponses} owed=${session.owedResponses} lastReceived=${session.lastReceivedSeq}`,
        ];
      case "classify": {
        const fields = Object.fromEntries(args.map((a) => a.split("=") as [string, string]));
        return [
          classifyGreeting(
            { lastServerTerm: BigInt(fields.last ?? "x"), farewell: yesNo(fields.farewell) },
            { term: BigInt(fields.term ?? "x"), hasSession: yesNo(fields.session) },
          ),
        ];
      }
      default:
        throw new Error(`unknown command ${command}`);
    }
  };
}

transcriptTests("session", TRANSCRIPTS_DIR, makeHandler);

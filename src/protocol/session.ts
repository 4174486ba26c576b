/**
 * The reliable session (core/session.ts) bound to keylock's wire messages: commands, wire errors and
 * payload bodies of messages.ts. Drivers keep one `WireSession` per peer.
 * Guarantees: what `WireSession` returns is a `Message` the codec encodes; greetings never enter it (it
 * throws InvariantError when asked to queue one).
 * Relies on: core/session.ts for every session rule; messages.ts for the message shapes.
 */
import { ReliableSession, type SessionProfile } from "../core/session.js";
import { Command, WireError, type Body } from "./messages.js";

const COMMAND_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Command).map(([name, code]) => [code, name]),
);

export const WIRE_SESSION_PROFILE: SessionProfile<Command, WireError> = {
  noError: WireError.NONE,
  unsequenced: [Command.GREETING],
  commandName: (cmd) => COMMAND_NAMES.get(cmd) ?? `command ${cmd}`,
};

export class WireSession extends ReliableSession<Command, WireError, Body> {
  constructor(options: { continuesPredecessor?: boolean } = {}) {
    super(WIRE_SESSION_PROFILE, options);
  }
}

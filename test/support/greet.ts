// Greeting v2 by hand, for tests that drive raw sockets (hostile peers, limits, wire checks): HELLO, then
// GREETING with the proofs client/handshake.ts makes. Unlike the client library it returns refusals as
// answers instead of throwing, and it lets a test keep or swap an identity (rid, claim seed, resumption
// secret) across connections — e.g. to act as a second client claiming someone else's rid.
import { GreetingExchange } from "../../src/client/handshake.js";
import { newIdentity, type Identity } from "../../src/io/greeting-proofs.js";
import { WireError, type Message } from "../../src/protocol/messages.js";

/** What a client keeps between greetings. */
export class RawIdentity {
  clusterId = "";
  resume: Identity | null = null;
  readonly claim: Identity = newIdentity();
  constructor(
    readonly rid: bigint,
    readonly secret?: string,
  ) {}
}

export interface RawGreetFields {
  lastServerTerm?: bigint;
  farewell?: boolean;
  admin?: boolean;
  name?: string;
  pid?: number;
}

/**
 * Greets over a raw connection: `send` writes a message, `next` waits for the next greeting-phase answer.
 * Returns the last answer (the HELLO answer if that was refused, else the GREETING answer); a successful
 * answer updates `identity` (cluster id, resumption secret) after checking the server's proof.
 */
export async function rawGreet(
  send: (message: Message) => void,
  next: () => Promise<Message>,
  identity: RawIdentity,
  fields: RawGreetFields = {},
): Promise<Message> {
  const exchange = new GreetingExchange("test", {
    rid: identity.rid,
    name: fields.name ?? "raw",
    pid: fields.pid ?? 0,
    lastServerTerm: fields.lastServerTerm ?? 0n,
    farewell: fields.farewell ?? false,
    admin: fields.admin ?? false,
    secret: identity.secret,
    clusterId: identity.clusterId,
    resume: identity.resume,
    claim: fields.admin === true ? null : identity.claim,
  });
  send(exchange.hello());
  const hello = await next();
  if (hello.header.error !== WireError.NONE) return hello;
  send(exchange.greeting(hello));
  const answer = await next();
  if (answer.header.error !== WireError.NONE) return answer;
  const result = exchange.finish(answer);
  identity.clusterId = result.response.clusterId;
  if (result.resume !== null) identity.resume = result.resume;
  return answer;
}

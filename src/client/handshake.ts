/**
 * The client's half of greeting v2 (docs/protocol.md "Greeting"), shared by lock clients
 * (client/connection.ts), admin connections (client/admin.ts) and tests that greet by hand.
 *
 * One exchange per socket: `hello()` is the first frame (the client's nonce); `greeting(helloAnswer)`
 * checks the HELLO answer and makes the GREETING request with the proofs; `finish(greetingAnswer)`
 * checks the answer. Guarantees:
 * - With a cluster secret, nothing the server says is trusted before its proof verified: an answer
 *   without a valid server proof (an impostor, or a member of another cluster) is EAUTH. A HELLO
 *   naming another cluster than the one this client met before is EAUTH too.
 * - The identity proof is signed with the resumption secret when the client holds one, else with its
 *   claim seed (whose public key goes along); neither seed ever leaves the client.
 * - Refusals become KeylockErrors (EAUTH, EFENCED, ENOTLEADER with `leader`, ECONNECT otherwise).
 *   Refusals carry no proof: an impostor can make a client give up, never make it believe anything.
 * Relies on: io/greeting-proofs.ts for every proof; the caller sending the frames in order.
 */
import { KeylockError } from "../core/errors.js";
import { deriveKey } from "../io/keys.js";
import { Command, PROTOCOL_VERSION, WireError, type GreetingResponse, type Message } from "../protocol/messages.js";
import {
  clientClusterProof,
  identityFromSeed,
  identityProof,
  newNonce,
  type Identity,
  proofMatches,
  serverClusterProof,
  transcriptBytes,
  wrapResumeSecret,
} from "../io/greeting-proofs.js";

export interface GreetingIdentity {
  readonly rid: bigint;
  readonly name: string;
  readonly pid: number;
  readonly lastServerTerm: bigint;
  readonly farewell: boolean;
  readonly admin: boolean;
  readonly secret: string | undefined;
  /** The cluster id learned from an earlier greeting ("" before the first). */
  readonly clusterId: string;
  /** The identity of the resumption secret, once the server gave one; else null (the claim signs). */
  readonly resume: Identity | null;
  /** The claim chosen for this client's first greeting; null for admin connections. */
  readonly claim: Identity | null;
}

export interface GreetingResult {
  readonly response: GreetingResponse;
  /** The resumption secret the server issued with this answer (unwrapped, as an identity), or null. */
  readonly resume: Identity | null;
}

/**
 * A refused greeting; `leader` with ENOTLEADER when the member named one; `ridTaken` (an EAUTH) when the
 * server says the rid is recorded for another client's claim (wire ERIDTAKEN).
 */
export type GreetingRefusal = KeylockError & { leader?: { slot: number; address: string }; ridTaken?: boolean };

/** One greeting on one socket; its state is in #private fields (issue 10). */
export class GreetingExchange {
  readonly #clientNonce = newNonce();
  #transcript: Buffer | null = null;
  #key: Buffer | null = null;
  #clusterId = "";
  readonly #server: string;
  readonly #identity: GreetingIdentity;

  constructor(server: string, identity: GreetingIdentity) {
    this.#server = server;
    this.#identity = identity;
  }

  /** The first frame on the socket. */
  hello(): Message {
    return {
      header: { seq: 1, ack: 0, id: 1, cmd: Command.HELLO, response: false, error: WireError.NONE },
      payload: { kind: "hello-request", body: { protocolVersion: PROTOCOL_VERSION, nonce: this.#clientNonce } },
    };
  }

  /** Checks the HELLO answer and returns the GREETING request. Throws a GreetingRefusal. */
  greeting(answer: Message): Message {
    if (answer.header.cmd !== Command.HELLO || !answer.header.response) {
      throw new KeylockError("EPROTO", `${this.#server} did not answer HELLO first`);
    }
    if (answer.payload.kind !== "hello-response") throw refusal(this.#server, answer);
    const hello = answer.payload.body;
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      throw new KeylockError("EAUTH", `${this.#server} speaks protocol version ${hello.protocolVersion}; this client speaks ${PROTOCOL_VERSION}`);
    }
    const id = this.#identity;
    if (id.clusterId !== "" && hello.clusterId !== id.clusterId) {
      throw new KeylockError("EAUTH", `${this.#server} belongs to cluster "${hello.clusterId}", not "${id.clusterId}" (the one this client joined)`);
    }
    this.#clusterId = hello.clusterId;
    this.#key = id.secret === undefined ? null : deriveKey(id.secret, hello.clusterId, "keylock greeting v2");
    const signer = id.resume ?? id.claim;
    const claimKey = id.resume === null && id.claim !== null ? id.claim.publicKey : new Uint8Array(0);
    const fields = {
      clusterId: hello.clusterId,
      protocolVersion: PROTOCOL_VERSION,
      rid: id.rid,
      lastServerTerm: id.lastServerTerm,
      farewell: id.farewell,
      admin: id.admin,
      name: id.name,
      pid: id.pid,
      claimKey,
    };
    const transcript = transcriptBytes({ ...fields, clientNonce: this.#clientNonce, serverNonce: hello.nonce });
    this.#transcript = transcript;
    return {
      header: { seq: 2, ack: answer.header.seq, id: 2, cmd: Command.GREETING, response: false, error: WireError.NONE },
      payload: {
        kind: "greeting-request",
        body: {
          ...fields,
          proof: this.#key === null ? new Uint8Array(0) : clientClusterProof(this.#key, transcript),
          identityProof: signer === null ? new Uint8Array(0) : identityProof(signer, transcript),
        },
      },
    };
  }

  /** Checks the GREETING answer (the server's proof first). Throws a GreetingRefusal. */
  finish(answer: Message): GreetingResult {
    const transcript = this.#transcript;
    if (transcript === null) throw new Error("finish() before greeting()");
    if (answer.header.cmd !== Command.GREETING || !answer.header.response) {
      throw new KeylockError("EPROTO", `${this.#server} did not answer the greeting`);
    }
    if (answer.payload.kind !== "greeting-response") throw refusal(this.#server, answer);
    const response = answer.payload.body;
    if (this.#key !== null && !proofMatches(response.proof, serverClusterProof(this.#key, transcript, response.serverTerm, response.resumeSecret))) {
      throw new KeylockError(
        "EAUTH",
        `${this.#server} did not prove it holds the cluster secret: an impostor, or a member of another cluster (nothing it said was used)`,
      );
    }
    if (response.clusterId !== this.#clusterId || response.rid !== this.#identity.rid || response.protocolVersion !== PROTOCOL_VERSION) {
      throw new KeylockError("EPROTO", `${this.#server} answered the greeting for another cluster, rid or protocol version`);
    }
    const resume = response.resumeSecret.length === 0 ? null : identityFromSeed(wrapResumeSecret(this.#key, transcript, response.resumeSecret));
    return { response, resume };
  }
}

/** A refused HELLO or GREETING as a KeylockError. */
export function refusal(server: string, answer: Message): GreetingRefusal {
  const body = answer.payload.kind === "error" ? answer.payload.body : { message: `error ${answer.header.error}` };
  switch (answer.header.error) {
    case WireError.EAUTH:
      return new KeylockError("EAUTH", `${server} refused the greeting: ${body.message}`);
    case WireError.EFENCED:
      return new KeylockError("EFENCED", `${server}: ${body.message}`);
    case WireError.ERIDTAKEN: {
      const error: GreetingRefusal = new KeylockError("EAUTH", `${server} refused the greeting: ${body.message}`);
      error.ridTaken = true;
      return error;
    }
    case WireError.ENOTLEADER: {
      const error: GreetingRefusal = new KeylockError("ENOTLEADER", `${server}: ${body.message}`);
      if ("leader" in body && body.leader) error.leader = body.leader;
      return error;
    }
    default:
      return new KeylockError("ECONNECT", `${server} refused the greeting: ${body.message}`);
  }
}

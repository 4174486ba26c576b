/**
 * The greeting's proofs (greeting v2, docs/protocol.md; io/greeting-proofs.ts), for the lock server driver
 * (runtime/server.ts): the cluster proof and version check, the identity check it hands to the server
 * machine (core/server-machine.ts `IdentityCheck`), and the answer with the server's proof.
 *
 * Guarantees:
 * - `greetingProblem` names why a greeting cannot be served on this cluster at all (wrong cluster id or
 *   version, a missing or wrong cluster proof), or undefined.
 * - `checkIdentity` verifies the identity proof under the keys the rid is known by (its resumption key, or
 *   else its claim key, as recorded); for a rid known nowhere, under the greeting's own claim key, and then,
 *   for a first greeting (lastServerTerm 0), makes fresh resumption keys the machine may record (`seed` is
 *   the secret answered to the client when it does).
 * Relies on: the transcript covering both nonces and every greeting field (io/greeting-proofs.ts).
 */
import {
  clientClusterProof,
  identityProofMatches,
  newIdentity,
  proofMatches,
  serverClusterProof,
  wrapResumeSecret,
  PUBLIC_KEY_BYTES,
} from "../io/greeting-proofs.js";
import type { ClientKeys, IdentityCheck } from "../core/server-machine.js";
import { PROTOCOL_VERSION, type Body, type GreetingRequest } from "../protocol/messages.js";
import type { MountedClientRecord } from "../store/store.js";

export function greetingProblem(greeting: GreetingRequest, transcript: Buffer, clusterId: string, greetingKey: Buffer | null): string | undefined {
  // The client learned the cluster id from our HELLO answer; the transcript (and every proof) covers it.
  if (greeting.clusterId !== clusterId) {
    return `wrong cluster id "${greeting.clusterId}" (this is cluster "${clusterId}")`;
  }
  if (greeting.protocolVersion !== PROTOCOL_VERSION) {
    return `protocol version ${greeting.protocolVersion} is not supported (this server speaks ${PROTOCOL_VERSION})`;
  }
  if (greetingKey !== null && !proofMatches(greeting.proof, clientClusterProof(greetingKey, transcript))) {
    return greeting.proof.length === 0
      ? "this cluster has a secret and the greeting carries no proof: pass the cluster secret"
      : "wrong cluster secret (the greeting's proof does not verify on this connection)";
  }
  return undefined;
}

/** The identity check of a greeting under `known` keys (null: the rid is known nowhere). */
export function checkIdentity(known: ClientKeys | null, greeting: GreetingRequest, transcript: Buffer): { identity: IdentityCheck; seed: Buffer | null } {
  if (known !== null) return { identity: { kind: "known", keys: known, ok: identityMatches(known, transcript, greeting.identityProof) }, seed: null };
  const claimOk = identityProofMatches(greeting.claimKey, transcript, greeting.identityProof);
  if (!claimOk || greeting.lastServerTerm !== 0n) return { identity: { kind: "unknown", claimOk, fresh: null }, seed: null };
  const resume = newIdentity();
  const fresh = { resumeKey: resume.publicKey.toString("hex"), claimKey: Buffer.from(greeting.claimKey).toString("hex") };
  return { identity: { kind: "unknown", claimOk, fresh }, seed: resume.seed };
}

/** The greeting's answer: the server's proof over the transcript, and the wrapped resumption secret if one is issued. */
export function greetingAnswer(
  server: { clusterId: string; term: bigint; greetingKey: Buffer | null },
  greeting: GreetingRequest,
  transcript: Buffer,
  resumeSecret: Uint8Array | null,
): Body {
  const key = server.greetingKey;
  const wrapped = resumeSecret === null ? new Uint8Array(0) : wrapResumeSecret(key, transcript, resumeSecret);
  return {
    kind: "greeting-response",
    body: {
      clusterId: server.clusterId,
      protocolVersion: PROTOCOL_VERSION,
      serverTerm: server.term,
      rid: greeting.rid,
      proof: key === null ? new Uint8Array(0) : serverClusterProof(key, transcript, server.term, wrapped),
      resumeSecret: wrapped,
    },
  };
}

/** The keys a record holds, or null for no record. */
export function keysOf(record: MountedClientRecord | null | undefined): ClientKeys | null {
  return record == null ? null : { resumeKey: record.resumeKey, claimKey: record.claimKey };
}

/** Whether an identity proof verifies under a client's resumption key, or else its claim key. */
function identityMatches(keys: ClientKeys, transcript: Buffer, proof: Uint8Array): boolean {
  for (const hex of [keys.resumeKey, keys.claimKey]) {
    if (hex.length === PUBLIC_KEY_BYTES * 2 && identityProofMatches(Buffer.from(hex, "hex"), transcript, proof)) return true;
  }
  return false;
}

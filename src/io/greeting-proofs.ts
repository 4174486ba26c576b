/**
 * Greeting v2 proofs (protocol version 2, docs/protocol.md "Greeting"; DESIGN §9). Pure functions over
 * node:crypto, used by the server (runtime/server.ts), the client (client/connection.ts) and admin
 * connections (client/admin.ts).
 *
 * Every proof covers the transcript: both 32-byte nonces (the client's from HELLO, the server's from its
 * answer), the cluster id, the protocol version, the rid, the flags (farewell, admin), the client's
 * lastServerTerm, name and pid, and the claim key it offers. A proof made on one connection therefore
 * verifies on no other (the server's nonce is fresh for every connection): a replayed greeting gets nothing.
 *
 * - Cluster proofs (a cluster with a secret): HMAC-SHA256 keyed by deriveKey(secret, clusterId,
 *   "keylock greeting v2") (io/keys.ts). The client's proves it holds the secret; the server's, over the
 *   transcript and its answer (term, wrapped resumption secret), proves the member holds it too.
 * - Identity proofs (every cluster): an Ed25519 signature over the transcript by a key whose 32-byte seed
 *   is the client's resumption secret R (from the server) or its claim seed c (chosen by the client for
 *   its first greeting). The store keeps only the public keys: a one-way function of the seeds, so
 *   neither a reader of the store nor another client holding the cluster secret can sign for a rid.
 * - Wrapping: R travels once, in the answer to a client's first greeting; with a cluster secret it is
 *   XORed with HMAC(greeting key, "wrap" + transcript), readable only by secret holders on this
 *   connection. Without a secret (and without TLS) it travels in clear, that once.
 * - Comparisons of proofs are constant-time (`proofMatches`).
 * Relies on: nonces from `randomBytes` (never reused), the secret's entropy (io/keys.ts).
 */
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, timingSafeEqual, verify, type KeyObject } from "node:crypto";

import { CLUSTER_PROOF_BYTES, NONCE_BYTES, PUBLIC_KEY_BYTES, RESUME_SECRET_BYTES, SIGNATURE_BYTES } from "../protocol/schema.js";
export { CLUSTER_PROOF_BYTES, NONCE_BYTES, PUBLIC_KEY_BYTES, RESUME_SECRET_BYTES, SIGNATURE_BYTES };

/** Everything a greeting's proofs cover (see the module comment). */
export interface GreetingTranscript {
  readonly clientNonce: Uint8Array;
  readonly serverNonce: Uint8Array;
  readonly clusterId: string;
  readonly protocolVersion: number;
  readonly rid: bigint;
  readonly lastServerTerm: bigint;
  readonly farewell: boolean;
  readonly admin: boolean;
  readonly name: string;
  readonly pid: number;
  readonly claimKey: Uint8Array;
}

/** The transcript as bytes: every field length-prefixed (4 bytes big-endian), so no two transcripts collide. */
export function transcriptBytes(t: GreetingTranscript): Buffer {
  const fixed = Buffer.alloc(4 + 8 + 8 + 1 + 4);
  fixed.writeUInt32BE(t.protocolVersion, 0);
  fixed.writeBigUInt64BE(t.rid, 4);
  fixed.writeBigUInt64BE(t.lastServerTerm, 12);
  fixed.writeUInt8((t.farewell ? 1 : 0) | (t.admin ? 2 : 0), 20);
  fixed.writeUInt32BE(t.pid >>> 0, 21);
  const parts = [
    Buffer.from("keylock greeting transcript v2", "utf8"),
    t.clientNonce,
    t.serverNonce,
    Buffer.from(t.clusterId, "utf8"),
    fixed,
    Buffer.from(t.name, "utf8"),
    t.claimKey,
  ];
  const out: Buffer[] = [];
  for (const part of parts) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(part.length, 0);
    out.push(length, Buffer.from(part.buffer, part.byteOffset, part.byteLength));
  }
  return Buffer.concat(out);
}

function hmac(key: Buffer, label: string, ...parts: Uint8Array[]): Buffer {
  const mac = createHmac("sha256", key).update(label, "utf8");
  for (const part of parts) mac.update(part);
  return mac.digest();
}

/** The client's cluster proof: it holds the cluster secret, on this connection, for this greeting. */
export function clientClusterProof(greetingKey: Buffer, transcript: Buffer): Buffer {
  return hmac(greetingKey, "client", transcript);
}

/** The server's cluster proof over the transcript and its answer (term, wrapped resumption secret). */
export function serverClusterProof(greetingKey: Buffer, transcript: Buffer, serverTerm: bigint, wrappedSecret: Uint8Array): Buffer {
  const term = Buffer.alloc(8);
  term.writeBigUInt64BE(serverTerm, 0);
  return hmac(greetingKey, "server", transcript, term, wrappedSecret);
}

/** Constant-time equality of a received proof with the expected one (false on any length mismatch). */
export function proofMatches(given: Uint8Array, expected: Uint8Array): boolean {
  return given.length === expected.length && given.length > 0 && timingSafeEqual(given, expected);
}

/** XORs R with a pad only cluster-secret holders on this connection can make; the same call unwraps. */
export function wrapResumeSecret(greetingKey: Buffer | null, transcript: Buffer, secret: Uint8Array): Buffer {
  if (greetingKey === null) return Buffer.from(secret);
  const pad = hmac(greetingKey, "wrap", transcript);
  const out = Buffer.alloc(secret.length);
  for (let i = 0; i < secret.length; i++) out[i] = secret[i]! ^ pad[i]!;
  return out;
}

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/** An Ed25519 identity: the 32-byte seed (R or c), its public key (what the store keeps), the signing key. */
export interface Identity {
  readonly seed: Buffer;
  readonly publicKey: Buffer;
  readonly key: KeyObject;
}

/** A fresh identity (a new resumption secret, or a client's claim). */
export function newIdentity(): Identity {
  const { privateKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  return { seed: Buffer.from(jwk.d!, "base64url"), publicKey: Buffer.from(jwk.x!, "base64url"), key: privateKey };
}

// A raw seed becomes a key through JWK: `d` is the seed; Node derives the public key from it (the `x`
// the format demands is not used, so a placeholder goes in). About 20 times faster than PKCS#8 DER.
const PLACEHOLDER_X = Buffer.alloc(PUBLIC_KEY_BYTES).toString("base64url");

/** The identity of a seed received from the server (a resumption secret). */
export function identityFromSeed(seed: Uint8Array): Identity {
  if (seed.length !== RESUME_SECRET_BYTES) throw new RangeError(`a seed is ${RESUME_SECRET_BYTES} bytes`);
  const d = Buffer.from(seed).toString("base64url");
  const key = createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d, x: PLACEHOLDER_X }, format: "jwk" });
  const jwk = createPublicKey(key).export({ format: "jwk" });
  return { seed: Buffer.from(seed), publicKey: Buffer.from(jwk.x!, "base64url"), key };
}

const IDENTITY_LABEL = Buffer.from("keylock identity v2", "utf8");

/** The identity proof: an Ed25519 signature over the transcript. */
export function identityProof(identity: Identity, transcript: Buffer): Buffer {
  return sign(null, Buffer.concat([IDENTITY_LABEL, transcript]), identity.key);
}

/** Whether `signature` is an identity proof over `transcript` by the key whose public half is `publicKey`. */
export function identityProofMatches(publicKey: Uint8Array, transcript: Buffer, signature: Uint8Array): boolean {
  if (publicKey.length !== PUBLIC_KEY_BYTES || signature.length !== SIGNATURE_BYTES) return false;
  try {
    const x = Buffer.from(publicKey).toString("base64url");
    const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
    return verify(null, Buffer.concat([IDENTITY_LABEL, transcript]), key, signature);
  } catch {
    return false; // a public key that is not a valid curve point verifies nothing
  }
}

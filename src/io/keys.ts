/**
 * The cluster secret's key hierarchy (DESIGN §9, issue 9). One secret S per cluster, a UTF-8 string that
 * only members (and, for the greeting, clients) hold; every key is derived from it, one per purpose:
 *
 *   key(purpose) = HKDF-SHA256(ikm = S as UTF-8, salt = the cluster id as UTF-8, info = purpose, 32 bytes)
 *
 * Guarantees:
 * - Deterministic: the same secret, cluster id and purpose give the same key on every member.
 * - Separated: keys for different purposes, clusters or secrets are unrelated (HKDF's info and salt), so a
 *   quorum key never verifies a greeting proof and a datagram of another cluster with the same secret
 *   never verifies here.
 * - The store keeps only `secretDigest(S)` = hex SHA-256(S), a verifier: a member given the wrong secret
 *   refuses to start (`secretRefusal`). No key is ever derived from the digest, so a reader of the store
 *   learns no key.
 * Relies on: the secret having enough entropy (a passphrase a person can guess is guessable offline from
 *   the digest or from one captured datagram; operations.md asks for 32 random bytes, e.g. `openssl rand
 *   -base64 32`).
 */
import { createHash, hkdfSync, timingSafeEqual } from "node:crypto";

/** Every purpose a key is derived for; the info label of HKDF. Add new ones, never reuse or rename one. */
export const KEY_PURPOSES = [
  /** Tags quorum datagrams (io/udp.ts). */
  "keylock quorum v1",
  /** Greeting proofs of protocol version 2 (io/greeting-proofs.ts: cluster proofs both ways, wrapping). */
  "keylock greeting v2",
] as const;
export type KeyPurpose = (typeof KEY_PURPOSES)[number];

export const DERIVED_KEY_BYTES = 32;

/** The key for `purpose` in cluster `clusterId` (see the contract above). */
export function deriveKey(secret: string, clusterId: string, purpose: KeyPurpose): Buffer {
  if (!(KEY_PURPOSES as readonly string[]).includes(purpose)) throw new RangeError(`unknown key purpose ${String(purpose)}`);
  return Buffer.from(hkdfSync("sha256", Buffer.from(secret, "utf8"), Buffer.from(clusterId, "utf8"), purpose, DERIVED_KEY_BYTES));
}

/** What the store keeps of a cluster secret (`keylock format --secret-file` writes it): hex SHA-256. */
export function secretDigest(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/**
 * Why a member must not start with `secret` on a cluster whose config holds `digest`, or null if it may:
 * a cluster formatted with a secret needs the same secret, one formatted without needs none. The digest
 * comparison is constant-time.
 */
export function secretRefusal(digest: string | null, secret: string | undefined): string | null {
  if (digest === null) {
    return secret === undefined ? null : "the cluster was formatted without a secret: run without --secret-file, or format a new cluster with one";
  }
  if (secret === undefined) return "the cluster was formatted with a secret: pass --secret-file";
  const want = Buffer.from(digest, "utf8");
  const got = Buffer.from(secretDigest(secret), "utf8");
  return want.length === got.length && timingSafeEqual(want, got) ? null : "the secret does not match the one the cluster was formatted with";
}

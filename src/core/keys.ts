/**
 * Lock keys (DESIGN §2): byte strings of at most 1 KiB, ordered bytewise; and rids, the 64-bit client ids
 * (never 0 nor 2^64-1: those two are reserved).
 *
 * Inside the core a key is a `Key`: a JavaScript string holding one byte per UTF-16 code unit
 * (0..255, "binary string"). That makes keys usable as Map keys and makes `<` on two keys exactly
 * the bytewise order the recovery cursor relies on ("strictly after key K"). Conversions happen at the
 * edges (protocol codec, client API).
 * Relies on: nothing; no Buffer here so the core stays pure.
 */
import { KEY_BYTES_MAX } from "./limits.js";
export { KEY_BYTES_MAX };

/** A lock key: one byte per code unit (0..255). Build it with keyFromBytes / keyFromText. */
export type Key = string & { readonly __key: unique symbol };

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: false });

export function keyFromBytes(bytes: Uint8Array): Key {
  let out = "";
  const chunkBytes = 4096;
  for (let i = 0; i < bytes.length; i += chunkBytes) {
    out += String.fromCharCode(...bytes.subarray(i, i + chunkBytes));
  }
  return out as Key;
}

export function keyFromText(text: string): Key {
  return keyFromBytes(utf8Encoder.encode(text));
}

export function keyToBytes(key: Key): Uint8Array {
  const bytes = new Uint8Array(key.length);
  for (let i = 0; i < key.length; i++) bytes[i] = key.charCodeAt(i);
  return bytes;
}

/** The key as UTF-8 text (invalid sequences become U+FFFD); for display, never for identity. */
export function keyToText(key: Key): string {
  return utf8Decoder.decode(keyToBytes(key));
}

export function keyToHex(key: Key): string {
  let hex = "";
  for (let i = 0; i < key.length; i++) hex += key.charCodeAt(i).toString(16).padStart(2, "0");
  return hex;
}

/** Bytewise order: negative when a sorts before b. */
export function compareKeys(a: Key, b: Key): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Why a value is not a valid key, or undefined when it is one. */
export function keyProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length > KEY_BYTES_MAX) return `key is ${bytes.length} bytes; at most ${KEY_BYTES_MAX} allowed`;
  return undefined;
}

/** A 64-bit rid as 16 lowercase hex digits (DESIGN §6). */
export function ridToHex(rid: bigint): string {
  return rid.toString(16).padStart(16, "0");
}

/** Whether a 64-bit rid is one of the two reserved values, 0 and 2^64-1, that no client ever has. */
export function isReservedRid(rid: bigint): boolean {
  return rid === 0n || rid === 0xffff_ffff_ffff_ffffn;
}

/**
 * A rid from `draw64` (64 random bits per call, from wherever the caller's randomness comes: crypto for a
 * process, the world's seeded source in the simulator), drawn again on a reserved value.
 */
export function drawRid(draw64: () => bigint): bigint {
  for (;;) {
    const rid = draw64();
    if (!isReservedRid(rid)) return rid;
  }
}

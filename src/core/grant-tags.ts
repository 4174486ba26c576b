/**
 * Grant tags (DESIGN §9 "Recovery"; docs/protocol.md §7, §8): every non-null grant carries a tag, a MAC
 * under the cluster's grant-tag key (16 random bytes kept in the store, shared by every member) over the
 * client's rid, the granting server's term, the grant's number among that server's grants, the granted
 * mode and the key. A client keeps the tag of its latest grant on each lock and reports it in recovery,
 * so that a new server, faced with two conflicting reports, can tell a grant that was handed out from
 * one that was not, and the later of two grants from the earlier: a client cannot claim in recovery a
 * lock it was never given, nor one it gave back, against the client that holds it now (known finding F1).
 *
 * Guarantees:
 * - `tag` is SipHash-2-4 (Aumasson and Bernstein) of the 25 + key-length bytes
 *   rid (u64 LE) ‖ term (u64 LE) ‖ grantNo (u64 LE) ‖ MODE_CODE (1 byte) ‖ key bytes,
 *   cut to its low 53 bits, so it travels and is kept as a JavaScript number (a wire uint).
 *   test/unit/grant-tags.test.ts holds `sipHash24` to the reference vectors.
 * - `verify` answers whether a recovery report's mode is covered by its tag: the tag is that of a grant
 *   of the reported mode, or of a mode a server could have invalidated down to it (write for a reported
 *   read). A null report is never verified (null conflicts with nothing).
 * - Allocation-free per tag (one scratch buffer per module), pure: the same inputs give the same tag.
 * Relies on: the key staying secret to the members (the store), and on 53 bits being enough against
 * online guessing (a wrong guess is only ever tested once per conflicting report, and costs the guesser
 * its session).
 */
import { KEY_BYTES_MAX, type Key } from "./keys.js";
import { modeCode, type LockMode } from "./modes.js";
import type { Rid } from "./lock-messages.js";

/** Bytes of a grant-tag key. */
export const GRANT_TAG_KEY_BYTES = 16;

/** What a tag is about, as a recovery report carries it (core/lock-messages.ts RecoveredLock). */
export interface GrantClaim {
  readonly key: Key;
  readonly mode: LockMode;
  readonly grantTerm: bigint;
  readonly grantNo: number;
  readonly grantTag: number;
}

/** Tags and checks grants under one key. */
export class GrantTags {
  readonly #k0h: number;
  readonly #k0l: number;
  readonly #k1h: number;
  readonly #k1l: number;

  constructor(key: Uint8Array) {
    if (key.length !== GRANT_TAG_KEY_BYTES)
      throw new RangeError(`a grant-tag key has ${GRANT_TAG_KEY_BYTES} bytes, not ${key.length}`);
    this.#k0l = readU32(key, 0);
    this.#k0h = readU32(key, 4);
    this.#k1l = readU32(key, 8);
    this.#k1h = readU32(key, 12);
  }

  /** The tag of grant number `grantNo` of the server of `term`: `mode` on `key` to `rid`. */
  tag(rid: Rid, key: Key, mode: LockMode, term: bigint, grantNo: number): number {
    const length = message(rid, key, modeCode(mode), term, grantNo);
    sip(this.#k0h, this.#k0l, this.#k1h, this.#k1l, scratch, length);
    return (outHigh & 0x1fffff) * 0x100000000 + outLow;
  }

  /** Whether `claim` (reported by `rid`) carries the tag of a grant that covers its mode (see the module comment). */
  verify(rid: Rid, claim: GrantClaim): boolean {
    const { key, mode, grantTerm, grantNo, grantTag } = claim;
    if (mode === "null" || grantNo < 1) return false;
    if (this.tag(rid, key, mode, grantTerm, grantNo) === grantTag) return true;
    return mode === "read" && this.tag(rid, key, "write", grantTerm, grantNo) === grantTag;
  }
}

/** Whether grant (termA, noA) was handed out after grant (termB, noB): a later term, or later in one term. */
export function grantIsLater(termA: bigint, noA: number, termB: bigint, noB: number): boolean {
  return termA > termB || (termA === termB && noA > noB);
}

// ---------------------------------------------------------------------------------------------------
// The message and SipHash-2-4 over 32-bit halves (no BigInt on the grant path).

const scratch = new Uint8Array(25 + KEY_BYTES_MAX + 8);
/** The scratch buffer as a DataView: setBigUint64 writes a u64 without allocating. */
const scratchView = new DataView(scratch.buffer);
const U32 = 0x100000000;

function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function putU32(at: number, value: number): void {
  scratch[at] = value & 0xff;
  scratch[at + 1] = (value >>> 8) & 0xff;
  scratch[at + 2] = (value >>> 16) & 0xff;
  scratch[at + 3] = (value >>> 24) & 0xff;
}

/** Writes the tagged message into `scratch`; returns its length. */
function message(rid: Rid, key: Key, modeCode: number, term: bigint, grantNo: number): number {
  scratchView.setBigUint64(0, rid, true);
  scratchView.setBigUint64(8, term, true);
  putU32(16, grantNo % U32);
  putU32(20, Math.floor(grantNo / U32));
  scratch[24] = modeCode;
  const length = key.length;
  for (let i = 0; i < length; i++) scratch[25 + i] = key.charCodeAt(i);
  return 25 + length;
}

// The result of the last `sip`: module-level, so no call allocates.
let outHigh = 0;
let outLow = 0;

/**
 * SipHash-2-4 of bytes[0, length) under (k0, k1), each as high and low 32-bit words; the result in
 * outHigh, outLow (unsigned). One function with the state in locals and SipRound written out (twice: per
 * block and in the finalization): about 4 times faster than a state in module variables and a round
 * function. Words are int32 throughout; a 64-bit add carries when the unsigned low words overflow.
 */
function sip(k0h: number, k0l: number, k1h: number, k1l: number, bytes: Uint8Array, length: number): void {
  let v0h = k0h ^ 0x736f6d65,
    v0l = k0l ^ 0x70736575;
  let v1h = k1h ^ 0x646f7261,
    v1l = k1l ^ 0x6e646f6d;
  let v2h = k0h ^ 0x6c796765,
    v2l = k0l ^ 0x6e657261;
  let v3h = k1h ^ 0x74656462,
    v3l = k1l ^ 0x79746573;
  let h: number, l: number;
  const whole = length - (length % 8);
  for (let at = 0; at <= whole; at += 8) {
    let ml: number, mh: number;
    if (at < whole) {
      ml = bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24);
      mh = bytes[at + 4]! | (bytes[at + 5]! << 8) | (bytes[at + 6]! << 16) | (bytes[at + 7]! << 24);
    } else {
      // The last block: the remaining bytes, then the length's low byte in the top byte.
      ml = 0;
      mh = (length & 0xff) << 24;
      for (let i = 0; i < length - whole; i++) {
        const b = bytes[whole + i]!;
        if (i < 4) ml |= b << (8 * i);
        else mh |= b << (8 * (i - 4));
      }
    }
    v3h ^= mh;
    v3l ^= ml;
    for (let round = 0; round < 2; round++) {
      l = (v0l + v1l) | 0;
      v0h = (v0h + v1h + (l >>> 0 < v0l >>> 0 ? 1 : 0)) | 0;
      v0l = l;
      h = (v1h << 13) | (v1l >>> 19);
      l = (v1l << 13) | (v1h >>> 19);
      v1h = h ^ v0h;
      v1l = l ^ v0l;
      h = v0h;
      v0h = v0l;
      v0l = h;
      l = (v2l + v3l) | 0;
      v2h = (v2h + v3h + (l >>> 0 < v2l >>> 0 ? 1 : 0)) | 0;
      v2l = l;
      h = (v3h << 16) | (v3l >>> 16);
      l = (v3l << 16) | (v3h >>> 16);
      v3h = h ^ v2h;
      v3l = l ^ v2l;
      l = (v0l + v3l) | 0;
      v0h = (v0h + v3h + (l >>> 0 < v0l >>> 0 ? 1 : 0)) | 0;
      v0l = l;
      h = (v3h << 21) | (v3l >>> 11);
      l = (v3l << 21) | (v3h >>> 11);
      v3h = h ^ v0h;
      v3l = l ^ v0l;
      l = (v2l + v1l) | 0;
      v2h = (v2h + v1h + (l >>> 0 < v2l >>> 0 ? 1 : 0)) | 0;
      v2l = l;
      h = (v1h << 17) | (v1l >>> 15);
      l = (v1l << 17) | (v1h >>> 15);
      v1h = h ^ v2h;
      v1l = l ^ v2l;
      h = v2h;
      v2h = v2l;
      v2l = h;
    }
    v0h ^= mh;
    v0l ^= ml;
  }
  v2l ^= 0xff;
  for (let i = 0; i < 4; i++) {
    l = (v0l + v1l) | 0;
    v0h = (v0h + v1h + (l >>> 0 < v0l >>> 0 ? 1 : 0)) | 0;
    v0l = l;
    h = (v1h << 13) | (v1l >>> 19);
    l = (v1l << 13) | (v1h >>> 19);
    v1h = h ^ v0h;
    v1l = l ^ v0l;
    h = v0h;
    v0h = v0l;
    v0l = h;
    l = (v2l + v3l) | 0;
    v2h = (v2h + v3h + (l >>> 0 < v2l >>> 0 ? 1 : 0)) | 0;
    v2l = l;
    h = (v3h << 16) | (v3l >>> 16);
    l = (v3l << 16) | (v3h >>> 16);
    v3h = h ^ v2h;
    v3l = l ^ v2l;
    l = (v0l + v3l) | 0;
    v0h = (v0h + v3h + (l >>> 0 < v0l >>> 0 ? 1 : 0)) | 0;
    v0l = l;
    h = (v3h << 21) | (v3l >>> 11);
    l = (v3l << 21) | (v3h >>> 11);
    v3h = h ^ v0h;
    v3l = l ^ v0l;
    l = (v2l + v1l) | 0;
    v2h = (v2h + v1h + (l >>> 0 < v2l >>> 0 ? 1 : 0)) | 0;
    v2l = l;
    h = (v1h << 17) | (v1l >>> 15);
    l = (v1l << 17) | (v1h >>> 15);
    v1h = h ^ v2h;
    v1l = l ^ v2l;
    h = v2h;
    v2h = v2l;
    v2l = h;
  }
  outHigh = (v0h ^ v1h ^ v2h ^ v3h) >>> 0;
  outLow = (v0l ^ v1l ^ v2l ^ v3l) >>> 0;
}

/** SipHash-2-4 of `bytes` under a 16-byte key, as a u64 (for tests against the reference vectors). */
export function sipHash24(key: Uint8Array, bytes: Uint8Array): bigint {
  if (key.length !== GRANT_TAG_KEY_BYTES)
    throw new RangeError(`a SipHash key has ${GRANT_TAG_KEY_BYTES} bytes`);
  sip(readU32(key, 4), readU32(key, 0), readU32(key, 12), readU32(key, 8), bytes, bytes.length);
  return (BigInt(outHigh) << 32n) | BigInt(outLow);
}

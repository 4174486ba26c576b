/**
 * The LOCK_RECOVER response's fast path through the codec, both directions (codec.ts calls it, like
 * lock-fast.ts for LOCK): a recovery batch (up to RECOVER_BATCH_LOCKS_MAX locks, a million of them after
 * a server restart) written by the client (each lock's bytes as string pieces that native code joins and
 * writes) and read byte by byte by the server, without the MessagePack library, the structure scan or the
 * schema walk.
 *
 * Guarantees:
 * - It only ever answers for messages the generic path (codec.ts `encodeMessageGeneric`,
 *   `decodeBodyGeneric`) accepts, and then answers exactly what that path would: `encodeRecoverFrame`
 *   returns the same bytes, `decodeRecoverBody` an equal message (the same object shapes, too). For
 *   anything else — an invalid field, keys out of order, too many locks, a body in a form it does not
 *   read (another integer or bin format, trailing bytes, a truncated body) — it returns null and the
 *   generic path answers, with its own error. So the wire rules and their error texts live in one place
 *   (schema.ts), and tests (test/unit/codec.test.ts) hold the two paths equal on valid and mutated input.
 * - Each entry's grant proof (grantTerm, grantNo, grantTag; schema.ts checkGrantProof) is checked as the
 *   schema checks it: all 0 in a null entry; grantTerm and grantNo both 0 or both ≥ 1 in the others,
 *   grantTag 0 without them.
 * - Decoding reads only inside the body (every length is checked against the bytes left before it is
 *   used), allocates only the message it returns (one object per lock, the key a string; a grantTerm
 *   equal to the last one read reuses its bigint: `getTerm`), and never references the input. Encoding
 *   checks each lock before taking its bytes, keeps nothing between calls (its string pieces are dropped
 *   before it returns) and allocates the frame it returns, which shares memory with nothing else (a
 *   Buffer may sit in Node's pool, as every Buffer.allocUnsafe does).
 * Relies on: the library writing integers in the most compact format, a bigint as uint64, a bin with the
 * shortest length header and an array with the shortest header (codec.ts/schema.ts send header integers,
 * writeSeqs, grantTerms, grantNos and grantTags above 2^32-1 as bigints); Command.LOCK_RECOVER,
 * WireError.NONE and MODE_CODE being fixints. The integer writer is lock-fast.ts's `putUint` (shared
 * since 3 December: the LOCK codec's instructions per grant did not move, `bench/grant-cost.ts codec`
 * under callgrind, 10,487 / 11,114 before and 11,487 / 10,526 after), and `uintChars` writes grantNo and
 * grantTag in its format; the readers (`getUint`, which reports its end in `at`, and `getTerm`) are this
 * module's own.
 */
import { Buffer } from "node:buffer";
import { KEY_BYTES_MAX, type Key } from "../core/keys.js";
import { RECOVER_BATCH_LOCKS_MAX as RECOVER_MAX_BINDING, type RecoveredLock } from "../core/lock-messages.js";
import { FRAME_BYTES_MAX as FRAME_BYTES_MAX_BINDING, SEQ_MAX as SEQ_MAX_BINDING } from "../core/limits.js";
import { modeCode, type LockMode } from "../core/modes.js";
import { asBuffer, putUint } from "./lock-fast.js";
import { Command, WireError, type Header, type Message } from "./messages.js";

// Module-local copies: the hot path reads plain constants, not import bindings.
const SEQ_MAX = SEQ_MAX_BINDING;
const KEY_MAX = KEY_BYTES_MAX;
const LOCKS_MAX = RECOVER_MAX_BINDING;
const FRAME_MAX = FRAME_BYTES_MAX_BINDING;
const RECOVER = Command.LOCK_RECOVER;
const NONE = WireError.NONE;
const UINT32_MAX = 0xffffffff;
const TWO_32 = 0x100000000;
const BIG_UINT32_MAX = 0xffffffffn;
const UINT64_MAX = (1n << 64n) - 1n;
/** The largest high word of a uint64 that is still ≤ 2^53-1. */
const SAFE_HIGH_MAX = 0x1fffff;
const MODES: readonly LockMode[] = ["null", "read", "write", "write_only"];

// ---------------------------------------------------------------------------------------------------
// Encoding

function isSafeUint(value: unknown, min: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= SEQ_MAX;
}

/** The frame's header (length, fixarray 7, three integers of ≤ 9 bytes, cmd, flags, error, array16 header). */
const head = new Uint8Array(48);
/**
 * The body of the locks array, one string piece per part (per lock: the fixarray and bin header, the
 * key, the mode and writeSeq, then the grant proof as one piece when absent or three), joined by native
 * code: kept by the module (encoding is synchronous and never re-entered) and emptied after each frame,
 * so it holds no key between frames.
 */
const parts: string[] = [];
/** fixarray 6 + bin8 header of a key of `length` < 256 bytes, by length. */
const LOCK_HEAD8 = Array.from({ length: 256 }, (_, length) => String.fromCharCode(0x96, 0xc4, length));
/** The mode's code and a writeSeq below 128 (a positive fixint), by code × 128 + writeSeq. */
const TAIL_FIXINT = Array.from({ length: 4 * 128 }, (_, i) => String.fromCharCode(i >>> 7, i & 0x7f));
/** A positive fixint, by value. */
const FIXINT = Array.from({ length: 128 }, (_, i) => String.fromCharCode(i));
/** No grant proof: grantTerm, grantNo and grantTag 0. */
const NO_PROOF = "\x00\x00\x00";
/** A code unit above 0xff: the key is not a binary string (the generic path names it). */
// eslint-disable-next-line no-control-regex -- the range of binary-string code units, 0x00 included
const NOT_BINARY = /[^\x00-\xff]/;
const fromCharCode = String.fromCharCode;

/** The mode's code and writeSeq as the library writes them (uint64 above 2^32-1), one char per byte; null when invalid. */
function tail(code: number, writeSeq: bigint): string | null {
  const value = Number(writeSeq); // exact below 2^53: compared with 2^32-1 and 0 as the bigint would be
  if (value >= 0 && value <= UINT32_MAX) {
    if (value < 0x80) return TAIL_FIXINT[(code << 7) | value]!;
    if (value < 0x100) return fromCharCode(code, 0xcc, value);
    if (value < 0x10000) return fromCharCode(code, 0xcd, value >>> 8, value & 0xff);
    return fromCharCode(code, 0xce, value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
  }
  if (writeSeq < 0n || writeSeq > UINT64_MAX) return null;
  const high = Number(writeSeq >> 32n);
  const low = Number(writeSeq & BIG_UINT32_MAX);
  return (
    fromCharCode(code, 0xcf, high >>> 24, (high >>> 16) & 0xff, (high >>> 8) & 0xff, high & 0xff) +
    fromCharCode(low >>> 24, (low >>> 16) & 0xff, (low >>> 8) & 0xff, low & 0xff)
  );
}

/** A safe unsigned integer as the library writes it (as lock-fast.ts putUint), one char per byte. */
function uintChars(value: number): string {
  if (value < 0x80) return FIXINT[value]!;
  if (value < 0x100) return fromCharCode(0xcc, value);
  if (value < 0x10000) return fromCharCode(0xcd, value >>> 8, value & 0xff);
  if (value <= UINT32_MAX)
    return fromCharCode(0xce, value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
  const high = Math.floor(value / TWO_32);
  return uint64Chars(high, value - high * TWO_32);
}

/** uint64 `high` × 2^32 + `low` (the library's format for a bigint), one char per byte: one string (a tag's usual form). */
function uint64Chars(high: number, low: number): string {
  return fromCharCode(
    0xcf,
    high >>> 24,
    (high >>> 16) & 0xff,
    (high >>> 8) & 0xff,
    high & 0xff,
    low >>> 24,
    (low >>> 16) & 0xff,
    (low >>> 8) & 0xff,
    low & 0xff,
  );
}

/** A grantTerm as the library writes it (as `tail` writes writeSeq), one char per byte; null when not a uint64. */
function termChars(term: bigint): string | null {
  const value = Number(term); // exact below 2^53, as in `tail`
  if (value >= 0 && value <= UINT32_MAX) return uintChars(value);
  if (term < 0n || term > UINT64_MAX) return null;
  return uint64Chars(Number(term >> 32n), Number(term & BIG_UINT32_MAX));
}

/**
 * The frame of a LOCK_RECOVER response with error NONE carrying `locks`, or null when the message is not
 * one the fast path writes (then the generic path encodes it or throws its ProtocolError). `buffer`: a
 * Buffer for a socket (codec.ts `encodeFrameBuffer`), else a plain Uint8Array. One pass: each lock is
 * checked as the schema would (key a string ≤ KEY_BYTES_MAX code units, strictly after the previous one;
 * a mode name; writeSeq and grantTerm bigints in 0..2^64-1; grantNo and grantTag numbers in 0..2^53-1;
 * the grant proof's rules) and its bytes, one char per byte, become string pieces; native code joins
 * them, checks that every key was a binary string (no code unit above 0xff) and writes them into the
 * frame. A recovery runs this once per batch of a client's whole lock table, from code that never ran
 * before: the per-lock work is a few table lookups and at most three strings (mode and writeSeq, none
 * below 128; grantNo and grantTag, none without a proof; a grantTerm's chars are kept while it repeats),
 * with no loop over a key's bytes, so the interpreter and the baseline compiler run it cheaply and
 * TurboFan has a small loop to compile.
 */
export function encodeRecoverFrame(header: Header, locks: unknown, buffer: boolean): Uint8Array | null {
  const { seq, ack, id } = header;
  if (!isSafeUint(seq, 1) || !isSafeUint(ack, 0) || !isSafeUint(id, 1) || header.response !== true)
    return null;
  if (!Array.isArray(locks)) return null;
  const list = locks as readonly RecoveredLock[];
  const count = list.length;
  if (count > LOCKS_MAX) return null;
  const b = head;
  b[4] = 0x97;
  let pos = putUint(b, 5, seq);
  pos = putUint(b, pos, ack);
  pos = putUint(b, pos, id);
  b[pos] = RECOVER;
  b[pos + 1] = 1;
  b[pos + 2] = NONE;
  pos += 3;
  if (count < 16) {
    b[pos] = 0x90 | count;
    pos += 1;
  } else {
    b[pos] = 0xdc;
    b[pos + 1] = count >>> 8;
    b[pos + 2] = count & 0xff;
    pos += 3;
  }
  const body = joinLocks(list, count, FRAME_MAX - (pos - 4));
  if (body === null) return null;
  const length = pos + body.length;
  const bodyLength = length - 4; // ≤ FRAME_MAX: joinLocks stops beyond the room left
  b[0] = bodyLength >>> 24;
  b[1] = (bodyLength >>> 16) & 0xff;
  b[2] = (bodyLength >>> 8) & 0xff;
  b[3] = bodyLength & 0xff;
  const out = buffer ? Buffer.allocUnsafe(length) : new Uint8Array(length);
  for (let i = 0; i < pos; i++) out[i] = b[i]!;
  // Documented Buffer#write, one char per byte (every char was checked to be ≤ 0xff).
  (buffer ? (out as Buffer) : Buffer.from(out.buffer, out.byteOffset, out.byteLength)).write(
    body,
    pos,
    "latin1",
  );
  return out;
}

/** The locks' bytes as one binary string of at most `room` chars, or null when a lock is invalid or they do not fit. */
function joinLocks(list: readonly RecoveredLock[], count: number, room: number): string | null {
  let bytes = 0;
  let previous = "";
  let j = 0;
  // A batch's grants mostly come from one or two servers: the last term's chars are reused.
  let lastTerm = 0n;
  let lastTermChars = "";
  for (let i = 0; i < count; i++) {
    const lock: unknown = list[i];
    if (typeof lock !== "object" || lock === null) return fail();
    const { key, mode, writeSeq, grantTerm, grantNo, grantTag } = lock as Record<string, unknown>;
    if (typeof key !== "string" || typeof writeSeq !== "bigint" || typeof grantTerm !== "bigint")
      return fail();
    if (!isSafeUint(grantNo, 0) || !isSafeUint(grantTag, 0)) return fail();
    const keyLength = key.length;
    const code = modeCode(mode);
    if (keyLength > KEY_MAX || code < 0 || (i > 0 && !(key > previous))) return fail();
    previous = key;
    const end = tail(code, writeSeq);
    if (end === null) return fail();
    // schema.ts checkGrantProof: a null entry carries no proof; another one grantTerm and grantNo both 0
    // or both ≥ 1, and grantTag 0 without them.
    const proof = grantNo !== 0;
    if (!proof) {
      if (grantTerm !== 0n || grantTag !== 0) return fail();
    } else {
      if (code === 0 || grantTerm === 0n) return fail();
      if (grantTerm !== lastTerm) {
        const chars = termChars(grantTerm);
        if (chars === null) return fail();
        lastTerm = grantTerm;
        lastTermChars = chars;
      }
    }
    const start =
      keyLength < 0x100
        ? LOCK_HEAD8[keyLength]!
        : fromCharCode(0x96, 0xc5, keyLength >>> 8, keyLength & 0xff);
    parts[j] = start;
    parts[j + 1] = key;
    parts[j + 2] = end;
    bytes += start.length + keyLength + end.length;
    if (!proof) {
      parts[j + 3] = NO_PROOF;
      bytes += 3;
      j += 4;
    } else {
      const no = uintChars(grantNo);
      const tag = uintChars(grantTag);
      parts[j + 3] = lastTermChars;
      parts[j + 4] = no;
      parts[j + 5] = tag;
      bytes += lastTermChars.length + no.length + tag.length;
      j += 6;
    }
    if (bytes > room) return fail(); // the generic path names the frame too large
  }
  const body = parts.join("");
  parts.length = 0;
  return NOT_BINARY.test(body) ? null : body;
}

/** Empties `parts` (no key is kept past the call) and answers null. */
function fail(): null {
  parts.length = 0;
  return null;
}

// ---------------------------------------------------------------------------------------------------
// Decoding

/** The position after the last integer read by `getUint`; -1 when it was not one the fast path reads. */
let at = 0;

/** An unsigned integer (fixint, uint 8/16/32/64) at `pos` of at most 2^53-1, or -1 (and `at` = -1). */
function getUint(b: Uint8Array, pos: number, n: number): number {
  if (pos >= n) return (at = -1);
  const head = b[pos]!;
  if (head < 0x80) {
    at = pos + 1;
    return head;
  }
  switch (head) {
    case 0xcc:
      if (n - pos < 2) break;
      at = pos + 2;
      return b[pos + 1]!;
    case 0xcd:
      if (n - pos < 3) break;
      at = pos + 3;
      return (b[pos + 1]! << 8) | b[pos + 2]!;
    case 0xce:
      if (n - pos < 5) break;
      at = pos + 5;
      return b[pos + 1]! * 0x1000000 + ((b[pos + 2]! << 16) | (b[pos + 3]! << 8) | b[pos + 4]!);
    case 0xcf: {
      if (n - pos < 9) break;
      const high = b[pos + 1]! * 0x1000000 + ((b[pos + 2]! << 16) | (b[pos + 3]! << 8) | b[pos + 4]!);
      if (high > SAFE_HIGH_MAX) break;
      const low = b[pos + 5]! * 0x1000000 + ((b[pos + 6]! << 16) | (b[pos + 7]! << 8) | b[pos + 8]!);
      at = pos + 9;
      return high * TWO_32 + low;
    }
  }
  return (at = -1);
}

/**
 * The last non-zero grantTerm read below 2^53, as a number and as the bigint it decoded to: a batch's
 * grants mostly share a few terms, so most entries reuse the bigint instead of allocating one (bigints are
 * immutable: sharing one between entries and batches is safe, and it references no input).
 */
let termNumber = 0;
let termBigint = 0n;

/** A grantTerm (uint64, in an unsigned format the fast path reads) at `pos`, its end in `at`; null when not one. */
function getTerm(b: Uint8Array, pos: number, n: number): bigint | null {
  let value: number;
  if (pos < n && b[pos] === 0xcf) {
    if (n - pos < 9) return null;
    const high = b[pos + 1]! * 0x1000000 + ((b[pos + 2]! << 16) | (b[pos + 3]! << 8) | b[pos + 4]!);
    const low = b[pos + 5]! * 0x1000000 + ((b[pos + 6]! << 16) | (b[pos + 7]! << 8) | b[pos + 8]!);
    at = pos + 9;
    if (high > SAFE_HIGH_MAX) return (BigInt(high) << 32n) | BigInt(low);
    value = high * TWO_32 + low;
  } else {
    value = getUint(b, pos, n);
    if (at < 0) return null;
  }
  if (value === 0) return 0n;
  if (value !== termNumber) {
    termBigint = BigInt(value);
    termNumber = value;
  }
  return termBigint;
}

/** Whether the key bytes b[a..a+la) sort strictly after b[p..p+lp) (bytewise, a shorter prefix first). */
function bytesAfter(b: Uint8Array, a: number, la: number, p: number, lp: number): boolean {
  const common = la < lp ? la : lp;
  for (let i = 0; i < common; i++) {
    const x = b[a + i]!;
    const y = b[p + i]!;
    if (x !== y) return x > y;
  }
  return la > lp;
}

/**
 * A LOCK_RECOVER response (error NONE) read from the body `b[start..end)`, or null when the body is not
 * one in the form the fast path reads, or breaks a rule (then the generic path decodes it or throws its
 * ProtocolError). Reads nothing outside `start..end`.
 */
export function decodeRecoverBody(b: Uint8Array, start = 0, end = b.length): Message | null {
  const n = end;
  // fixarray 7, three integers, cmd, flags, error, the locks' array header.
  if (n - start < 8 || b[start] !== 0x97) return null;
  const seq = getUint(b, start + 1, n);
  if (at < 0 || seq < 1) return null;
  const ack = getUint(b, at, n);
  if (at < 0) return null;
  const id = getUint(b, at, n);
  if (at < 0 || id < 1) return null;
  let pos = at;
  if (n - pos < 4 || b[pos] !== RECOVER || b[pos + 1] !== 1 || b[pos + 2] !== NONE) return null;
  pos += 3;
  let count: number;
  const arrayHead = b[pos]!;
  if (arrayHead >= 0x90 && arrayHead <= 0x9f) {
    count = arrayHead & 0x0f;
    pos += 1;
  } else if (arrayHead === 0xdc) {
    if (n - pos < 3) return null;
    count = (b[pos + 1]! << 8) | b[pos + 2]!;
    // The library writes array16 only from 16 elements on.
    if (count < 16 || count > LOCKS_MAX) return null;
    pos += 3;
  } else {
    return null;
  }
  // Each lock takes at least 8 bytes (fixarray, bin8 header 2, mode, writeSeq, grantTerm, grantNo,
  // grantTag): refuse a count the bytes left cannot hold before allocating for it.
  if (count * 8 > n - pos) return null;
  const locks = new Array<RecoveredLock>(count);
  const bytes = asBuffer(b); // once per batch, for its keys
  let previousAt = -1;
  let previousLength = 0;
  for (let i = 0; i < count; i++) {
    // fixarray 6 and the key's bin header (2 or 3 bytes)
    if (n - pos < 3 || b[pos] !== 0x96) return null;
    let length: number;
    const binHead = b[pos + 1]!;
    if (binHead === 0xc4) {
      length = b[pos + 2]!;
      pos += 3;
    } else if (binHead === 0xc5) {
      if (n - pos < 4) return null;
      length = (b[pos + 2]! << 8) | b[pos + 3]!;
      if (length < 0x100) return null; // the library writes bin8 below 256
      pos += 4;
    } else {
      return null;
    }
    // The key, the mode, writeSeq, grantTerm, grantNo and grantTag: length + 5 bytes at least.
    if (length > KEY_MAX || n - pos < length + 5) return null;
    if (previousAt >= 0 && !bytesAfter(b, pos, length, previousAt, previousLength)) return null;
    previousAt = pos;
    previousLength = length;
    // One code unit per byte (exactly core keyFromBytes), by Node's native latin1 decoder.
    const key = bytes.toString("latin1", pos, pos + length) as Key;
    pos += length;
    const modeByte = b[pos]!;
    if (modeByte > 3) return null;
    pos += 1;
    let writeSeq: bigint;
    if (b[pos] === 0xcf) {
      if (n - pos < 9) return null;
      const high = b[pos + 1]! * 0x1000000 + ((b[pos + 2]! << 16) | (b[pos + 3]! << 8) | b[pos + 4]!);
      const low = b[pos + 5]! * 0x1000000 + ((b[pos + 6]! << 16) | (b[pos + 7]! << 8) | b[pos + 8]!);
      writeSeq = high <= SAFE_HIGH_MAX ? BigInt(high * TWO_32 + low) : (BigInt(high) << 32n) | BigInt(low);
      pos += 9;
    } else {
      const value = getUint(b, pos, n);
      if (at < 0) return null;
      writeSeq = BigInt(value);
      pos = at;
    }
    const grantTerm = getTerm(b, pos, n);
    if (grantTerm === null) return null;
    const grantNo = getUint(b, at, n);
    if (at < 0) return null;
    const grantTag = getUint(b, at, n);
    if (at < 0) return null;
    pos = at;
    // schema.ts checkGrantProof: a null entry carries no proof; another one grantTerm and grantNo both 0
    // or both ≥ 1, and grantTag 0 without them.
    if (grantNo === 0 ? grantTerm !== 0n || grantTag !== 0 : modeByte === 0 || grantTerm === 0n) return null;
    locks[i] = { key, mode: MODES[modeByte]!, writeSeq, grantTerm, grantNo, grantTag };
  }
  if (pos !== n) return null;
  const header: Header = { seq, ack, id, cmd: RECOVER, response: true, error: NONE };
  return { header, payload: { kind: "recover-response", body: { locks } } };
}

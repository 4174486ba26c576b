/**
 * The LOCK message's fast path through the codec, both directions (codec.ts calls it first, for every
 * message): the frame of a LOCK message with error NONE written byte by byte, and a LOCK body read byte
 * by byte, without the MessagePack library, the structure scan, intermediate arrays or the schema walk.
 *
 * Guarantees:
 * - It only ever answers for messages the generic path (codec.ts `encodeMessageGeneric`,
 *   `decodeBodyGeneric`) accepts, and then answers exactly what that path would: `encodeLockFrame` returns
 *   the same bytes, `decodeLockBody` an equal message (the same object shapes, too). For anything else —
 *   an invalid field, a rule broken, a body in a form it does not read (another integer format, trailing
 *   bytes, a truncated body) — it returns null and the generic path answers, with its own error. So the
 *   wire rules and their error texts live in one place (schema.ts), and tests (test/unit/codec.test.ts)
 *   hold the two paths equal on valid and mutated input.
 * - The grant proof (grantTerm, grantNo, grantTag; schema.ts checkGrantProof) is checked as the schema
 *   checks it: all 0 in a request and in a null grant, grantTerm and grantNo both 0 or both ≥ 1 in
 *   other responses, grantTag 0 without them.
 * - Decoding reads only inside the body (every length is checked against the bytes left before it is
 *   used), allocates only the message it returns (a grantTerm equal to the last one read reuses its
 *   bigint: `getTerm`), and never references the input (the key becomes a string). Encoding allocates
 *   only the frame it returns (for a socket: a Buffer from Node's pool, its length worked out first so
 *   that it is written once, in place).
 * - Not re-entrant-sensitive: the decoder's position (`at`) and what it read last (`termZero`, `proofNo`)
 *   are used only within one synchronous call; the term caches of both directions are memos (a term
 *   always decodes to an equal bigint, and encodes to the same bytes).
 * Relies on: the library writing integers in the most compact format, a bigint as uint64 and a bin with
 * the shortest length header (codec.ts/schema.ts send header integers, writeSeq, grantTerm, grantNo and
 * grantTag above 2^32-1 as bigints); Command.LOCK, WireError.NONE and MODE_CODE being small fixints.
 */
import { Buffer } from "node:buffer";
import { KEY_BYTES_MAX, type Key } from "../core/keys.js";
import { SEQ_MAX as SEQ_MAX_BINDING } from "../core/limits.js";
import { modeCode, type LockMode } from "../core/modes.js";
import { Command, WireError, type Header, type LockMessageBody, type Message } from "./messages.js";

// Module-local copies: the hot path reads plain constants, not import bindings.
const SEQ_MAX = SEQ_MAX_BINDING;
const KEY_MAX = KEY_BYTES_MAX;
const LOCK = Command.LOCK;
const NONE = WireError.NONE;
const UINT32_MAX = 0xffffffff;
const TWO_32 = 0x100000000;
const UINT64_MAX = (1n << 64n) - 1n;
/** The largest high word of a uint64 that is still ≤ 2^53-1. */
const SAFE_HIGH_MAX = 0x1fffff;
const MODES: readonly LockMode[] = ["null", "read", "write", "write_only"];

// ---------------------------------------------------------------------------------------------------
// Encoding

function isSafeUint(value: unknown, min: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= SEQ_MAX;
}

/** Bytes of a safe unsigned integer in the library's format (putUint). */
function uintBytes(value: number): number {
  return value < 0x80 ? 1 : value < 0x100 ? 2 : value < 0x10000 ? 3 : value <= UINT32_MAX ? 5 : 9;
}

/** `uintBytes` of a header counter, or -1 when it is not a safe unsigned integer ≥ `min` (isSafeUint). */
function counterBytes(value: unknown, min: number): number {
  return isSafeUint(value, min) ? uintBytes(value) : -1;
}

/**
 * Writes a safe unsigned integer at `pos` in the library's format; returns the position after it. Shared
 * with recover-fast.ts.
 */
export function putUint(b: Uint8Array, pos: number, value: number): number {
  if (value < 0x80) {
    b[pos] = value;
    return pos + 1;
  }
  if (value < 0x100) {
    b[pos] = 0xcc;
    b[pos + 1] = value;
    return pos + 2;
  }
  if (value < 0x10000) {
    b[pos] = 0xcd;
    b[pos + 1] = value >>> 8;
    b[pos + 2] = value & 0xff;
    return pos + 3;
  }
  if (value <= UINT32_MAX) {
    b[pos] = 0xce;
    b[pos + 1] = value >>> 24;
    b[pos + 2] = (value >>> 16) & 0xff;
    b[pos + 3] = (value >>> 8) & 0xff;
    b[pos + 4] = value & 0xff;
    return pos + 5;
  }
  // Above 2^32-1 the codec sends a bigint, which the library writes as uint64.
  const high = Math.floor(value / TWO_32);
  return putUint64Words(b, pos, high, value - high * TWO_32);
}

/** Writes uint64 `high` × 2^32 + `low` at `pos` (the library's format for a bigint); returns the position after it. */
function putUint64Words(b: Uint8Array, pos: number, high: number, low: number): number {
  b[pos] = 0xcf;
  b[pos + 1] = high >>> 24;
  b[pos + 2] = (high >>> 16) & 0xff;
  b[pos + 3] = (high >>> 8) & 0xff;
  b[pos + 4] = high & 0xff;
  b[pos + 5] = low >>> 24;
  b[pos + 6] = (low >>> 16) & 0xff;
  b[pos + 7] = (low >>> 8) & 0xff;
  b[pos + 8] = low & 0xff;
  return pos + 9;
}

/** The last non-zero grantTerm encoded and its `uint64Number` (a server's grants all carry its term). */
let encodedTerm = 0n;
let encodedTermNumber = 0;

/**
 * A bigint as the number the library writes for it: itself in 0..2^32-1 (Number() is exact below 2^53 and
 * keeps every other bigint outside that range), -1 for a uint 64 (2^32..2^64-1), -2 outside 0..2^64-1.
 */
function uint64Number(value: bigint): number {
  const number = Number(value);
  if (number >= 0 && number <= UINT32_MAX) return number;
  return value < 0n || value > UINT64_MAX ? -2 : -1;
}

/**
 * The frame of a LOCK message with error NONE, or null when the message is not one the fast path writes
 * (then the generic path encodes it or throws its ProtocolError). A plain Uint8Array (copy-on-slice).
 */
export function encodeLockFrame(header: Header, lock: LockMessageBody): Uint8Array | null {
  const frame = encodeLockFrameBuffer(header, lock);
  return frame === null ? null : new Uint8Array(frame);
}

/**
 * The same frame as a Buffer cut from Node's shared pool (for a socket: `socket.write` takes it as it is,
 * where a plain Uint8Array on the JS heap is first moved off the heap into a new ArrayBuffer), or null.
 * Its length is worked out first, so the frame is written once, in place.
 *
 * The grant proof is checked, measured and written here, without helpers: TurboFan inlines callees only
 * up to a budget that putUint and Buffer.allocUnsafe already spend, and a call left out of line boxes a
 * 53-bit tag (a double) on every grant. With helpers, a grant cost about 900 instructions more than
 * before the proof, written here about 350 (callgrind, encodeLockFrame alone); a request, which carries
 * none (three zero bytes), costs what it did.
 */
export function encodeLockFrameBuffer(header: Header, lock: LockMessageBody): Buffer | null {
  const { seq, ack, id, response } = header;
  const seqBytes = counterBytes(seq, 1);
  const ackBytes = counterBytes(ack, 0);
  const idBytes = counterBytes(id, 1);
  if (seqBytes < 0 || ackBytes < 0 || idBytes < 0 || typeof response !== "boolean") return null;
  const key: unknown = lock.key;
  const oldMode = modeCode(lock.oldMode);
  const newMode = modeCode(lock.newMode);
  const writeSeq: unknown = lock.writeSeq;
  const noQueue: unknown = lock.noQueue;
  const grantTerm: unknown = lock.grantTerm;
  const grantNo: unknown = lock.grantNo;
  const grantTag: unknown = lock.grantTag;
  if (typeof key !== "string" || key.length > KEY_MAX || oldMode < 0 || newMode < 0) return null;
  if (typeof writeSeq !== "bigint" || typeof noQueue !== "boolean" || typeof grantTerm !== "bigint")
    return null;
  if (typeof grantNo !== "number" || !(grantNo >= 0 && grantNo <= SEQ_MAX) || !Number.isInteger(grantNo))
    return null;
  if (
    typeof grantTag !== "number" ||
    !(grantTag >= 0 && grantTag <= SEQ_MAX) ||
    !Number.isInteger(grantTag)
  ) {
    return null;
  }
  // writeSeq and grantTerm as the numbers the library writes for them (uint64Number). 0n (requests, no
  // proof) is tested first, and a grantTerm equal to the last one encoded reuses its number: comparing two
  // bigints is cheap, turning one into a number or comparing it with a range is not.
  const seqNumber = writeSeq === 0n ? 0 : uint64Number(writeSeq);
  if (seqNumber === -2) return null;
  let termNumber = 0;
  if (grantTerm !== 0n) {
    if (grantTerm !== encodedTerm) {
      const number = uint64Number(grantTerm);
      if (number === -2) return null;
      encodedTerm = grantTerm;
      encodedTermNumber = number;
    }
    termNumber = encodedTermNumber;
  }
  // schema.ts checkLockRules: requests carry writeSeq 0; a response carries one (≥ 1) exactly for write
  // and write_only grants, and never noQueue. checkGrantProof: requests and null grants carry no proof
  // (all three 0); other responses carry grantTerm and grantNo both 0 or both ≥ 1, and tag 0 without them.
  const carriesSeq = seqNumber !== 0;
  const noProof = termNumber === 0;
  if (response) {
    if (noQueue || newMode >= 2 !== carriesSeq) return null;
    if (noProof !== (grantNo === 0) || (noProof && grantTag !== 0) || (newMode === 0 && !noProof))
      return null;
  } else if (carriesSeq || !noProof || grantNo !== 0 || grantTag !== 0) {
    return null;
  }
  const keyLength = key.length;
  // length 4, fixarray, cmd/flags/error 3, fixarray, modes 2 and bool: 12 bytes; the key and its bin
  // header; seq, ack, id and writeSeq; the proof: three zero fixints, or grantTerm (a fixint, usually),
  // grantNo and grantTag (a uint 64, nearly always).
  const keyBytes = (keyLength < 0x100 ? 2 : 3) + keyLength;
  const integerBytes = seqBytes + ackBytes + idBytes + (seqNumber < 0 ? 9 : uintBytes(seqNumber));
  const termBytes = termNumber < 0x80 ? (termNumber < 0 ? 9 : 1) : uintBytes(termNumber);
  const proofBytes = noProof
    ? 3
    : termBytes + uintBytes(grantNo) + (grantTag > UINT32_MAX ? 9 : uintBytes(grantTag));
  const length = 12 + keyBytes + integerBytes + proofBytes;
  const b = Buffer.allocUnsafe(length);
  const bodyLength = length - 4; // far below FRAME_BYTES_MAX
  b[0] = 0;
  b[1] = 0;
  b[2] = bodyLength >>> 8;
  b[3] = bodyLength & 0xff;
  b[4] = 0x97;
  let pos = putUint(b, 5, seq);
  pos = putUint(b, pos, ack);
  pos = putUint(b, pos, id);
  b[pos] = LOCK;
  b[pos + 1] = response ? 1 : 0;
  b[pos + 2] = NONE;
  b[pos + 3] = 0x98;
  pos += 4;
  if (keyLength < 0x100) {
    b[pos] = 0xc4;
    b[pos + 1] = keyLength;
    pos += 2;
  } else {
    b[pos] = 0xc5;
    b[pos + 1] = keyLength >>> 8;
    b[pos + 2] = keyLength & 0xff;
    pos += 3;
  }
  for (let i = 0; i < keyLength; i++) {
    const code = key.charCodeAt(i);
    if (code > 0xff) return null; // not a binary string: the generic path names it (this Buffer is dropped)
    b[pos + i] = code;
  }
  pos += keyLength;
  b[pos] = oldMode;
  b[pos + 1] = newMode;
  pos += 2;
  if (seqNumber >= 0) {
    pos = putUint(b, pos, seqNumber);
  } else {
    b[pos] = 0xcf;
    b.writeBigUInt64BE(writeSeq, pos + 1);
    pos += 9;
  }
  b[pos] = noQueue ? 0xc3 : 0xc2;
  pos += 1;
  if (noProof) {
    b[pos] = 0;
    b[pos + 1] = 0;
    b[pos + 2] = 0;
    return b;
  }
  if (termNumber >= 0 && termNumber < 0x80) {
    b[pos] = termNumber;
    pos += 1;
  } else if (termNumber >= 0) {
    pos = putUint(b, pos, termNumber);
  } else {
    b[pos] = 0xcf;
    b.writeBigUInt64BE(grantTerm, pos + 1);
    pos += 9;
  }
  pos = putUint(b, pos, grantNo);
  if (grantTag <= UINT32_MAX) {
    putUint(b, pos, grantTag);
    return b;
  }
  const high = Math.floor(grantTag / TWO_32);
  const low = grantTag - high * TWO_32;
  b[pos] = 0xcf;
  b[pos + 1] = high >>> 24;
  b[pos + 2] = (high >>> 16) & 0xff;
  b[pos + 3] = (high >>> 8) & 0xff;
  b[pos + 4] = high & 0xff;
  b[pos + 5] = low >>> 24;
  b[pos + 6] = (low >>> 16) & 0xff;
  b[pos + 7] = (low >>> 8) & 0xff;
  b[pos + 8] = low & 0xff;
  return b;
}

// ---------------------------------------------------------------------------------------------------
// Decoding

/**
 * `b` as a Buffer: itself when it is one (what sockets read is: io/tcp.ts, frame.ts), else a Buffer view of
 * the same bytes, no copy (the simulator's and the tests' frames).
 */
export function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

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
 * The last non-zero grantTerm read below 2^53, as a number and as the bigint it decoded to: terms change
 * rarely, so most grants reuse the bigint instead of allocating one (bigints are immutable: sharing one
 * between messages is safe, and it references no input).
 */
let termNumber = 0;
let termBigint = 0n;
/** Whether the grantTerm `getTerm` read last was 0 (the rules test no bigint); the grantNo `getTermAndNo` read. */
let termZero = false;
let proofNo = 0;

/**
 * A grantTerm (uint64 in any unsigned format the fast path reads) at `pos`, with its end in `at` and
 * whether it is 0 in `termZero`; null when it is not one.
 */
function getTerm(b: Uint8Array, pos: number, n: number): bigint | null {
  let value: number;
  termZero = false;
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
  if (value === 0) {
    termZero = true;
    return 0n;
  }
  if (value !== termNumber) {
    termBigint = BigInt(value);
    termNumber = value;
  }
  return termBigint;
}

/**
 * A grant proof's grantTerm (returned) and grantNo (in `proofNo`) at `pos`, each an unsigned integer in a
 * form the fast path reads, with their end in `at` and whether the term is 0 in `termZero`; null when they
 * are not. Out of decodeLockBody (which reads a proof of three zero bytes in place, and grantTag), so that
 * its inlining budget goes to the header's integers; the usual forms here (a fixint term equal to the last
 * one, a fixint grantNo) are read in place too.
 */
function getTermAndNo(b: Uint8Array, pos: number, n: number): bigint | null {
  if (pos >= n) return null;
  let term: bigint | null;
  const termHead = b[pos]!;
  if (termHead === termNumber && termHead !== 0 && termHead < 0x80) {
    term = termBigint;
    termZero = false;
    pos += 1;
  } else {
    term = getTerm(b, pos, n);
    if (term === null) return null;
    pos = at;
  }
  if (pos >= n) return null;
  const noHead = b[pos]!;
  if (noHead < 0x80) {
    proofNo = noHead;
    at = pos + 1;
  } else {
    proofNo = getUint(b, pos, n);
    if (at < 0) return null;
  }
  return term;
}

/**
 * A LOCK message (request or response, error NONE) read from the body `b[start..end)`, or null when the
 * body is not one in the form the fast path reads (then the generic path decodes it or throws its
 * ProtocolError). Reads nothing outside `start..end`.
 */
export function decodeLockBody(b: Uint8Array, start = 0, end = b.length): Message | null {
  const n = end;
  // fixarray 7, three integers, cmd, flags, error, fixarray 8, key (≥ 2), modes (2), writeSeq, bool,
  // grantTerm, grantNo, grantTag: 17 bytes at least.
  if (n - start < 17 || b[start] !== 0x97) return null;
  const seq = getUint(b, start + 1, n);
  if (at < 0 || seq < 1) return null;
  const ack = getUint(b, at, n);
  if (at < 0) return null;
  const id = getUint(b, at, n);
  if (at < 0 || id < 1) return null;
  let pos = at;
  // cmd, flags, error, the payload's fixarray and the key's bin header: at least 6 bytes.
  if (n - pos < 6 || b[pos] !== LOCK || b[pos + 2] !== NONE || b[pos + 3] !== 0x98) return null;
  const flags = b[pos + 1]!;
  if (flags > 1) return null;
  pos += 4;
  let length: number;
  const binHead = b[pos]!;
  if (binHead === 0xc4) {
    length = b[pos + 1]!;
    pos += 2;
  } else if (binHead === 0xc5) {
    if (n - pos < 3) return null;
    length = (b[pos + 1]! << 8) | b[pos + 2]!;
    pos += 3;
  } else {
    return null;
  }
  // The key, two modes, writeSeq, the bool, grantTerm, grantNo and grantTag (≥ 1 each): length + 7 bytes at least.
  if (length > KEY_MAX || n - pos < length + 7) return null;
  // One code unit per byte (exactly core keyFromBytes), by Node's native latin1 decoder.
  const key = asBuffer(b).toString("latin1", pos, pos + length) as Key;
  pos += length;
  const oldCode = b[pos]!;
  const newCode = b[pos + 1]!;
  if (oldCode > 3 || newCode > 3) return null;
  pos += 2;
  let writeSeq: bigint;
  let seqZero: boolean;
  const seqHead = b[pos]!;
  if (seqHead === 0) {
    writeSeq = 0n;
    seqZero = true;
    pos += 1;
  } else if (seqHead === 0xcf) {
    if (n - pos < 10) return null;
    const high = b[pos + 1]! * 0x1000000 + ((b[pos + 2]! << 16) | (b[pos + 3]! << 8) | b[pos + 4]!);
    const low = b[pos + 5]! * 0x1000000 + ((b[pos + 6]! << 16) | (b[pos + 7]! << 8) | b[pos + 8]!);
    writeSeq = high <= SAFE_HIGH_MAX ? BigInt(high * TWO_32 + low) : (BigInt(high) << 32n) | BigInt(low);
    seqZero = high === 0 && low === 0;
    pos += 9;
  } else {
    const value = getUint(b, pos, n);
    if (at < 0) return null;
    writeSeq = BigInt(value);
    seqZero = value === 0;
    pos = at;
  }
  if (pos >= n) return null;
  const boolByte = b[pos]!;
  if (boolByte !== 0xc2 && boolByte !== 0xc3) return null;
  const noQueue = boolByte === 0xc3;
  pos += 1;
  // The proof: three zero fixints (requests, invalidations and their replies, null grants), read in
  // place; or grantTerm and grantNo (getTermAndNo), then grantTag, a uint 64 nearly always, read in place
  // (a 53-bit tag is a double: returned from a call, it would be boxed).
  let grantTerm = 0n;
  let grantNo = 0;
  let grantTag = 0;
  let noProof = true;
  if (!(n - pos === 3 && b[pos] === 0 && b[pos + 1] === 0 && b[pos + 2] === 0)) {
    const term = getTermAndNo(b, pos, n);
    if (term === null) return null;
    grantTerm = term;
    grantNo = proofNo;
    noProof = termZero;
    pos = at;
    if (n - pos === 9 && b[pos] === 0xcf) {
      const high = b[pos + 1]! * 0x1000000 + ((b[pos + 2]! << 16) | (b[pos + 3]! << 8) | b[pos + 4]!);
      if (high > SAFE_HIGH_MAX) return null;
      const low = b[pos + 5]! * 0x1000000 + ((b[pos + 6]! << 16) | (b[pos + 7]! << 8) | b[pos + 8]!);
      grantTag = high * TWO_32 + low;
    } else {
      grantTag = getUint(b, pos, n);
      if (at !== n) return null;
    }
  }
  // schema.ts checkLockRules and checkGrantProof (see encodeLockFrameBuffer).
  const response = flags === 1;
  if (response) {
    if (noQueue || newCode >= 2 === seqZero) return null;
    if (noProof !== (grantNo === 0) || (noProof && grantTag !== 0) || (newCode === 0 && !noProof))
      return null;
  } else if (!seqZero || !noProof || grantNo !== 0 || grantTag !== 0) {
    return null;
  }
  const header: Header = { seq, ack, id, cmd: LOCK, response, error: NONE };
  return {
    header,
    payload: {
      kind: "lock",
      body: {
        key,
        oldMode: MODES[oldCode]!,
        newMode: MODES[newCode]!,
        writeSeq,
        noQueue,
        grantTerm,
        grantNo,
        grantTag,
      },
    },
  };
}

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
 * - Decoding reads only inside the body (every length is checked against the bytes left before it is
 *   used), allocates only the message it returns, and never references the input (the key becomes a
 *   string). Encoding allocates only the frame it returns (for a socket: a Buffer from Node's pool, its
 *   length worked out first so that it is written once, in place).
 * - Not re-entrant-sensitive: the decoder's position (`at`) is used only within one synchronous call.
 * Relies on: the library writing integers in the most compact format, a bigint as uint64 and a bin with
 * the shortest length header (codec.ts/schema.ts send header integers above 2^32-1 and writeSeq above
 * 2^32-1 as bigints); Command.LOCK, WireError.NONE and MODE_CODE being small fixints.
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
  if (typeof key !== "string" || key.length > KEY_MAX || oldMode < 0 || newMode < 0) return null;
  if (typeof writeSeq !== "bigint" || writeSeq < 0n || writeSeq > UINT64_MAX || typeof noQueue !== "boolean") return null;
  // schema.ts checkLockRules: requests carry writeSeq 0; a response carries one (≥ 1) exactly for write
  // and write_only grants, and never noQueue.
  const carriesSeq = writeSeq !== 0n;
  if (response) {
    if (noQueue || (newMode >= 2) !== carriesSeq) return null;
  } else if (carriesSeq) {
    return null;
  }
  const keyLength = key.length;
  // writeSeq as a number when the library writes it as one (≤ 2^32-1); -1 for a uint64.
  const seqNumber = !carriesSeq ? 0 : writeSeq <= BIG_UINT32_MAX ? Number(writeSeq) : -1;
  // length 4, fixarray, seq, ack, id, cmd/flags/error 3, fixarray, bin header + key, modes 2, writeSeq, bool.
  const length =
    4 + 1 + seqBytes + ackBytes + idBytes + 3 + 1 + (keyLength < 0x100 ? 2 : 3) + keyLength + 2 +
    (seqNumber < 0 ? 9 : uintBytes(seqNumber)) + 1;
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
  b[pos + 3] = 0x95;
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
 * A LOCK message (request or response, error NONE) read from the body `b[start..end)`, or null when the
 * body is not one in the form the fast path reads (then the generic path decodes it or throws its
 * ProtocolError). Reads nothing outside `start..end`.
 */
export function decodeLockBody(b: Uint8Array, start = 0, end = b.length): Message | null {
  const n = end;
  // fixarray 7, three integers, cmd, flags, error, fixarray 5, key (≥ 2), modes (2), writeSeq, bool.
  if (n - start < 17 || b[start] !== 0x97) return null;
  const seq = getUint(b, start + 1, n);
  if (at < 0 || seq < 1) return null;
  const ack = getUint(b, at, n);
  if (at < 0) return null;
  const id = getUint(b, at, n);
  if (at < 0 || id < 1) return null;
  let pos = at;
  // cmd, flags, error, the payload's fixarray and the key's bin header: at least 6 bytes.
  if (n - pos < 6 || b[pos] !== LOCK || b[pos + 2] !== NONE || b[pos + 3] !== 0x95) return null;
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
  // The key, two modes, writeSeq (≥ 1) and the bool: length + 4 bytes at least.
  if (length > KEY_MAX || n - pos < length + 4) return null;
  // One code unit per byte (exactly core keyFromBytes), by Node's native latin1 decoder.
  const key = asBuffer(b).toString("latin1", pos, pos + length) as Key;
  pos += length;
  const oldCode = b[pos]!;
  const newCode = b[pos + 1]!;
  if (oldCode > 3 || newCode > 3) return null;
  pos += 2;
  let writeSeq: bigint;
  const seqHead = b[pos]!;
  if (seqHead === 0) {
    writeSeq = 0n;
    pos += 1;
  } else if (seqHead === 0xcf) {
    if (n - pos < 10) return null;
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
  if (n - pos !== 1) return null;
  const last = b[pos]!;
  if (last !== 0xc2 && last !== 0xc3) return null;
  const noQueue = last === 0xc3;
  const response = flags === 1;
  if (response) {
    if (noQueue || (newCode >= 2) !== (writeSeq !== 0n)) return null;
  } else if (writeSeq !== 0n) {
    return null;
  }
  const header: Header = { seq, ack, id, cmd: LOCK, response, error: NONE };
  return {
    header,
    payload: {
      kind: "lock",
      body: { key, oldMode: MODES[oldCode]!, newMode: MODES[newCode]!, writeSeq, noQueue },
    },
  };
}

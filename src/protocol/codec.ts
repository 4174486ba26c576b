/**
 * The keylock wire codec: frames and MessagePack bodies (docs/protocol.md is the normative description).
 *
 * Wire layout:
 *   frame = length (4 bytes, unsigned big-endian, 0..FRAME_BYTES_MAX) + body (`length` bytes)
 *   body  = MessagePack array [seq, ack, id, cmd, flags, error, payload]
 *     seq 1..2^53-1, ack 0..2^53-1, id 1..2^53-1; cmd a Command; flags bit0 = response (no other bit);
 *     error a WireError, NONE on every request; a response with error ≠ NONE carries an error payload.
 *   payload, by (cmd, response, error):
 *     error ≠ NONE           [message str, leader nil | [slot, address str]]   (leader only with ENOTLEADER)
 *     HELLO request          [protocolVersion, nonce bin(32)]
 *     HELLO response         [clusterId str, protocolVersion, nonce bin(32)]
 *     GREETING request       [clusterId str, protocolVersion, rid, lastServerTerm, flags, name str, pid,
 *                             proof bin(0|32), claimKey bin(0|32), identityProof bin(0|64)]
 *                            (flags bit0 = farewell, bit1 = admin)
 *     GREETING response      [clusterId str, protocolVersion, serverTerm, rid, proof bin(0|32), resumeSecret bin(0|32)]
 *     (the greeting block at the end of this file encodes and decodes these four)
 *     LOCK (both ways)       [key bin, oldMode, newMode, writeSeq, noQueue bool]
 *     LOCK_RECOVER request   [after bin | nil]
 *     LOCK_RECOVER response  [[key bin, mode, writeSeq], ...]   (≤ 1000 entries, keys strictly ascending)
 *     FAREWELL (both ways)   nil
 *     ADMIN_* request        [after bin | nil, limit]
 *     ADMIN_* response       plain data: nil, bool, int, float, str, bin, array, map with string keys
 *   Modes are codes 0..3 (MODE_CODE); rid, terms and writeSeq are uint64 (any MessagePack integer
 *   format; rid never 0 nor 2^64-1); keys are bin of at most KEY_BYTES_MAX bytes; strings are valid
 *   UTF-8. Lock messages: requests carry writeSeq 0; a response carries writeSeq ≥ 1 exactly when its
 *   newMode is write or write_only (0 otherwise) and never sets noQueue.
 *
 * Guarantees:
 * - `encodeMessage` and `decodeBody` check the same rules with the same field readers: a message that
 *   encodes decodes to an equal message, and a body that decodes re-encodes to an equal message (the
 *   fuzz test holds both). Encoding also insists on the JavaScript types of messages.ts (a number
 *   where a bigint belongs is refused, not converted). Anything outside the rules throws a
 *   ProtocolError (code EPROTO) naming the field; decoding never throws anything else (library errors
 *   are wrapped with `cause`).
 * - Resources are bounded by the frame: a body is scanned before the MessagePack library sees it, so a
 *   container can never claim more elements than the bytes left could hold, nesting is at most
 *   NESTING_DEPTH_MAX, and extension types are refused. A hostile frame costs memory proportional to
 *   its length, never more (without the scan, `dc ff ff` repeated makes the library allocate ~100 GB).
 * - `FrameDecoder` refuses an oversize length as soon as the 4 length bytes are known, before
 *   buffering any of the body; it yields the same messages however the input is split.
 * - Decoded messages never reference the input bytes (keys become strings, bins are copied), so the
 *   caller may reuse its buffers.
 * - Encoding reuses one MessagePack encoder (and the header and lock arrays) and decoding one decoder:
 *   no per-message codec objects. This is safe because neither function runs callbacks, so neither is
 *   ever re-entered. A lock message costs about 0.6 µs to encode and 0.9 µs to decode.
 * Relies on: @msgpack/msgpack v3 (big-endian integers, `useBigInt64`, `encodeSharedRef`); core key,
 * mode and error helpers.
 */
import { Buffer, isUtf8 } from "node:buffer";
import { Decoder, Encoder, ExtensionCodec } from "@msgpack/msgpack";
import { ProtocolError } from "../core/errors.js";
import { KEY_BYTES_MAX, type Key } from "../core/keys.js";
import { MODE_CODE, carriesWriteSeq, modeFromCode, type LockMode } from "../core/modes.js";
import { RECOVER_BATCH_LOCKS_MAX, type RecoveredLock } from "../core/lock-messages.js";
import {
  ADDRESS_BYTES_MAX,
  ADMIN_PAGE_ROWS_MAX,
  CLIENT_NAME_BYTES_MAX,
  CLUSTER_ID_BYTES_MAX,
  Command,
  ERROR_MESSAGE_BYTES_MAX,
  FRAME_BYTES_MAX,
  PROOF_BYTES_MAX,
  SEQ_MAX,
  SLOT_MAX,
  WireError,
  type Body,
  type ErrorBody,
  type Header,
  type Message,
} from "./messages.js";
import {
  NESTING_DEPTH_MAX,
} from "../core/limits.js";
export {
  NESTING_DEPTH_MAX,
};

/** Bytes of the big-endian length prefix in front of every body. */
export const FRAME_LENGTH_BYTES = 4;
/** Greeting flag bits (the `flags` element of a greeting request). */
export const GREETING_FLAG_FAREWELL = 1;
export const GREETING_FLAG_ADMIN = 2;

const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
const UINT32_MAX = 0xffffffff;
const BIG_UINT32_MAX = 0xffffffffn;
const HEADER_ELEMENTS = 7;
// Module-local copies: the hot path reads plain constants, not import bindings.
const { GREETING, LOCK, LOCK_RECOVER, FAREWELL, ADMIN_STATUS, ADMIN_LOCKS, ADMIN_STATS, HELLO } = Command;
const { NONE, ENOTLEADER } = WireError;
const COMMAND_MAX = HELLO;
const WIRE_ERROR_MAX = WireError.ESHUTDOWN;

/** Extension types are refused by the scan; this is the second fence should one ever get through. */
class NoExtensions extends ExtensionCodec {
  override decode(_data: Uint8Array, type: number): unknown {
    throw new ProtocolError(`body: MessagePack extension type ${type} is not allowed`);
  }
}

// The library counts leaves as a nesting level, hence + 1. Its buffer grows to the largest body sent.
const encoder = new Encoder({
  useBigInt64: true,
  initialBufferSize: 64 * 1024,
  maxDepth: NESTING_DEPTH_MAX + 1,
});
const decoder = new Decoder({
  useBigInt64: true,
  extensionCodec: new NoExtensions(),
  mapKeyConverter: (key: unknown): string => {
    if (typeof key === "string") return key;
    throw new ProtocolError(`body: map key ${describe(key)} is not a string; only string keys are allowed`);
  },
});

// ---------------------------------------------------------------------------------------------------
// Encoding

/** Reused for every body: the header array and the lock payload array (the hot path). */
const wireBody: unknown[] = new Array<unknown>(HEADER_ELEMENTS).fill(null);
const wireLock: unknown[] = new Array<unknown>(5).fill(null);
const keyScratch = new Uint8Array(KEY_BYTES_MAX);

/**
 * Encodes one message as a frame: 4-byte big-endian body length, then the MessagePack body.
 * Throws ProtocolError when a field is outside the wire rules or the body would exceed FRAME_BYTES_MAX.
 */
export function encodeMessage(message: Message): Uint8Array {
  const header = message.header;
  const seq = readSafeUint(header.seq, "seq", 1, true);
  const ack = readSafeUint(header.ack, "ack", 0, true);
  const id = readSafeUint(header.id, "id", 1, true);
  const cmd = readCommand(header.cmd);
  if (typeof header.response !== "boolean") throw fieldError("response", header.response, "a boolean");
  const error = readWireError(header.error);
  const expected = payloadKind(cmd, header.response, error);
  if (message.payload.kind !== expected) {
    throw new ProtocolError(
      `payload kind "${String(message.payload.kind)}" does not fit cmd ${cmd} ${header.response ? "response" : "request"}` +
        ` with error ${error}; expected "${expected}"`,
    );
  }
  wireBody[0] = wireInt(seq);
  wireBody[1] = wireInt(ack);
  wireBody[2] = wireInt(id);
  wireBody[3] = cmd;
  wireBody[4] = header.response ? 1 : 0;
  wireBody[5] = error;
  wireBody[6] = encodePayload(message.payload, header.response, error);
  let body: Uint8Array;
  try {
    body = encoder.encodeSharedRef(wireBody);
  } catch (cause) {
    throw new ProtocolError(`cannot encode message: ${errorText(cause)}`, { cause });
  } finally {
    wireBody[6] = null;
    wireLock[0] = null;
  }
  if (body.length > FRAME_BYTES_MAX) {
    throw new ProtocolError(
      `message body is ${body.length} bytes; at most FRAME_BYTES_MAX (${FRAME_BYTES_MAX}) allowed`,
    );
  }
  // A plain Uint8Array: small ones live on the JS heap (about twice as fast as Buffer.allocUnsafe here),
  // and callers get copy-on-slice semantics.
  const length = body.length;
  const frame = new Uint8Array(FRAME_LENGTH_BYTES + length);
  frame[0] = length >>> 24;
  frame[1] = (length >>> 16) & 0xff;
  frame[2] = (length >>> 8) & 0xff;
  frame[3] = length & 0xff;
  frame.set(body, FRAME_LENGTH_BYTES);
  return frame;
}

function encodePayload(payload: Body, response: boolean, error: WireError): unknown {
  switch (payload.kind) {
    case "lock": {
      const lock = payload.body;
      const oldMode = readModeName(lock.oldMode, "lock.oldMode");
      const newMode = readModeName(lock.newMode, "lock.newMode");
      const writeSeq = readUint64(lock.writeSeq, "lock.writeSeq", true);
      if (typeof lock.noQueue !== "boolean") throw fieldError("lock.noQueue", lock.noQueue, "a boolean");
      checkLockRules(response, newMode, writeSeq, lock.noQueue);
      wireLock[0] = keyToBin(lock.key, "lock.key", keyScratch);
      wireLock[1] = MODE_CODE[oldMode];
      wireLock[2] = MODE_CODE[newMode];
      wireLock[3] = wireUint64(writeSeq);
      wireLock[4] = lock.noQueue;
      return wireLock;
    }
    case "greeting-request":
    case "greeting-response":
    case "hello-request":
    case "hello-response":
      return encodeGreetingPayload(payload);
    case "recover-request":
      return [payload.body.after === null ? null : keyToBin(payload.body.after, "recover.after")];
    case "recover-response": {
      const locks = payload.body.locks;
      const isArray: (value: unknown) => boolean = Array.isArray;
      if (!isArray(locks)) throw fieldError("recover.locks", locks, "an array");
      if (locks.length > RECOVER_BATCH_LOCKS_MAX) {
        throw new ProtocolError(
          `recover.locks has ${locks.length} entries; at most RECOVER_BATCH_LOCKS_MAX (${RECOVER_BATCH_LOCKS_MAX})`,
        );
      }
      const out = new Array<unknown>(locks.length);
      let previous: Key | null = null;
      for (let i = 0; i < locks.length; i++) {
        const lock = locks[i]!;
        const field = `recover.locks[${i}]`;
        const bin = keyToBin(lock.key, `${field}.key`);
        if (previous !== null && !(lock.key > previous)) throw orderError(field, i);
        previous = lock.key;
        out[i] = [
          bin,
          MODE_CODE[readModeName(lock.mode, `${field}.mode`)],
          wireUint64(readUint64(lock.writeSeq, `${field}.writeSeq`, true)),
        ];
      }
      return out;
    }
    case "farewell":
      return null;
    case "admin-request": {
      const page = payload.body;
      return [
        page.after === null ? null : keyToBin(page.after, "admin.after"),
        readSafeUintIn(page.limit, "admin.limit", 1, ADMIN_PAGE_ROWS_MAX, true),
      ];
    }
    case "admin-response":
      checkPlainData(payload.body);
      return payload.body;
    case "error":
      return encodeErrorBody(payload.body, error);
  }
}

function encodeErrorBody(body: ErrorBody, error: WireError): unknown {
  const message = readText(body.message, "errorBody.message", ERROR_MESSAGE_BYTES_MAX);
  const leader = body.leader;
  if (leader === undefined || leader === null) return [message, null];
  if (error !== ENOTLEADER) throw leaderError(error);
  return [
    message,
    [
      readSafeUintIn(leader.slot, "errorBody.leader.slot", 0, SLOT_MAX, true),
      readText(leader.address, "errorBody.leader.address", ADDRESS_BYTES_MAX),
    ],
  ];
}

/** A key as bin bytes, checking it is a binary string of at most KEY_BYTES_MAX bytes. */
function keyToBin(key: unknown, field: string, scratch?: Uint8Array): Uint8Array {
  if (typeof key !== "string") throw fieldError(field, key, "a key (binary string)");
  const length = key.length;
  if (length > KEY_BYTES_MAX)
    throw new ProtocolError(`${field} is ${length} bytes; at most KEY_BYTES_MAX (${KEY_BYTES_MAX}) allowed`);
  const bytes = scratch ?? new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    const code = key.charCodeAt(i);
    if (code > 0xff) throw new ProtocolError(`${field} is not a binary string: code unit ${code} at ${i}`);
    bytes[i] = code;
  }
  return scratch ? scratch.subarray(0, length) : bytes;
}

/** Header integers above 2^32-1 go out as uint64 (the library would write a safe integer as float64). */
function wireInt(value: number): number | bigint {
  return value <= UINT32_MAX ? value : BigInt(value);
}

/** uint64 fields in the most compact integer format. */
function wireUint64(value: bigint): number | bigint {
  return value <= BIG_UINT32_MAX ? Number(value) : value;
}

/**
 * Admin data must be plain: nil, booleans, finite numbers, strings, bigints in int64/uint64 range,
 * Uint8Arrays, arrays and plain objects with string keys, nested at most NESTING_DEPTH_MAX - 1 deep
 * (the body array is level 1). Undefined, Maps, Dates, class instances and the like are refused.
 * Also a cheap lower bound of the encoded size, so a huge value fails before it is encoded.
 */
function checkPlainData(value: unknown): void {
  const path: (string | number)[] = ["admin"];
  const budget = { bytes: 0 };
  walkEncode(value, path, 2, budget);
}

function walkEncode(
  value: unknown,
  path: (string | number)[],
  depth: number,
  budget: { bytes: number },
): void {
  budget.bytes += 1;
  switch (typeof value) {
    case "boolean":
      return;
    case "number":
      if (!Number.isFinite(value))
        throw new ProtocolError(`${formatPath(path)} is ${value}; numbers must be finite`);
      return;
    case "string":
      budget.bytes += value.length;
      break;
    case "bigint":
      if (value < INT64_MIN || value > UINT64_MAX)
        throw new ProtocolError(`${formatPath(path)} = ${value}n does not fit 64 bits`);
      return;
    case "object": {
      if (value === null) return;
      if (depth > NESTING_DEPTH_MAX)
        throw new ProtocolError(`${formatPath(path)} is nested deeper than ${NESTING_DEPTH_MAX} levels`);
      if (value instanceof Uint8Array) {
        budget.bytes += value.length;
        break;
      }
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          path.push(i);
          walkEncode((value as unknown[])[i], path, depth + 1, budget);
          path.pop();
        }
        return;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new ProtocolError(
          `${formatPath(path)} is ${describe(value)}; only plain objects, arrays and Uint8Arrays are allowed`,
        );
      }
      for (const [key, item] of Object.entries(value)) {
        if (key === "__proto__")
          throw new ProtocolError(`${formatPath(path)} has the key "__proto__", which is not allowed`);
        budget.bytes += key.length;
        path.push(key);
        walkEncode(item, path, depth + 1, budget);
        path.pop();
      }
      return;
    }
    default:
      throw new ProtocolError(
        `${formatPath(path)} is ${describe(value)}; admin data must be plain MessagePack data`,
      );
  }
  if (budget.bytes > FRAME_BYTES_MAX) {
    throw new ProtocolError(`admin data is larger than FRAME_BYTES_MAX (${FRAME_BYTES_MAX} bytes)`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes one frame body (without its length prefix). Validates every field; anything malformed throws
 * a ProtocolError naming it.
 */
export function decodeBody(body: Uint8Array): Message {
  scanBody(body);
  let value: unknown;
  try {
    value = decoder.decode(body);
  } catch (cause) {
    if (cause instanceof ProtocolError) throw cause;
    throw new ProtocolError(`body is not valid MessagePack: ${errorText(cause)}`, { cause });
  }
  if (!Array.isArray(value)) {
    throw new ProtocolError(
      `body must be an array [seq, ack, id, cmd, flags, error, payload]; got ${describe(value)}`,
    );
  }
  const wire = value as unknown[];
  if (wire.length !== HEADER_ELEMENTS) {
    throw new ProtocolError(
      `body array has ${wire.length} elements; [seq, ack, id, cmd, flags, error, payload] has ${HEADER_ELEMENTS}`,
    );
  }
  const seq = readSafeUint(wire[0], "seq", 1);
  const ack = readSafeUint(wire[1], "ack", 0);
  const id = readSafeUint(wire[2], "id", 1);
  const cmd = readCommand(wire[3]);
  const flags = readSafeUint(wire[4], "flags", 0);
  if (flags > 1)
    throw new ProtocolError(`flags = ${flags} has unknown bits; only bit 0 (response) is defined`);
  const response = flags === 1;
  const error = readWireError(wire[5]);
  const header: Header = { seq, ack, id, cmd, response, error };
  return { header, payload: decodePayload(payloadKind(cmd, response, error), wire[6], response, error) };
}

const NO_FIELDS: Record<string, never> = Object.freeze({});

function decodePayload(kind: Body["kind"], value: unknown, response: boolean, error: WireError): Body {
  switch (kind) {
    case "lock": {
      const a = readTuple(value, "lock", 5);
      const key = binToKey(a[0], "lock.key");
      const oldMode = readMode(a[1], "lock.oldMode");
      const newMode = readMode(a[2], "lock.newMode");
      const writeSeq = readUint64(a[3], "lock.writeSeq");
      const noQueue = readBool(a[4], "lock.noQueue");
      checkLockRules(response, newMode, writeSeq, noQueue);
      return { kind, body: { key, oldMode, newMode, writeSeq, noQueue } };
    }
    case "greeting-request":
    case "greeting-response":
    case "hello-request":
    case "hello-response":
      return decodeGreetingPayload(kind, value);
    case "recover-request": {
      const a = readTuple(value, "recover", 1);
      return { kind, body: { after: a[0] === null ? null : binToKey(a[0], "recover.after") } };
    }
    case "recover-response": {
      if (!Array.isArray(value))
        throw fieldError("recover.locks", value, "an array of [key, mode, writeSeq]");
      const entries = value as unknown[];
      if (entries.length > RECOVER_BATCH_LOCKS_MAX) {
        throw new ProtocolError(
          `recover.locks has ${entries.length} entries; at most RECOVER_BATCH_LOCKS_MAX (${RECOVER_BATCH_LOCKS_MAX})`,
        );
      }
      const locks = new Array<RecoveredLock>(entries.length);
      for (let i = 0; i < entries.length; i++) {
        const field = `recover.locks[${i}]`;
        const e = readTuple(entries[i], field, 3);
        const key = binToKey(e[0], `${field}.key`);
        if (i > 0 && !(key > locks[i - 1]!.key)) throw orderError(field, i);
        locks[i] = {
          key,
          mode: readMode(e[1], `${field}.mode`),
          writeSeq: readUint64(e[2], `${field}.writeSeq`),
        };
      }
      return { kind, body: { locks } };
    }
    case "farewell":
      if (value !== null) throw fieldError("farewell", value, "nil");
      return { kind, body: NO_FIELDS };
    case "admin-request": {
      const a = readTuple(value, "admin", 2);
      return {
        kind,
        body: {
          after: a[0] === null ? null : binToKey(a[0], "admin.after"),
          limit: readSafeUintIn(a[1], "admin.limit", 1, ADMIN_PAGE_ROWS_MAX),
        },
      };
    }
    case "admin-response":
      return { kind, body: ownPlainData(value, ["admin"]) };
    case "error": {
      const a = readTuple(value, "errorBody", 2);
      const message = readText(a[0], "errorBody.message", ERROR_MESSAGE_BYTES_MAX);
      if (a[1] === null) return { kind, body: { message } };
      if (error !== ENOTLEADER) throw leaderError(error);
      const leader = readTuple(a[1], "errorBody.leader", 2);
      return {
        kind,
        body: {
          message,
          leader: {
            slot: readSafeUintIn(leader[0], "errorBody.leader.slot", 0, SLOT_MAX),
            address: readText(leader[1], "errorBody.leader.address", ADDRESS_BYTES_MAX),
          },
        },
      };
    }
  }
}

/**
 * Admin data as decoded by the library is already plain (the scan refused extensions and bounded the
 * depth; the map-key converter refused non-string keys). Left to do: refuse non-finite floats, and copy
 * every bin so nothing references the input.
 */
function ownPlainData(value: unknown, path: (string | number)[]): unknown {
  if (typeof value === "number") {
    if (!Number.isFinite(value))
      throw new ProtocolError(`${formatPath(path)} is ${value}; numbers must be finite`);
    return value;
  }
  if (typeof value !== "object" || value === null) return value;
  if (value instanceof Uint8Array) return new Uint8Array(value); // a copy (Buffer#slice would share)
  if (Array.isArray(value)) {
    const items = value as unknown[];
    for (let i = 0; i < items.length; i++) {
      path.push(i);
      items[i] = ownPlainData(items[i], path);
      path.pop();
    }
    return items;
  }
  const map = value as Record<string, unknown>;
  for (const key of Object.keys(map)) {
    path.push(key);
    map[key] = ownPlainData(map[key], path);
    path.pop();
  }
  return map;
}

/**
 * Walks the MessagePack structure of a body without building values, so the library never sees a
 * body that would make it allocate more than the body's size: every container's elements must fit in
 * the bytes left (each needs at least one), nesting stays within NESTING_DEPTH_MAX, there is exactly
 * one top-level value, and no extension type appears.
 */
const pendingAtDepth = new Float64Array(NESTING_DEPTH_MAX + 1);

function scanBody(b: Uint8Array): void {
  const n = b.length;
  if (n === 0) throw new ProtocolError("body is empty");
  let pos = 0;
  let depth = 0;
  let pending = 1; // values still to read, over all open containers
  pendingAtDepth[0] = 1;
  for (;;) {
    while (pendingAtDepth[depth] === 0) {
      if (depth === 0) {
        if (pos !== n)
          throw new ProtocolError(`body has ${n - pos} trailing bytes after the MessagePack value`);
        return;
      }
      depth--;
    }
    if (pos >= n) throw truncated(pos);
    const head = b[pos++]!;
    pendingAtDepth[depth] = pendingAtDepth[depth]! - 1;
    pending--;
    let skip = 0;
    let children = 0;
    if (head <= 0x7f || head >= 0xe0 || head === 0xc0 || head === 0xc2 || head === 0xc3) {
      // fixint, nil, bool
    } else if (head <= 0x8f) {
      children = (head & 0x0f) * 2;
    } else if (head <= 0x9f) {
      children = head & 0x0f;
    } else if (head <= 0xbf) {
      skip = head & 0x1f;
    } else {
      switch (head) {
        case 0xcc: // uint 8
        case 0xd0: // int 8
          skip = 1;
          break;
        case 0xcd: // uint 16
        case 0xd1: // int 16
          skip = 2;
          break;
        case 0xca: // float 32
        case 0xce: // uint 32
        case 0xd2: // int 32
          skip = 4;
          break;
        case 0xcb: // float 64
        case 0xcf: // uint 64
        case 0xd3: // int 64
          skip = 8;
          break;
        case 0xc4: // bin 8
        case 0xd9: // str 8
          skip = readLength(b, pos, 1);
          pos += 1;
          break;
        case 0xc5: // bin 16
        case 0xda: // str 16
          skip = readLength(b, pos, 2);
          pos += 2;
          break;
        case 0xc6: // bin 32
        case 0xdb: // str 32
          skip = readLength(b, pos, 4);
          pos += 4;
          break;
        case 0xdc: // array 16
          children = readLength(b, pos, 2);
          pos += 2;
          break;
        case 0xdd: // array 32
          children = readLength(b, pos, 4);
          pos += 4;
          break;
        case 0xde: // map 16
          children = readLength(b, pos, 2) * 2;
          pos += 2;
          break;
        case 0xdf: // map 32
          children = readLength(b, pos, 4) * 2;
          pos += 4;
          break;
        case 0xc7: // ext 8, 16, 32, fixext 1, 2, 4, 8, 16
        case 0xc8:
        case 0xc9:
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
          throw new ProtocolError(
            `body: MessagePack extension types are not allowed (type byte 0x${head.toString(16)} at ${pos - 1})`,
          );
        default: // 0xc1 is never used
          throw new ProtocolError(
            `body: 0x${head.toString(16)} at ${pos - 1} is not a MessagePack type byte`,
          );
      }
    }
    if (skip > 0) {
      if (n - pos < skip) throw truncated(pos);
      // MessagePack strings are UTF-8; the library's decoder would quietly make something up otherwise.
      if (
        ((head >= 0xa0 && head <= 0xbf) || (head >= 0xd9 && head <= 0xdb)) &&
        !isUtf8(b.subarray(pos, pos + skip))
      ) {
        throw new ProtocolError(`body: the string at byte ${pos} is not valid UTF-8`);
      }
      pos += skip;
    } else if (children > 0) {
      if (depth + 1 > NESTING_DEPTH_MAX)
        throw new ProtocolError(`body is nested deeper than ${NESTING_DEPTH_MAX} levels`);
      pending += children;
      if (pending > n - pos) {
        throw new ProtocolError(
          `body is truncated: its containers need at least ${pending} more bytes, ${n - pos} remain`,
        );
      }
      pendingAtDepth[++depth] = children;
    }
  }
}

function readLength(b: Uint8Array, pos: number, bytes: 1 | 2 | 4): number {
  if (b.length - pos < bytes) throw truncated(pos);
  if (bytes === 1) return b[pos]!;
  if (bytes === 2) return (b[pos]! << 8) | b[pos + 1]!;
  return b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!);
}

function truncated(pos: number): ProtocolError {
  return new ProtocolError(`body is truncated at byte ${pos}`);
}

// ---------------------------------------------------------------------------------------------------
// Streams

/**
 * Splits a byte stream into frames and decodes them. Feed it socket chunks of any size, split anywhere.
 * A frame that arrives whole inside one chunk is decoded in place (no copy); a frame split across
 * chunks is gathered into one buffer of exactly its length, allocated once the length is known and
 * accepted. After a throw the decoder is unusable (the connection is closed): every later push throws.
 * A throw discards the messages decoded earlier in the same push; none of them was processed or
 * acknowledged, so the peer resends them on its next connection.
 */
export class FrameDecoder {
  private readonly lengthBytes = new Uint8Array(FRAME_LENGTH_BYTES);
  private lengthHave = 0;
  private body: Uint8Array | null = null;
  private bodyHave = 0;
  private failure: ProtocolError | null = null;

  /** Bytes received for the incomplete frame (its length prefix and body so far); 0 between frames. */
  get bufferedBytes(): number {
    return this.body === null ? this.lengthHave : FRAME_LENGTH_BYTES + this.bodyHave;
  }

  push(chunk: Uint8Array): Message[] {
    if (this.failure !== null) {
      throw new ProtocolError(`the frame decoder already failed: ${this.failure.message}`, {
        cause: this.failure,
      });
    }
    try {
      return this.split(chunk);
    } catch (error) {
      this.failure =
        error instanceof ProtocolError
          ? error
          : new ProtocolError(`frame decoding failed: ${errorText(error)}`, { cause: error });
      this.body = null;
      this.lengthHave = 0;
      this.bodyHave = 0;
      throw this.failure;
    }
  }

  private split(chunk: Uint8Array): Message[] {
    const out: Message[] = [];
    const n = chunk.length;
    let pos = 0;
    for (;;) {
      let body = this.body;
      if (body === null) {
        let length: number;
        if (this.lengthHave === 0 && n - pos >= FRAME_LENGTH_BYTES) {
          length = readLength(chunk, pos, 4);
          pos += FRAME_LENGTH_BYTES;
        } else {
          while (this.lengthHave < FRAME_LENGTH_BYTES && pos < n)
            this.lengthBytes[this.lengthHave++] = chunk[pos++]!;
          if (this.lengthHave < FRAME_LENGTH_BYTES) return out;
          this.lengthHave = 0;
          length = readLength(this.lengthBytes, 0, 4);
        }
        if (length > FRAME_BYTES_MAX) {
          throw new ProtocolError(`frame length ${length} exceeds FRAME_BYTES_MAX (${FRAME_BYTES_MAX})`);
        }
        if (n - pos >= length) {
          out.push(decodeBody(chunk.subarray(pos, pos + length)));
          pos += length;
          if (pos === n) return out;
          continue;
        }
        body = new Uint8Array(length);
        this.body = body;
        this.bodyHave = 0;
      }
      const take = Math.min(body.length - this.bodyHave, n - pos);
      body.set(chunk.subarray(pos, pos + take), this.bodyHave);
      this.bodyHave += take;
      pos += take;
      if (this.bodyHave < body.length) return out;
      this.body = null;
      this.bodyHave = 0;
      out.push(decodeBody(body));
      if (pos === n) return out;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Field readers: used by both directions, so encode and decode check exactly the same rules.

/** The payload kind a (cmd, response, error) header carries. */
export function payloadKind(cmd: Command, response: boolean, error: WireError): Body["kind"] {
  if (error !== NONE) {
    if (!response) throw new ProtocolError(`error = ${error} on a request; only responses carry errors`);
    return "error";
  }
  switch (cmd) {
    case GREETING:
      return response ? "greeting-response" : "greeting-request";
    case HELLO:
      return response ? "hello-response" : "hello-request";
    case LOCK:
      return "lock";
    case LOCK_RECOVER:
      return response ? "recover-response" : "recover-request";
    case FAREWELL:
      return "farewell";
    case ADMIN_STATUS:
    case ADMIN_LOCKS:
    case ADMIN_STATS:
      return response ? "admin-response" : "admin-request";
  }
}

/*
 * `typed` (encoding): the value must already have the JavaScript type messages.ts declares (number or
 * bigint), so what encodes decodes to an equal message. Decoding accepts any MessagePack integer format.
 */

function readSafeUint(value: unknown, field: string, min: number, typed = false): number {
  return readSafeUintIn(value, field, min, SEQ_MAX, typed);
}

function readSafeUintIn(value: unknown, field: string, min: number, max: number, typed = false): number {
  if (typeof value === "number") {
    if (Number.isInteger(value) && value >= min && value <= max) return value + 0; // + 0 turns -0 into 0
  } else if (typeof value === "bigint" && !typed) {
    if (value >= BigInt(min) && value <= BigInt(max)) return Number(value);
  }
  throw fieldError(
    field,
    value,
    `${typed ? "a number" : "an integer"} in ${min}..${max === SEQ_MAX ? "2^53-1" : max}`,
  );
}

function readUint32(value: unknown, field: string, min: number, typed = false): number {
  return readSafeUintIn(value, field, min, UINT32_MAX, typed);
}

function readUint64(value: unknown, field: string, typed = false): bigint {
  if (typeof value === "bigint") {
    if (value >= 0n && value <= UINT64_MAX) return value;
  } else if (typeof value === "number" && !typed) {
    if (Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  }
  throw fieldError(field, value, typed ? "a bigint in 0..2^64-1" : "an unsigned 64-bit integer");
}

function readRid(value: unknown, field: string, typed = false): bigint {
  const rid = readUint64(value, field, typed);
  if (rid === 0n || rid === UINT64_MAX)
    throw new ProtocolError(`${field} = ${rid} is reserved; a rid is never 0 nor 2^64-1`);
  return rid;
}

/** A server's term is at least 1: 0 means "no server yet" in a client's lastServerTerm. */
function readServerTerm(value: unknown, typed = false): bigint {
  const term = readUint64(value, "greeting.serverTerm", typed);
  if (term === 0n) throw new ProtocolError("greeting.serverTerm = 0; a server's term is at least 1");
  return term;
}

function readCommand(value: unknown): Command {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= COMMAND_MAX)
    return value as Command;
  throw fieldError("cmd", value, `a command 0..${COMMAND_MAX}`);
}

function readWireError(value: unknown): WireError {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= WIRE_ERROR_MAX)
    return value as WireError;
  throw fieldError("error", value, `a wire error code 0..${WIRE_ERROR_MAX}`);
}

function readMode(value: unknown, field: string): LockMode {
  const mode = typeof value === "number" ? modeFromCode(value) : undefined;
  if (mode === undefined) throw fieldError(field, value, "a mode code 0..3 (null, read, write, write_only)");
  return mode;
}

function readModeName(value: unknown, field: string): LockMode {
  if (typeof value === "string" && Object.hasOwn(MODE_CODE, value)) return value as LockMode;
  throw fieldError(field, value, 'a mode ("null", "read", "write", "write_only")');
}

function readBool(value: unknown, field: string): boolean {
  if (typeof value === "boolean") return value;
  throw fieldError(field, value, "a boolean");
}

function readText(value: unknown, field: string, bytesMax: number): string {
  if (typeof value !== "string") throw fieldError(field, value, `a string of at most ${bytesMax} bytes`);
  // UTF-8 takes at least one byte per UTF-16 unit and at most three: only count when it could matter.
  if (value.length * 3 > bytesMax) {
    const bytes = Buffer.byteLength(value, "utf8");
    if (bytes > bytesMax)
      throw new ProtocolError(`${field} is ${bytes} bytes of UTF-8; at most ${bytesMax} allowed`);
  }
  return value;
}

function readBin(value: unknown, field: string, bytesMax: number): Uint8Array {
  if (!(value instanceof Uint8Array)) throw fieldError(field, value, `bin of at most ${bytesMax} bytes`);
  if (value.length > bytesMax)
    throw new ProtocolError(`${field} is ${value.length} bytes; at most ${bytesMax} allowed`);
  return value;
}

function binToKey(value: unknown, field: string): Key {
  if (!(value instanceof Uint8Array))
    throw fieldError(field, value, `a key (bin of at most ${KEY_BYTES_MAX} bytes)`);
  if (value.length > KEY_BYTES_MAX) {
    throw new ProtocolError(
      `${field} is ${value.length} bytes; at most KEY_BYTES_MAX (${KEY_BYTES_MAX}) allowed`,
    );
  }
  // latin1 maps each byte to the code unit of the same value: exactly core keyFromBytes, natively.
  return Buffer.from(value.buffer, value.byteOffset, value.length).toString("latin1") as Key;
}

function readTuple(value: unknown, field: string, length: number): unknown[] {
  if (!Array.isArray(value)) throw fieldError(field, value, `an array of ${length} elements`);
  if (value.length !== length)
    throw new ProtocolError(`${field} has ${value.length} elements; expected ${length}`);
  return value as unknown[];
}

function fieldError(field: string, value: unknown, expected: string): ProtocolError {
  return new ProtocolError(`${field} must be ${expected}; got ${describe(value)}`);
}

/**
 * Lock message rules (docs/protocol.md "Lock messages"): requests (acquire, shrink, invalidation) carry
 * writeSeq 0; a response carries a fresh writeSeq ≥ 1 exactly when it grants write or write_only, and
 * 0 otherwise (read and null grants, invalidation replies); noQueue is for requests only.
 */
function checkLockRules(response: boolean, newMode: LockMode, writeSeq: bigint, noQueue: boolean): void {
  if (!response) {
    if (writeSeq !== 0n)
      throw new ProtocolError(`lock.writeSeq = ${writeSeq} in a request; requests carry 0`);
    return;
  }
  if (noQueue) throw new ProtocolError("lock.noQueue is set in a response; it is for requests only");
  if (carriesWriteSeq(newMode)) {
    if (writeSeq === 0n)
      throw new ProtocolError(`lock.writeSeq = 0 in a ${newMode} grant; write grants carry a writeSeq ≥ 1`);
  } else if (writeSeq !== 0n) {
    throw new ProtocolError(
      `lock.writeSeq = ${writeSeq} in a response with newMode ${newMode}; only write grants carry one`,
    );
  }
}

function leaderError(error: WireError): ProtocolError {
  return new ProtocolError(
    `errorBody.leader is only allowed with ENOTLEADER (${ENOTLEADER}); error is ${error}`,
  );
}

function orderError(field: string, index: number): ProtocolError {
  return new ProtocolError(
    `${field}.key does not sort after recover.locks[${index - 1}].key; entries must be in strictly ascending key order`,
  );
}

function describe(value: unknown): string {
  if (value === null) return "nil";
  if (value === undefined) return "undefined";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "string")
    return value.length > 40
      ? `string ${JSON.stringify(value.slice(0, 40))}…`
      : `string ${JSON.stringify(value)}`;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (value instanceof Uint8Array) return `bin of ${value.length} bytes`;
  if (Array.isArray(value)) return `array of ${value.length} elements`;
  if (typeof value === "object") {
    const name = (Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null)?.constructor
      ?.name;
    return name && name !== "Object" ? `a ${name}` : "map";
  }
  return typeof value;
}

function formatPath(path: readonly (string | number)[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else
      out += out === "" ? part : /^[A-Za-z_$][\w$]*$/.test(part) ? `.${part}` : `[${JSON.stringify(part)}]`;
  }
  return out;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------------
// Greeting (protocol version 2): HELLO and GREETING payloads, both directions. Fixed-size fields are
// either empty or exactly their size (nonces always 32 bytes); protocol/greeting-proofs.ts makes them.

const NONCE_BYTES = 32;
const CLUSTER_PROOF_BYTES = 32;
const PUBLIC_KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;
const RESUME_SECRET_BYTES = 32;

/** A bin of exactly `size` bytes, or (when `optional`) empty; decoding returns a copy. */
function readFixedBin(value: unknown, field: string, size: number, optional: boolean): Uint8Array {
  const bin = readBin(value, field, Math.max(size, PROOF_BYTES_MAX));
  if (bin.length === size || (optional && bin.length === 0)) return new Uint8Array(bin);
  throw new ProtocolError(`${field} is ${bin.length} bytes; it must be ${optional ? `empty or ` : ""}exactly ${size}`);
}

function encodeGreetingPayload(payload: Body): unknown {
  switch (payload.kind) {
    case "hello-request":
      return [
        readUint32(payload.body.protocolVersion, "hello.protocolVersion", 1, true),
        readFixedBin(payload.body.nonce, "hello.nonce", NONCE_BYTES, false),
      ];
    case "hello-response":
      return [
        readText(payload.body.clusterId, "hello.clusterId", CLUSTER_ID_BYTES_MAX),
        readUint32(payload.body.protocolVersion, "hello.protocolVersion", 1, true),
        readFixedBin(payload.body.nonce, "hello.nonce", NONCE_BYTES, false),
      ];
    case "greeting-request": {
      const g = payload.body;
      if (typeof g.farewell !== "boolean") throw fieldError("greeting.farewell", g.farewell, "a boolean");
      if (typeof g.admin !== "boolean") throw fieldError("greeting.admin", g.admin, "a boolean");
      return [
        readText(g.clusterId, "greeting.clusterId", CLUSTER_ID_BYTES_MAX),
        readUint32(g.protocolVersion, "greeting.protocolVersion", 1, true),
        wireUint64(readRid(g.rid, "greeting.rid", true)),
        wireUint64(readUint64(g.lastServerTerm, "greeting.lastServerTerm", true)),
        (g.farewell ? GREETING_FLAG_FAREWELL : 0) | (g.admin ? GREETING_FLAG_ADMIN : 0),
        readText(g.name, "greeting.name", CLIENT_NAME_BYTES_MAX),
        readUint32(g.pid, "greeting.pid", 0, true),
        readFixedBin(g.proof, "greeting.proof", CLUSTER_PROOF_BYTES, true),
        readFixedBin(g.claimKey, "greeting.claimKey", PUBLIC_KEY_BYTES, true),
        readFixedBin(g.identityProof, "greeting.identityProof", SIGNATURE_BYTES, true),
      ];
    }
    case "greeting-response": {
      const g = payload.body;
      return [
        readText(g.clusterId, "greeting.clusterId", CLUSTER_ID_BYTES_MAX),
        readUint32(g.protocolVersion, "greeting.protocolVersion", 1, true),
        wireUint64(readServerTerm(g.serverTerm, true)),
        wireUint64(readRid(g.rid, "greeting.rid", true)),
        readFixedBin(g.proof, "greeting.proof", CLUSTER_PROOF_BYTES, true),
        readFixedBin(g.resumeSecret, "greeting.resumeSecret", RESUME_SECRET_BYTES, true),
      ];
    }
    default:
      throw new ProtocolError(`${payload.kind} is not a greeting payload`);
  }
}

function decodeGreetingPayload(kind: "greeting-request" | "greeting-response" | "hello-request" | "hello-response", value: unknown): Body {
  switch (kind) {
    case "hello-request": {
      const a = readTuple(value, "hello", 2);
      return {
        kind,
        body: {
          protocolVersion: readUint32(a[0], "hello.protocolVersion", 1),
          nonce: readFixedBin(a[1], "hello.nonce", NONCE_BYTES, false),
        },
      };
    }
    case "hello-response": {
      const a = readTuple(value, "hello", 3);
      return {
        kind,
        body: {
          clusterId: readText(a[0], "hello.clusterId", CLUSTER_ID_BYTES_MAX),
          protocolVersion: readUint32(a[1], "hello.protocolVersion", 1),
          nonce: readFixedBin(a[2], "hello.nonce", NONCE_BYTES, false),
        },
      };
    }
    case "greeting-request": {
      const a = readTuple(value, "greeting", 10);
      const flags = readSafeUint(a[4], "greeting.flags", 0);
      if (flags > (GREETING_FLAG_FAREWELL | GREETING_FLAG_ADMIN)) {
        throw new ProtocolError(
          `greeting.flags = ${flags} has unknown bits; only bit 0 (farewell) and bit 1 (admin) are defined`,
        );
      }
      return {
        kind,
        body: {
          clusterId: readText(a[0], "greeting.clusterId", CLUSTER_ID_BYTES_MAX),
          protocolVersion: readUint32(a[1], "greeting.protocolVersion", 1),
          rid: readRid(a[2], "greeting.rid"),
          lastServerTerm: readUint64(a[3], "greeting.lastServerTerm"),
          farewell: (flags & GREETING_FLAG_FAREWELL) !== 0,
          name: readText(a[5], "greeting.name", CLIENT_NAME_BYTES_MAX),
          pid: readUint32(a[6], "greeting.pid", 0),
          proof: readFixedBin(a[7], "greeting.proof", CLUSTER_PROOF_BYTES, true),
          admin: (flags & GREETING_FLAG_ADMIN) !== 0,
          claimKey: readFixedBin(a[8], "greeting.claimKey", PUBLIC_KEY_BYTES, true),
          identityProof: readFixedBin(a[9], "greeting.identityProof", SIGNATURE_BYTES, true),
        },
      };
    }
    case "greeting-response": {
      const a = readTuple(value, "greeting", 6);
      return {
        kind,
        body: {
          clusterId: readText(a[0], "greeting.clusterId", CLUSTER_ID_BYTES_MAX),
          protocolVersion: readUint32(a[1], "greeting.protocolVersion", 1),
          serverTerm: readServerTerm(a[2]),
          rid: readRid(a[3], "greeting.rid"),
          proof: readFixedBin(a[4], "greeting.proof", CLUSTER_PROOF_BYTES, true),
          resumeSecret: readFixedBin(a[5], "greeting.resumeSecret", RESUME_SECRET_BYTES, true),
        },
      };
    }
  }
}

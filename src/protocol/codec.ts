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
 *     LOCK (both ways)       [key bin, oldMode, newMode, writeSeq, noQueue bool, grantTerm, grantNo, grantTag]
 *     LOCK_RECOVER request   [after bin | nil]
 *     LOCK_RECOVER response  [[key bin, mode, writeSeq, grantTerm, grantNo, grantTag], ...]
 *                            (≤ 1000 entries, keys strictly ascending)
 *     FAREWELL (both ways)   nil
 *     ADMIN_* request        [after bin | nil, limit]
 *     ADMIN_* response       plain data: nil, bool, int, float, str, bin, array, map with string keys
 *   Modes are codes 0..3 (MODE_CODE); rid, terms (grantTerm too) and writeSeq are uint64 (any MessagePack
 *   integer format; rid never 0 nor 2^64-1); grantNo and grantTag are uint 0..2^53-1; keys are bin of at
 *   most KEY_BYTES_MAX bytes; strings are valid UTF-8. Lock messages: requests carry writeSeq 0; a
 *   response carries writeSeq ≥ 1 exactly when its newMode is write or write_only (0 otherwise) and never
 *   sets noQueue. The grant proof (grantTerm, grantNo, grantTag) is all 0 in a request, in a response
 *   with newMode null and in a recovery entry with mode null; elsewhere grantTerm and grantNo are both 0
 *   or both ≥ 1, and grantTag is 0 when they are.
 *
 * Guarantees:
 * - One table drives both directions: schema.ts holds the payload schema of every (command, direction)
 *   and of error bodies; `encodeMessage` and `decodeBody` read the header here and the payload through
 *   that schema, with the same field types, so they check the same rules: a message that encodes decodes
 *   to an equal message, and a body that decodes re-encodes to an equal message (the fuzz test holds
 *   both). Encoding also insists on the JavaScript types of messages.ts (a number where a bigint belongs
 *   is refused, not converted). Anything outside the rules throws a ProtocolError (code EPROTO) naming
 *   the field; decoding never throws anything else (library errors are wrapped with `cause`).
 * - Resources are bounded by the frame: a body is scanned (scan.ts) before the MessagePack library sees
 *   it, so a container can never claim more elements than the bytes left could hold, nesting is at most
 *   NESTING_DEPTH_MAX, and extension types are refused. A hostile frame costs memory proportional to
 *   its length, never more.
 * - `FrameDecoder` (frame.ts `FrameReader` over `decodeBody`) refuses an oversize length as soon as the 4
 *   length bytes are known, before buffering any of the body; it yields the same messages however the
 *   input is split.
 * - Decoded messages never reference the input bytes (keys become strings, bins are copied), so the
 *   caller may reuse its buffers.
 * - LOCK messages with error NONE (the grant path, both directions) go through lock-fast.ts first, and
 *   LOCK_RECOVER responses (recovery batches) through recover-fast.ts: byte-by-byte writers and readers
 *   that answer only for messages this path accepts, with the same bytes or an equal message, and step
 *   aside (null) for everything else, so the rules and error texts stay the schema's.
 *   `encodeMessageGeneric` and `decodeBodyGeneric` are the path without them (tests hold the two equal
 *   on valid, re-formatted and mutated input).
 * - Encoding reuses one MessagePack encoder (and the header array, and the lock payload's array) and
 *   decoding one decoder: no per-message codec objects. This is safe because neither function runs
 *   callbacks, so neither is ever re-entered. bench/codec.ts measures both paths' cost.
 * Relies on: lock-fast.ts, recover-fast.ts; @msgpack/msgpack v3 (big-endian integers, `useBigInt64`, `encodeSharedRef`); frame.ts,
 * scan.ts, schema.ts.
 */
import { Buffer } from "node:buffer";
import { Decoder, Encoder, ExtensionCodec } from "@msgpack/msgpack";
import { ProtocolError } from "../core/errors.js";
import { NESTING_DEPTH_MAX, SEQ_MAX as SEQ_MAX_BINDING } from "../core/limits.js";
import { FrameReader, frame } from "./frame.js";
import { scanBody } from "./scan.js";
import { decodeLockBody, encodeLockFrame, encodeLockFrameBuffer } from "./lock-fast.js";
import { decodeRecoverBody, encodeRecoverFrame } from "./recover-fast.js";
import { COMMAND_MAX, MESSAGE_SCHEMAS, describe, fieldError, readSafeUintIn, schemaFor } from "./schema.js";
import { Command, WireError, type Header, type Message } from "./messages.js";

export { FRAME_LENGTH_BYTES } from "./frame.js";
export { payloadKind } from "./schema.js";
export { NESTING_DEPTH_MAX };

const UINT32_MAX = 0xffffffff;
// Module-local copies: the hot path reads plain constants, not import bindings.
const SEQ_MAX = SEQ_MAX_BINDING;
const LOCK_SCHEMA = MESSAGE_SCHEMAS[Command.LOCK].request;
const HEADER_ELEMENTS = 7;
const WIRE_ERROR_MAX = Math.max(...Object.values(WireError));

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

/** Reused for every body: the header array (the payload goes in its last element). */
const wireBody: unknown[] = new Array<unknown>(HEADER_ELEMENTS).fill(null);

/**
 * Encodes one message as a frame: 4-byte big-endian body length, then the MessagePack body.
 * Throws ProtocolError when a field is outside the wire rules or the body would exceed FRAME_BYTES_MAX.
 */
export function encodeMessage(message: Message): Uint8Array {
  const header = message.header;
  // LOCK, the hot message: written byte by byte (lock-fast.ts); anything it does not take (including
  // every invalid message) goes the generic way, which produces the same bytes or the same error.
  if (header.cmd === Command.LOCK && header.error === WireError.NONE && message.payload.kind === "lock") {
    const out = encodeLockFrame(header, message.payload.body);
    if (out !== null) return out;
  }
  if (
    header.cmd === Command.LOCK_RECOVER &&
    header.error === WireError.NONE &&
    message.payload.kind === "recover-response"
  ) {
    const out = encodeRecoverFrame(header, message.payload.body.locks, false);
    if (out !== null) return out;
  }
  return encodeMessageGeneric(message);
}

/**
 * `encodeMessage` as a Buffer for a socket (io/tcp.ts): the same bytes; a LOCK frame is cut from Node's
 * Buffer pool, so `socket.write` need not move a JS-heap array off the heap first.
 */
export function encodeFrameBuffer(message: Message): Buffer {
  const header = message.header;
  if (header.cmd === Command.LOCK && header.error === WireError.NONE && message.payload.kind === "lock") {
    const out = encodeLockFrameBuffer(header, message.payload.body);
    if (out !== null) return out;
  }
  if (
    header.cmd === Command.LOCK_RECOVER &&
    header.error === WireError.NONE &&
    message.payload.kind === "recover-response"
  ) {
    const out = encodeRecoverFrame(header, message.payload.body.locks, true);
    if (out !== null) return out as Buffer;
  }
  const frame = encodeMessageGeneric(message);
  return Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
}

/** `encodeMessage` without the LOCK fast path (tests hold the two equal). */
export function encodeMessageGeneric(message: Message): Uint8Array {
  const header = message.header;
  const seq = readSafeUintIn(header.seq, "seq", 1, SEQ_MAX, true);
  const ack = readSafeUintIn(header.ack, "ack", 0, SEQ_MAX, true);
  const id = readSafeUintIn(header.id, "id", 1, SEQ_MAX, true);
  const cmd = readCommand(header.cmd);
  const response = header.response;
  if (typeof response !== "boolean") throw fieldError("response", response, "a boolean");
  const error = readWireError(header.error);
  // LOCK, the hot message, skips the table lookup (its schema is the same both ways).
  const schema =
    cmd === Command.LOCK && error === WireError.NONE ? LOCK_SCHEMA : schemaFor(cmd, response, error);
  const payload = message.payload;
  if (payload.kind !== schema.kind) {
    throw new ProtocolError(
      `payload kind "${String(payload.kind)}" does not fit cmd ${cmd} ${response ? "response" : "request"}` +
        ` with error ${error}; expected "${schema.kind}"`,
    );
  }
  wireBody[0] = wireInt(seq);
  wireBody[1] = wireInt(ack);
  wireBody[2] = wireInt(id);
  wireBody[3] = cmd;
  wireBody[4] = response ? 1 : 0;
  wireBody[5] = error;
  let body: Uint8Array;
  try {
    wireBody[6] = schema.encode(payload.body, header);
    body = encoder.encodeSharedRef(wireBody);
  } catch (cause) {
    if (cause instanceof ProtocolError) throw cause;
    throw new ProtocolError(`cannot encode message: ${errorText(cause)}`, { cause });
  } finally {
    wireBody[6] = null;
  }
  return frame(body);
}

/** Header integers above 2^32-1 go out as uint64 (the library would write a safe integer as float64). */
function wireInt(value: number): number | bigint {
  return value <= UINT32_MAX ? value : BigInt(value);
}

// ---------------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes one frame body (without its length prefix). Validates every field; anything malformed throws
 * a ProtocolError naming it.
 */
export function decodeBody(body: Uint8Array): Message {
  // LOCK, the hot message: read byte by byte (lock-fast.ts) when it is in its usual form; anything else
  // (other commands, other integer formats, every malformed body) goes the generic way.
  return decodeFast(body, 0, body.length) ?? decodeBodyGeneric(body);
}

/** The fast paths' decoders (LOCK, then recovery batches) over `b[start..end)`, or null. */
function decodeFast(b: Uint8Array, start: number, end: number): Message | null {
  return decodeLockBody(b, start, end) ?? decodeRecoverBody(b, start, end);
}

/** `decodeBody` without the LOCK fast path (tests hold the two equal). */
export function decodeBodyGeneric(body: Uint8Array): Message {
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
  const seq = readSafeUintIn(wire[0], "seq", 1, SEQ_MAX);
  const ack = readSafeUintIn(wire[1], "ack", 0, SEQ_MAX);
  const id = readSafeUintIn(wire[2], "id", 1, SEQ_MAX);
  const cmd = readCommand(wire[3]);
  const flags = readSafeUintIn(wire[4], "flags", 0, SEQ_MAX);
  if (flags > 1)
    throw new ProtocolError(`flags = ${flags} has unknown bits; only bit 0 (response) is defined`);
  const response = flags === 1;
  const error = readWireError(wire[5]);
  const header: Header = { seq, ack, id, cmd, response, error };
  const schema = schemaFor(cmd, response, error);
  return {
    header,
    payload: { kind: schema.kind, body: schema.decode(wire[6], header) } as Message["payload"],
  };
}

/** Splits a byte stream into frames and decodes each body (frame.ts `FrameReader` has the contract). */
export class FrameDecoder extends FrameReader<Message> {
  constructor() {
    super(decodeBody, decodeFast);
  }
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

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

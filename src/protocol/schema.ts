/**
 * The payload schema of every wire message: one table, `MESSAGE_SCHEMAS`, with one entry per (command,
 * direction) plus `ERROR_SCHEMA` for every response with error ≠ NONE. Both directions of the codec read
 * it: `encode` turns a message body into its MessagePack value, `decode` turns a decoded MessagePack value
 * back into a body, and both run the same field types, so they check the same rules (docs/protocol.md is
 * the normative description; the payload list at the top of codec.ts summarises it).
 *
 * Adding a message: give it a command number in messages.ts (and a `Body` kind with its interface), then
 * add its entry to MESSAGE_SCHEMAS, built from the field types below (`tuple` of `field`s and `flags`;
 * `list` for a bounded array; `rule` for a check across fields). Nothing else in the codec changes.
 *
 * Guarantees:
 * - A field type's `encode` insists on the JavaScript type of messages.ts (a number where a bigint belongs
 *   is refused, not converted); its `decode` accepts any MessagePack form holding a valid value. Both throw
 *   ProtocolError naming the field (e.g. "lock.writeSeq") and nothing else. Integers are encoded in the
 *   most compact integer format (above 2^32-1 as uint 64), never as a float.
 * - Decoded bodies never reference the input (keys become strings, bins are copied).
 * - The LOCK message, the hot one, is encoded and decoded by `LOCK_MESSAGE`'s own fast path: the same
 *   columns and rule as its table entry, unrolled (no generic loop, no keyed property access). A unit test
 *   (test/unit/schema.test.ts) holds the fast path equal to the generic interpretation of the same entry.
 * Relies on: core keys, modes, errors and limits; node:buffer for UTF-8 byte counts and latin1 keys.
 */
import { Buffer } from "node:buffer";
import { ProtocolError } from "../core/errors.js";
import { KEY_BYTES_MAX, isReservedRid, type Key } from "../core/keys.js";
import { MODE_CODE, carriesWriteSeq, modeFromCode, type LockMode } from "../core/modes.js";
import { RECOVER_BATCH_LOCKS_MAX } from "../core/lock-messages.js";
import {
  ADDRESS_BYTES_MAX,
  ADMIN_PAGE_ROWS_MAX,
  CLIENT_NAME_BYTES_MAX,
  CLUSTER_ID_BYTES_MAX,
  ERROR_MESSAGE_BYTES_MAX,
  FRAME_BYTES_MAX,
  NESTING_DEPTH_MAX,
  PROOF_BYTES_MAX,
  SEQ_MAX,
  SLOT_MAX,
} from "../core/limits.js";
import { Command, WireError, type Body, type LockMessageBody } from "./messages.js";

export const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
const UINT32_MAX = 0xffffffff;
const BIG_UINT32_MAX = 0xffffffffn;

/** What a payload's rules may depend on besides its own fields. */
export interface PayloadContext {
  readonly response: boolean;
  readonly error: WireError;
}

export type BodyKind = Body["kind"];
export type BodyOf<K extends BodyKind> = Extract<Body, { kind: K }>["body"];

/** How one payload kind is written to and read from MessagePack. */
export interface PayloadSchema<K extends BodyKind = BodyKind> {
  readonly kind: K;
  /** A body (JavaScript types of messages.ts, checked strictly) → its MessagePack value. */
  encode(body: BodyOf<K>, context: PayloadContext): unknown;
  /** A MessagePack value as the library decoded it (untrusted) → the body. */
  decode(value: unknown, context: PayloadContext): BodyOf<K>;
}

// ---------------------------------------------------------------------------------------------------
// Field types: one value, both directions.

export interface FieldType<T> {
  /** A message value → its wire value; throws ProtocolError naming `field` when it breaks the rules. */
  readonly encode: (value: unknown, field: string) => unknown;
  /** A wire value → the message value; throws ProtocolError naming `field` when it breaks the rules. */
  readonly decode: (value: unknown, field: string) => T;
}

/** A string of at most `bytesMax` bytes of UTF-8 (the scan already refused invalid UTF-8). */
export function text(bytesMax: number): FieldType<string> {
  const read = (value: unknown, field: string): string => readText(value, field, bytesMax);
  return { encode: read, decode: read };
}

/**
 * An integer in min..max (max ≤ 2^53-1): a number in messages, any integer format on the wire; sent in
 * the most compact integer format (above 2^32-1 as uint64: the library would write that number as float64).
 */
export function uint(min: number, max: number): FieldType<number> {
  return {
    encode: (value, field) => wireSafeUint(readSafeUintIn(value, field, min, max, true)),
    decode: (value, field) => readSafeUintIn(value, field, min, max),
  };
}

/** An unsigned 64-bit integer: a bigint in messages, written in the most compact integer format. */
export const UINT64: FieldType<bigint> = {
  encode: (value, field) => wireUint64(readUint64(value, field, true)),
  decode: (value, field) => readUint64(value, field),
};

/** A rid: uint64, never 0 nor 2^64-1. */
export const RID: FieldType<bigint> = {
  encode: (value, field) => wireUint64(readRid(value, field, true)),
  decode: (value, field) => readRid(value, field),
};

/** A server's term: uint64, at least 1 (0 means "no server yet" in a client's lastServerTerm). */
export const SERVER_TERM: FieldType<bigint> = {
  encode: (value, field) => wireUint64(readServerTerm(value, field, true)),
  decode: (value, field) => readServerTerm(value, field),
};

/** A lock mode: its name in messages, its code 0..3 on the wire (MODE_CODE). */
export const MODE: FieldType<LockMode> = {
  encode: (value, field) => MODE_CODE[readModeName(value, field)],
  decode: (value, field) => readMode(value, field),
};

export const BOOL: FieldType<boolean> = { encode: readBool, decode: readBool };

/** Bytes (bin) of at most `bytesMax`; decoding copies them. */
export function bin(bytesMax: number): FieldType<Uint8Array> {
  return {
    encode: (value, field) => readBin(value, field, bytesMax),
    decode: (value, field) => new Uint8Array(readBin(value, field, bytesMax)),
  };
}

/**
 * Bytes (bin) of exactly `size`, or (when `optional`) empty: nonces, proofs, public keys and signatures of
 * the greeting (io/greeting-proofs.ts makes them). Decoding copies them.
 */
export function fixedBin(size: number, optional: boolean): FieldType<Uint8Array> {
  const read = (value: unknown, field: string): Uint8Array => {
    const bytes = readBin(value, field, Math.max(size, PROOF_BYTES_MAX));
    if (bytes.length === size || (optional && bytes.length === 0)) return bytes;
    throw new ProtocolError(
      `${field} is ${bytes.length} bytes; it must be ${optional ? "empty or " : ""}exactly ${size}`,
    );
  };
  return { encode: read, decode: (value, field) => new Uint8Array(read(value, field)) };
}

/** Sizes of the greeting's fixed fields (protocol version 2; docs/protocol.md). */
export const NONCE_BYTES = 32;
export const CLUSTER_PROOF_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const RESUME_SECRET_BYTES = 32;

/** A key: a core `Key` (binary string) in messages, bin of at most KEY_BYTES_MAX bytes on the wire. */
export const KEY: FieldType<Key> = {
  encode: (value, field) => keyToBin(value, field),
  decode: (value, field) => binToKey(value, field),
};

/** nil, or a value of `type`: null in messages. */
export function nullable<T>(type: FieldType<T>): FieldType<T | null> {
  return {
    encode: (value, field) => (value === null ? null : type.encode(value, field)),
    decode: (value, field) => (value === null ? null : type.decode(value, field)),
  };
}

/**
 * Plain data (admin answers): nil, booleans, finite numbers, strings, bigints in int64/uint64 range,
 * Uint8Arrays, arrays and plain objects with string keys, nested at most NESTING_DEPTH_MAX - 1 deep.
 */
export const PLAIN_DATA: FieldType<unknown> = {
  encode: (value, field) => {
    walkEncode(value, [field], 2, { bytes: 0 });
    return value;
  },
  decode: (value, field) => ownPlainData(value, [field]),
};

// ---------------------------------------------------------------------------------------------------
// Columns and payload shapes.

/** One element of a tuple: a body field, or several boolean fields packed as bits of one integer. */
export type Column<T> =
  | { readonly name: keyof T & string; readonly type: FieldType<unknown>; readonly optional?: boolean }
  | { readonly flags: Readonly<Partial<Record<keyof T & string, number>>> };

/** A body field of `type`. */
export function field<T, N extends keyof T & string>(name: N, type: FieldType<T[N]>): Column<T> {
  return { name, type: type };
}

/** An optional body field: absent (or undefined) in the body is nil on the wire, and nil decodes to absent. */
export function optionalField<T, N extends keyof T & string>(
  name: N,
  type: FieldType<Exclude<T[N], undefined>>,
): Column<T> {
  return { name, type: type, optional: true };
}

/** Boolean body fields packed as bits of one unsigned integer (an unknown bit set is refused). */
export function flags<T>(bits: Readonly<Partial<Record<keyof T & string, number>>>): Column<T> {
  return { flags: bits };
}

/** A check across fields, run after every field was read (both directions). */
export type Rule<T> = (body: T, context: PayloadContext, path: string) => void;

interface CompiledColumn {
  readonly name: string;
  readonly type: FieldType<unknown> | null;
  readonly optional: boolean;
  readonly bits: readonly (readonly [string, number])[];
  readonly allBits: number;
  readonly bitsText: string;
}

function compile<T>(columns: readonly Column<T>[]): CompiledColumn[] {
  return columns.map((column) => {
    if ("flags" in column) {
      const bits = Object.entries(column.flags as Record<string, number>);
      const names = bits.map(([name, bit]) => `bit ${Math.log2(bit)} (${name})`);
      const bitsText =
        names.length === 1
          ? `only ${names[0]} is defined`
          : `only ${names.slice(0, -1).join(", ")} and ${names.at(-1)} are defined`;
      return {
        name: "flags",
        type: null,
        optional: false,
        bits,
        allBits: bits.reduce((all, [, bit]) => all | bit, 0),
        bitsText,
      };
    }
    return {
      name: column.name,
      type: column.type,
      optional: column.optional === true,
      bits: [],
      allBits: 0,
      bitsText: "",
    };
  });
}

/** A fixed-length MessagePack array, one element per column, read into a body object. */
export class TupleType<T> implements FieldType<T> {
  readonly #columns: readonly CompiledColumn[];
  readonly #rule: Rule<T> | undefined;
  readonly #path: string;
  /** `${path}.${name}` per column, for the static path. */
  readonly #fields: readonly string[];

  constructor(path: string, columns: readonly Column<T>[], rule?: Rule<T>) {
    this.#path = path;
    this.#columns = compile(columns);
    this.#rule = rule;
    this.#fields = this.#columns.map((c) => `${path}.${c.name}`);
  }

  /** The column names, for error texts ("key, mode, writeSeq"). */
  get columnNames(): string {
    return this.#columns.map((c) => c.name).join(", ");
  }

  readonly encode = (value: unknown, path: string): unknown[] =>
    this.encodeWith(value as T, path, NO_CONTEXT);
  readonly decode = (value: unknown, path: string): T => this.decodeWith(value, path, NO_CONTEXT);

  encodeWith(body: T, path: string, context: PayloadContext): unknown[] {
    const columns = this.#columns;
    const out = new Array<unknown>(columns.length);
    const source = body as Record<string, unknown>;
    for (let i = 0; i < columns.length; i++) {
      const column = columns[i]!;
      const fieldPath = path === this.#path ? this.#fields[i]! : `${path}.${column.name}`;
      if (column.type === null) {
        let packed = 0;
        for (const [name, bit] of column.bits) {
          const flag = source[name];
          if (typeof flag !== "boolean") throw fieldError(`${path}.${name}`, flag, "a boolean");
          if (flag) packed |= bit;
        }
        out[i] = packed;
      } else {
        const value = source[column.name];
        out[i] =
          column.optional && (value === undefined || value === null)
            ? null
            : column.type.encode(value, fieldPath);
      }
    }
    this.#rule?.(body, context, path);
    return out;
  }

  decodeWith(value: unknown, path: string, context: PayloadContext): T {
    const columns = this.#columns;
    const a = readTuple(value, path, columns.length);
    const out: Record<string, unknown> = {};
    for (let i = 0; i < columns.length; i++) {
      const column = columns[i]!;
      const fieldPath = path === this.#path ? this.#fields[i]! : `${path}.${column.name}`;
      if (column.type === null) {
        const packed = readSafeUintIn(a[i], fieldPath, 0, SEQ_MAX);
        if ((packed & ~column.allBits) !== 0 || packed > column.allBits) {
          throw new ProtocolError(`${fieldPath} = ${packed} has unknown bits; ${column.bitsText}`);
        }
        for (const [name, bit] of column.bits) out[name] = (packed & bit) !== 0;
      } else if (!(column.optional && a[i] === null)) {
        out[column.name] = column.type.decode(a[i], fieldPath);
      }
    }
    this.#rule?.(out as T, context, path);
    return out as T;
  }
}

const NO_CONTEXT: PayloadContext = { response: false, error: WireError.NONE };

export function tuple<T>(path: string, columns: readonly Column<T>[], rule?: Rule<T>): TupleType<T> {
  return new TupleType(path, columns, rule);
}

/**
 * An array of at most `itemsMax` tuples; with `ascending`, each item's field of that name must sort
 * strictly after the previous one's.
 */
export function list<T>(
  item: TupleType<T>,
  bound: { readonly itemsMax: number; readonly itemsMaxName: string; readonly ascending?: keyof T & string },
): FieldType<T[]> {
  const { itemsMax, itemsMaxName, ascending } = bound;
  const isArray: (value: unknown) => value is unknown[] = Array.isArray;
  const checkCount = (count: number, field: string): void => {
    if (count > itemsMax)
      throw new ProtocolError(`${field} has ${count} entries; at most ${itemsMaxName} (${itemsMax})`);
  };
  const checkOrder = (items: readonly T[], i: number, field: string): void => {
    if (ascending === undefined || i === 0) return;
    if (!((items[i]![ascending] as unknown as string) > (items[i - 1]![ascending] as unknown as string))) {
      throw new ProtocolError(
        `${field}[${i}].${ascending} does not sort after ${field}[${i - 1}].${ascending}; entries must be in strictly ascending ${ascending} order`,
      );
    }
  };
  return {
    encode: (value, field) => {
      if (!isArray(value)) throw fieldError(field, value, "an array");
      checkCount(value.length, field);
      const items = value as T[];
      const out = new Array<unknown>(items.length);
      for (let i = 0; i < items.length; i++) {
        out[i] = item.encode(items[i], `${field}[${i}]`);
        checkOrder(items, i, field);
      }
      return out;
    },
    decode: (value, field) => {
      if (!isArray(value)) throw fieldError(field, value, `an array of [${item.columnNames}]`);
      checkCount(value.length, field);
      const items = new Array<T>(value.length);
      for (let i = 0; i < value.length; i++) {
        items[i] = item.decode(value[i], `${field}[${i}]`);
        checkOrder(items, i, field);
      }
      return items;
    },
  };
}

/** A payload that is a tuple. */
class TuplePayload<K extends BodyKind> implements PayloadSchema<K> {
  constructor(
    readonly kind: K,
    readonly tuple: TupleType<BodyOf<K>>,
    readonly path: string,
  ) {}

  encode(body: BodyOf<K>, context: PayloadContext): unknown {
    return this.tuple.encodeWith(body, this.path, context);
  }

  decode(value: unknown, context: PayloadContext): BodyOf<K> {
    return this.tuple.decodeWith(value, this.path, context);
  }
}

/** A payload whose wire value is one field of its body (the body is `{ [name]: value }`). */
class FieldPayload<K extends BodyKind> implements PayloadSchema<K> {
  constructor(
    readonly kind: K,
    readonly name: keyof BodyOf<K> & string,
    readonly type: FieldType<unknown>,
    readonly path: string,
  ) {}

  encode(body: BodyOf<K>): unknown {
    return this.type.encode(body[this.name], this.path);
  }

  decode(value: unknown): BodyOf<K> {
    return { [this.name]: this.type.decode(value, this.path) } as BodyOf<K>;
  }
}

/** A payload that is the whole body, of one field type (admin answers). */
class ValuePayload<K extends BodyKind> implements PayloadSchema<K> {
  constructor(
    readonly kind: K,
    readonly type: FieldType<BodyOf<K>>,
    readonly path: string,
  ) {}

  encode(body: BodyOf<K>): unknown {
    return this.type.encode(body, this.path);
  }

  decode(value: unknown): BodyOf<K> {
    return this.type.decode(value, this.path);
  }
}

const NO_FIELDS: Record<string, never> = Object.freeze({});

/** A payload that is always nil (its body has no fields). */
class NilPayload<K extends BodyKind> implements PayloadSchema<K> {
  constructor(readonly kind: K) {}

  encode(): unknown {
    return null;
  }

  decode(value: unknown): BodyOf<K> {
    if (value !== null) throw fieldError(this.kind, value, "nil");
    return NO_FIELDS as BodyOf<K>;
  }
}

// ---------------------------------------------------------------------------------------------------
// The table.

/**
 * Lock message rules (docs/protocol.md "Lock messages"): requests (acquire, shrink, invalidation) carry
 * writeSeq 0 and no grant proof; a response carries a fresh writeSeq ≥ 1 exactly when it grants write or
 * write_only, and 0 otherwise (read and null grants, invalidation replies); noQueue is for requests only;
 * a response with newMode null carries no grant proof, one with another newMode a proof or none
 * (checkGrantProof: an invalidation reply is a response too, and carries none).
 */
function checkLockRules(
  response: boolean,
  newMode: LockMode,
  writeSeq: bigint,
  noQueue: boolean,
  grantTerm: bigint,
  grantNo: number,
  grantTag: number,
): void {
  if (!response) {
    if (writeSeq !== 0n)
      throw new ProtocolError(`lock.writeSeq = ${writeSeq} in a request; requests carry 0`);
    checkGrantProof("lock", grantTerm, grantNo, grantTag, "in a request");
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
  checkGrantProof(
    "lock",
    grantTerm,
    grantNo,
    grantTag,
    newMode === "null" ? "in a response with newMode null" : null,
  );
}

/**
 * The grant proof's rules (docs/protocol.md §4.3, §4.5) for the LOCK message or recovery entry at `path`.
 * Where no proof belongs (`absent` says where: a request, a null grant, a null report) grantTerm, grantNo
 * and grantTag are all 0. Elsewhere grantTerm and grantNo are both 0 (no proof) or both ≥ 1, and grantTag
 * is 0 when they are 0.
 */
function checkGrantProof(
  path: string,
  grantTerm: bigint,
  grantNo: number,
  grantTag: number,
  absent: string | null,
): void {
  if (absent !== null) {
    if (grantTerm === 0n && grantNo === 0 && grantTag === 0) return;
    const named =
      grantTerm !== 0n
        ? `grantTerm = ${grantTerm}`
        : grantNo !== 0
          ? `grantNo = ${grantNo}`
          : `grantTag = ${grantTag}`;
    throw new ProtocolError(
      `${path}.${named} ${absent}, which carries no grant proof: grantTerm, grantNo and grantTag are 0`,
    );
  }
  if ((grantTerm === 0n) !== (grantNo === 0)) {
    throw new ProtocolError(
      grantNo === 0
        ? `${path}.grantTerm = ${grantTerm} with grantNo 0; grantTerm and grantNo are both 0 or both ≥ 1`
        : `${path}.grantNo = ${grantNo} with grantTerm 0; grantTerm and grantNo are both 0 or both ≥ 1`,
    );
  }
  if (grantNo === 0 && grantTag !== 0) {
    throw new ProtocolError(
      `${path}.grantTag = ${grantTag} with grantTerm and grantNo 0; no grant, no tag: it must be 0`,
    );
  }
}

/** grantNo and grantTag: 0..2^53-1 (a tag is 53 bits: core/grant-tags.ts). */
const GRANT_NUMBER = uint(0, SEQ_MAX);

/**
 * LOCK, both directions: [key bin, oldMode, newMode, writeSeq, noQueue bool, grantTerm, grantNo, grantTag].
 */
export const LOCK_TUPLE = tuple<LockMessageBody>(
  "lock",
  [
    field("key", KEY),
    field("oldMode", MODE),
    field("newMode", MODE),
    field("writeSeq", UINT64),
    field("noQueue", BOOL),
    field("grantTerm", UINT64),
    field("grantNo", GRANT_NUMBER),
    field("grantTag", GRANT_NUMBER),
  ],
  (lock, context) =>
    checkLockRules(
      context.response,
      lock.newMode,
      lock.writeSeq,
      lock.noQueue,
      lock.grantTerm,
      lock.grantNo,
      lock.grantTag,
    ),
);

/**
 * The LOCK payload: the generic LOCK_TUPLE's columns and rule, unrolled (module contract). The encoded
 * array, and the key's bytes in it, are reused for every message: the caller encodes them before the
 * next call (codec.ts does, synchronously).
 */
class LockPayload implements PayloadSchema<"lock"> {
  readonly kind = "lock";
  readonly #wire: unknown[] = new Array<unknown>(8).fill(null);
  readonly #keyScratch = new Uint8Array(KEY_BYTES_MAX);

  encode(lock: LockMessageBody, context: PayloadContext): unknown {
    const wire = this.#wire;
    wire[0] = keyToBin(lock.key, "lock.key", this.#keyScratch);
    wire[1] = MODE_CODE[readModeName(lock.oldMode, "lock.oldMode")];
    const newMode = readModeName(lock.newMode, "lock.newMode");
    wire[2] = MODE_CODE[newMode];
    const writeSeq = readUint64(lock.writeSeq, "lock.writeSeq", true);
    wire[3] = wireUint64(writeSeq);
    wire[4] = readBool(lock.noQueue, "lock.noQueue");
    const grantTerm = readUint64(lock.grantTerm, "lock.grantTerm", true);
    wire[5] = wireUint64(grantTerm);
    const grantNo = readSafeUintIn(lock.grantNo, "lock.grantNo", 0, SEQ_MAX, true);
    wire[6] = wireSafeUint(grantNo);
    const grantTag = readSafeUintIn(lock.grantTag, "lock.grantTag", 0, SEQ_MAX, true);
    wire[7] = wireSafeUint(grantTag);
    checkLockRules(context.response, newMode, writeSeq, lock.noQueue, grantTerm, grantNo, grantTag);
    return wire;
  }

  decode(value: unknown, context: PayloadContext): LockMessageBody {
    const a = readTuple(value, "lock", 8);
    const key = binToKey(a[0], "lock.key");
    const oldMode = readMode(a[1], "lock.oldMode");
    const newMode = readMode(a[2], "lock.newMode");
    const writeSeq = readUint64(a[3], "lock.writeSeq");
    const noQueue = readBool(a[4], "lock.noQueue");
    const grantTerm = readUint64(a[5], "lock.grantTerm");
    const grantNo = readSafeUintIn(a[6], "lock.grantNo", 0, SEQ_MAX);
    const grantTag = readSafeUintIn(a[7], "lock.grantTag", 0, SEQ_MAX);
    checkLockRules(context.response, newMode, writeSeq, noQueue, grantTerm, grantNo, grantTag);
    return { key, oldMode, newMode, writeSeq, noQueue, grantTerm, grantNo, grantTag };
  }
}

/** The generic interpretation of LOCK_TUPLE (for the test that holds the fast path equal to it). */
export const LOCK_GENERIC: PayloadSchema<"lock"> = new TuplePayload("lock", LOCK_TUPLE, "lock");

const LOCK_MESSAGE: PayloadSchema<"lock"> = new LockPayload();

const HELLO_REQUEST = new TuplePayload(
  "hello-request",
  tuple<BodyOf<"hello-request">>("hello", [
    field("protocolVersion", uint(1, UINT32_MAX)),
    field("nonce", fixedBin(NONCE_BYTES, false)),
  ]),
  "hello",
);

const HELLO_RESPONSE = new TuplePayload(
  "hello-response",
  tuple<BodyOf<"hello-response">>("hello", [
    field("clusterId", text(CLUSTER_ID_BYTES_MAX)),
    field("protocolVersion", uint(1, UINT32_MAX)),
    field("nonce", fixedBin(NONCE_BYTES, false)),
  ]),
  "hello",
);

const GREETING_REQUEST = new TuplePayload(
  "greeting-request",
  tuple<BodyOf<"greeting-request">>("greeting", [
    field("clusterId", text(CLUSTER_ID_BYTES_MAX)),
    field("protocolVersion", uint(1, UINT32_MAX)),
    field("rid", RID),
    field("lastServerTerm", UINT64),
    flags({ farewell: 1, admin: 2 }),
    field("name", text(CLIENT_NAME_BYTES_MAX)),
    field("pid", uint(0, UINT32_MAX)),
    field("proof", fixedBin(CLUSTER_PROOF_BYTES, true)),
    field("claimKey", fixedBin(PUBLIC_KEY_BYTES, true)),
    field("identityProof", fixedBin(SIGNATURE_BYTES, true)),
  ]),
  "greeting",
);

const GREETING_RESPONSE = new TuplePayload(
  "greeting-response",
  tuple<BodyOf<"greeting-response">>("greeting", [
    field("clusterId", text(CLUSTER_ID_BYTES_MAX)),
    field("protocolVersion", uint(1, UINT32_MAX)),
    field("serverTerm", SERVER_TERM),
    field("rid", RID),
    field("proof", fixedBin(CLUSTER_PROOF_BYTES, true)),
    field("resumeSecret", fixedBin(RESUME_SECRET_BYTES, true)),
  ]),
  "greeting",
);

const RECOVER_REQUEST = new TuplePayload(
  "recover-request",
  tuple<BodyOf<"recover-request">>("recover", [field("after", nullable(KEY))]),
  "recover",
);

/**
 * One recovery entry: [key bin, mode, writeSeq, grantTerm, grantNo, grantTag]; a null entry carries no
 * grant proof, another one a proof or none (checkGrantProof).
 */
const RECOVERED_LOCK = tuple<BodyOf<"recover-response">["locks"][number]>(
  "recover.locks[]",
  [
    field("key", KEY),
    field("mode", MODE),
    field("writeSeq", UINT64),
    field("grantTerm", UINT64),
    field("grantNo", GRANT_NUMBER),
    field("grantTag", GRANT_NUMBER),
  ],
  (lock, _context, path) =>
    checkGrantProof(
      path,
      lock.grantTerm,
      lock.grantNo,
      lock.grantTag,
      lock.mode === "null" ? "in an entry with mode null" : null,
    ),
);

const RECOVER_RESPONSE = new FieldPayload(
  "recover-response",
  "locks",
  list(RECOVERED_LOCK, {
    itemsMax: RECOVER_BATCH_LOCKS_MAX,
    itemsMaxName: "RECOVER_BATCH_LOCKS_MAX",
    ascending: "key",
  }),
  "recover.locks",
);

const FAREWELL = new NilPayload("farewell");

const ADMIN_REQUEST = new TuplePayload(
  "admin-request",
  tuple<BodyOf<"admin-request">>("admin", [
    field("after", nullable(KEY)),
    field("limit", uint(1, ADMIN_PAGE_ROWS_MAX)),
  ]),
  "admin",
);

const ADMIN_RESPONSE = new ValuePayload("admin-response", PLAIN_DATA, "admin");

/** Any response with error ≠ NONE: [message str, leader nil | [slot, address str]] (leader only with ENOTLEADER). */
export const ERROR_SCHEMA: PayloadSchema<"error"> = new TuplePayload(
  "error",
  tuple<BodyOf<"error">>(
    "errorBody",
    [
      field("message", text(ERROR_MESSAGE_BYTES_MAX)),
      optionalField(
        "leader",
        tuple<NonNullable<BodyOf<"error">["leader"]>>("errorBody.leader", [
          field("slot", uint(0, SLOT_MAX)),
          field("address", text(ADDRESS_BYTES_MAX)),
        ]),
      ),
    ],
    (body, context) => {
      if (body.leader !== undefined && context.error !== WireError.ENOTLEADER) {
        throw new ProtocolError(
          `errorBody.leader is only allowed with ENOTLEADER (${WireError.ENOTLEADER}); error is ${context.error}`,
        );
      }
    },
  ),
  "errorBody",
);

/** Every command's payload schema, per direction (error responses use ERROR_SCHEMA). */
export const MESSAGE_SCHEMAS: {
  readonly [C in Command]: { readonly request: PayloadSchema; readonly response: PayloadSchema };
} = {
  [Command.GREETING]: { request: GREETING_REQUEST, response: GREETING_RESPONSE },
  [Command.LOCK]: { request: LOCK_MESSAGE, response: LOCK_MESSAGE },
  [Command.LOCK_RECOVER]: { request: RECOVER_REQUEST, response: RECOVER_RESPONSE },
  [Command.FAREWELL]: { request: FAREWELL, response: FAREWELL },
  [Command.ADMIN_STATUS]: { request: ADMIN_REQUEST, response: ADMIN_RESPONSE },
  [Command.ADMIN_LOCKS]: { request: ADMIN_REQUEST, response: ADMIN_RESPONSE },
  [Command.ADMIN_STATS]: { request: ADMIN_REQUEST, response: ADMIN_RESPONSE },
  [Command.HELLO]: { request: HELLO_REQUEST, response: HELLO_RESPONSE },
} as { readonly [C in Command]: { readonly request: PayloadSchema; readonly response: PayloadSchema } };

/** The largest command number in the table (commands are 0..COMMAND_MAX, all of them in the table). */
export const COMMAND_MAX = Math.max(...Object.keys(MESSAGE_SCHEMAS).map(Number));

/** The schema of a (cmd, response, error) header's payload. Throws ProtocolError for an error on a request. */
export function schemaFor(cmd: Command, response: boolean, error: WireError): PayloadSchema {
  if (error !== WireError.NONE) {
    if (!response) throw new ProtocolError(`error = ${error} on a request; only responses carry errors`);
    return ERROR_SCHEMA as PayloadSchema;
  }
  const entry = MESSAGE_SCHEMAS[cmd];
  return response ? entry.response : entry.request;
}

/** The payload kind a (cmd, response, error) header carries. */
export function payloadKind(cmd: Command, response: boolean, error: WireError): BodyKind {
  return schemaFor(cmd, response, error).kind;
}

// ---------------------------------------------------------------------------------------------------
// Readers: `typed` (encoding) insists on the JavaScript type messages.ts declares (number or bigint),
// so what encodes decodes to an equal message. Decoding accepts any MessagePack integer format.

export function readSafeUintIn(
  value: unknown,
  field: string,
  min: number,
  max: number,
  typed = false,
): number {
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

export function readUint64(value: unknown, field: string, typed = false): bigint {
  if (typeof value === "bigint") {
    if (value >= 0n && value <= UINT64_MAX) return value;
  } else if (typeof value === "number" && !typed) {
    if (Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  }
  throw fieldError(field, value, typed ? "a bigint in 0..2^64-1" : "an unsigned 64-bit integer");
}

function readRid(value: unknown, field: string, typed = false): bigint {
  const rid = readUint64(value, field, typed);
  if (isReservedRid(rid))
    throw new ProtocolError(`${field} = ${rid} is reserved; a rid is never 0 nor 2^64-1`);
  return rid;
}

function readServerTerm(value: unknown, field: string, typed = false): bigint {
  const term = readUint64(value, field, typed);
  if (term === 0n) throw new ProtocolError(`${field} = 0; a server's term is at least 1`);
  return term;
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

/** A safe unsigned integer in the most compact integer format: above 2^32-1 a bigint (uint64), as codec.ts does. */
function wireSafeUint(value: number): number | bigint {
  return value <= UINT32_MAX ? value : BigInt(value);
}

/** uint64 fields in the most compact integer format (the library writes a bigint as uint64 always). */
export function wireUint64(value: bigint): number | bigint {
  return value <= BIG_UINT32_MAX ? Number(value) : value;
}

export function fieldError(field: string, value: unknown, expected: string): ProtocolError {
  return new ProtocolError(`${field} must be ${expected}; got ${describe(value)}`);
}

// ---------------------------------------------------------------------------------------------------
// Plain data

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

/**
 * Plain data as decoded by the library is already plain (the scan refused extensions and bounded the
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

export function describe(value: unknown): string {
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

/**
 * The admin interface's one schema (docs/protocol.md "Admin queries"): for each query, its command and the
 * shape of its answer. The server builds its answers with these types, the admin client reads every answer
 * through these shapes, and the CLI prints what the client returns: one declaration, typed end to end.
 *
 * On the wire an admin answer stays plain MessagePack data (the codec's ADMIN_* response entry): these
 * shapes add the meaning. Reading is tolerant where old and new servers differ (unknown map keys are
 * ignored; fields marked optional may be absent) and strict about types.
 *
 * Adding a field: add it to the shape below; the server's answer stops type-checking until it sends it,
 * and the client and CLI see it typed. Adding a query: a command in messages.ts, a codec entry (schema.ts,
 * the ADMIN_* pattern), and an entry in ADMIN_QUERIES.
 *
 * Guarantees: `read*` functions return a value of exactly the declared type (copied, known keys only) or
 * throw ProtocolError naming the path of the first field that does not fit.
 * Relies on: the codec having refused non-plain data already (schema.ts PLAIN_DATA).
 */
import { ProtocolError } from "../core/errors.js";
import type { LockMode } from "../core/modes.js";
import { Command } from "./messages.js";
import { describe } from "./schema.js";

/** Reads an untrusted value as T, or throws ProtocolError naming `path`. */
export interface Shape<T> {
  readonly read: (value: unknown, path: string) => T;
}

interface OptionalShape<T> {
  readonly optional: Shape<T>;
}

export type Infer<S> = S extends Shape<infer T> ? T : never;

function mismatch(path: string, value: unknown, expected: string): ProtocolError {
  return new ProtocolError(`admin answer: ${path} must be ${expected}; got ${describe(value)}`);
}

export const string: Shape<string> = {
  read: (value, path) => {
    if (typeof value === "string") return value;
    throw mismatch(path, value, "a string");
  },
};

/** A finite number (a bigint in the safe range is accepted as a number). */
export const number: Shape<number> = {
  read: (value, path) => {
    if (typeof value === "number" && Number.isFinite(value)) return value;
    if (typeof value === "bigint" && value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) {
      return Number(value);
    }
    throw mismatch(path, value, "a number");
  },
};

export const boolean: Shape<boolean> = {
  read: (value, path) => {
    if (typeof value === "boolean") return value;
    throw mismatch(path, value, "a boolean");
  },
};

/** An unsigned integer of up to 64 bits, as a bigint (the wire may use any integer format). */
export const uint64: Shape<bigint> = {
  read: (value, path) => {
    if (typeof value === "bigint" && value >= 0n) return value;
    if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
    throw mismatch(path, value, "an unsigned integer");
  },
};

export const bytes: Shape<Uint8Array> = {
  read: (value, path) => {
    if (value instanceof Uint8Array) return value;
    throw mismatch(path, value, "bin");
  },
};

export function oneOf<const T extends string>(...values: readonly T[]): Shape<T> {
  return {
    read: (value, path) => {
      if (typeof value === "string" && (values as readonly string[]).includes(value)) return value as T;
      throw mismatch(path, value, `one of ${values.join(", ")}`);
    },
  };
}

export function nullable<T>(shape: Shape<T>): Shape<T | null> {
  return { read: (value, path) => (value === null ? null : shape.read(value, path)) };
}

export function array<T>(item: Shape<T>): Shape<T[]> {
  return {
    read: (value, path) => {
      if (!Array.isArray(value)) throw mismatch(path, value, "an array");
      return (value as unknown[]).map((v, i) => item.read(v, `${path}[${i}]`));
    },
  };
}

/** A map field that may be absent (older servers) or nil. */
export function optional<T>(shape: Shape<T>): OptionalShape<T> {
  return { optional: shape };
}

type Fields = Record<string, Shape<unknown> | OptionalShape<unknown>>;
type RequiredKeys<F extends Fields> = { [K in keyof F]: F[K] extends Shape<unknown> ? K : never }[keyof F];
type OptionalKeys<F extends Fields> = { [K in keyof F]: F[K] extends OptionalShape<unknown> ? K : never }[keyof F];
type Flatten<T> = { [K in keyof T]: T[K] };
export type ObjectOf<F extends Fields> = Flatten<
  { [K in RequiredKeys<F>]: Infer<F[K]> } & {
    [K in OptionalKeys<F>]?: F[K] extends OptionalShape<infer T> ? T : never;
  }
>;

/** A map with string keys: the declared fields (unknown keys are ignored, not copied). */
export function object<F extends Fields>(fields: F): Shape<ObjectOf<F>> {
  const entries = Object.entries(fields);
  return {
    read: (value, path) => {
      if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) {
        throw mismatch(path, value, "a map");
      }
      const source = value as Record<string, unknown>;
      const out: Record<string, unknown> = {};
      for (const [name, field] of entries) {
        const has = Object.hasOwn(source, name);
        if ("optional" in field) {
          if (has && source[name] !== undefined && source[name] !== null) out[name] = field.optional.read(source[name], `${path}.${name}`);
        } else {
          out[name] = field.read(has ? source[name] : undefined, `${path}.${name}`);
        }
      }
      return out as ObjectOf<F>;
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// The answers.

const LOCK_MODE: Shape<LockMode> = oneOf("null", "read", "write", "write_only");

export const ADMIN_MEMBER = object({
  slot: number,
  address: string,
  role: string,
  term: optional(nullable(number)),
  heartbeatGaps: optional(array(object({ seconds: number, count: number, ageMs: number }))),
  heartbeatGapMaxMs: optional(number),
  /** The member's own status page URL (its own row only; a follower's page links to the leader's with it). */
  httpUrl: optional(string),
});

export const ADMIN_STATUS = object({
  term: uint64,
  leader: nullable(object({ slot: number, address: string })),
  members: array(ADMIN_MEMBER),
  /** At most STATUS_CLIENTS_MAX clients (lowest rids first); clientsTotal counts all. */
  clients: array(object({ rid: string, name: string, address: string, connected: optional(boolean) })),
  clientsTotal: optional(number),
  recovering: boolean,
  /** At most STATUS_FENCES_MAX fences (oldest first); fencesTotal counts all. */
  fences: optional(array(object({ rid: string, address: string, reason: string, state: string }))),
  fencesTotal: optional(number),
});

export const ADMIN_LOCK_ROW = object({
  key: bytes,
  mode: LOCK_MODE,
  state: oneOf("granted", "requested", "invalidated"),
  /** 16 lowercase hex digits. */
  rid: string,
});

export const ADMIN_STATS_ROW = object({
  key: bytes,
  requests: number,
  invalidations: number,
  responses: number,
  grants: number,
});

export type AdminMember = Infer<typeof ADMIN_MEMBER>;
export type AdminStatus = Infer<typeof ADMIN_STATUS>;
export type AdminLockRow = Infer<typeof ADMIN_LOCK_ROW>;
export type AdminStatsRow = Infer<typeof ADMIN_STATS_ROW>;

/** One page of a paged query: rows in key order after the request's `after` key; `more` when some are left. */
export interface AdminPage<Row> {
  rows: Row[];
  more: boolean;
}

function page<Row>(row: Shape<Row>): Shape<AdminPage<Row>> {
  return object({ rows: array(row), more: boolean });
}

/** Every admin query: its command, and the shape of its answer (a page of rows for the paged ones). */
export const ADMIN_QUERIES = {
  status: { cmd: Command.ADMIN_STATUS, paged: false, answer: ADMIN_STATUS },
  locks: { cmd: Command.ADMIN_LOCKS, paged: true, answer: page(ADMIN_LOCK_ROW) },
  stats: { cmd: Command.ADMIN_STATS, paged: true, answer: page(ADMIN_STATS_ROW) },
} as const;

export type AdminQueryName = keyof typeof ADMIN_QUERIES;

/** What one query's request gets back on the wire (one page for the paged queries). */
export type AdminWireAnswer<Q extends AdminQueryName> = Infer<(typeof ADMIN_QUERIES)[Q]["answer"]>;

/** What a query returns to its caller: the status, or every row of every page. */
export type AdminAnswer<Q extends AdminQueryName> = Q extends "status" ? AdminStatus : AdminWireAnswer<Q> extends AdminPage<infer Row> ? Row[] : never;

/** The query a command asks, or undefined for a command that is not an admin query. */
export function adminQueryOf(cmd: Command): AdminQueryName | undefined {
  for (const name of Object.keys(ADMIN_QUERIES) as AdminQueryName[]) if (ADMIN_QUERIES[name].cmd === cmd) return name;
  return undefined;
}

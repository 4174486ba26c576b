/**
 * Frames: a 4-byte unsigned big-endian length (0..FRAME_BYTES_MAX) followed by that many body bytes.
 * Guarantees:
 * - `frame(body)` prefixes a body with its length, refusing (ProtocolError) a body over FRAME_BYTES_MAX.
 * - `FrameReader` splits a byte stream, cut anywhere, into the same bodies and hands each to its body
 *   decoder; it refuses an oversize length as soon as the 4 length bytes are known, before buffering any
 *   of the body. A body that arrives whole inside one chunk is decoded in place (no copy; first by the
 *   optional range decoder, which reads `chunk[start..end)` without a view object, then, when that
 *   declines with null, by the body decoder on a view of those bytes); one split
 *   across chunks is gathered into one buffer of exactly its length, allocated once the length is
 *   accepted. After a throw the reader is unusable (the connection is closed): every later push throws.
 *   A throw discards the messages decoded earlier in the same push; none of them was processed or
 *   acknowledged, so the peer resends them on its next connection. `pushInto` puts a chunk's messages
 *   into the caller's array (reused: no array per chunk) instead of a new one.
 * Relies on: the body decoder throwing ProtocolError for a bad body (anything else is wrapped) and not
 * keeping a reference to the bytes it is given (the input chunk may be reused by the caller).
 */
import { Buffer } from "node:buffer";
import { ProtocolError } from "../core/errors.js";
import { FRAME_BYTES_MAX as FRAME_BYTES_MAX_BINDING } from "../core/limits.js";

// A module-local copy: the hot path reads a plain constant, not an import binding.
const FRAME_BYTES_MAX = FRAME_BYTES_MAX_BINDING;

/** Bytes of the big-endian length prefix in front of every body. */
export const FRAME_LENGTH_BYTES = 4;

/** The frame of one body: its length, big-endian, then the body (copied). */
export function frame(body: Uint8Array): Uint8Array {
  const length = body.length;
  if (length > FRAME_BYTES_MAX) {
    throw new ProtocolError(`message body is ${length} bytes; at most FRAME_BYTES_MAX (${FRAME_BYTES_MAX}) allowed`);
  }
  // A plain Uint8Array: small ones live on the JS heap (about twice as fast as Buffer.allocUnsafe here),
  // and callers get copy-on-slice semantics.
  const out = new Uint8Array(FRAME_LENGTH_BYTES + length);
  out[0] = length >>> 24;
  out[1] = (length >>> 16) & 0xff;
  out[2] = (length >>> 8) & 0xff;
  out[3] = length & 0xff;
  out.set(body, FRAME_LENGTH_BYTES);
  return out;
}

function readLength(b: Uint8Array, pos: number): number {
  return b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!);
}

export class FrameReader<T> {
  readonly #decodeBody: (body: Uint8Array) => T;
  readonly #decodeRange: ((bytes: Uint8Array, start: number, end: number) => T | null) | null;
  readonly #lengthBytes = new Uint8Array(FRAME_LENGTH_BYTES);
  #lengthHave = 0;
  #body: Uint8Array | null = null;
  #bodyHave = 0;
  #failure: ProtocolError | null = null;

  /**
   * `decodeRange`, when given, must decode `bytes[start..end)` exactly as `decodeBody` would decode that
   * body, or return null to leave it to `decodeBody` (codec.ts: the LOCK fast path).
   */
  constructor(decodeBody: (body: Uint8Array) => T, decodeRange?: (bytes: Uint8Array, start: number, end: number) => T | null) {
    this.#decodeBody = decodeBody;
    this.#decodeRange = decodeRange ?? null;
  }

  /** Bytes received for the incomplete frame (its length prefix and body so far); 0 between frames. */
  get bufferedBytes(): number {
    return this.#body === null ? this.#lengthHave : FRAME_LENGTH_BYTES + this.#bodyHave;
  }

  push(chunk: Uint8Array): T[] {
    const out: T[] = [];
    this.pushInto(chunk, out);
    return out;
  }

  /**
   * `push`, with the messages put into `out` from index 0 (`out` is the caller's, reused across chunks:
   * no array per chunk); returns how many. Slots of `out` at and beyond that count are left as they were.
   * On a throw, `out` may hold messages of this chunk: none of them may be processed.
   */
  pushInto(chunk: Uint8Array, out: (T | undefined)[]): number {
    if (this.#failure !== null) {
      throw new ProtocolError(`the frame decoder already failed: ${this.#failure.message}`, { cause: this.#failure });
    }
    try {
      return this.#split(chunk, out);
    } catch (error) {
      this.#failure =
        error instanceof ProtocolError
          ? error
          : new ProtocolError(`frame decoding failed: ${error instanceof Error ? error.message : String(error)}`, {
              cause: error,
            });
      this.#body = null;
      this.#lengthHave = 0;
      this.#bodyHave = 0;
      throw this.#failure;
    }
  }

  /** Decodes the chunk's frames into out[0..count); returns count. */
  #split(chunk: Uint8Array, out: (T | undefined)[]): number {
    let count = 0;
    const n = chunk.length;
    let pos = 0;
    for (;;) {
      let body = this.#body;
      if (body === null) {
        let length: number;
        if (this.#lengthHave === 0 && n - pos >= FRAME_LENGTH_BYTES) {
          length = readLength(chunk, pos);
          pos += FRAME_LENGTH_BYTES;
        } else {
          while (this.#lengthHave < FRAME_LENGTH_BYTES && pos < n) this.#lengthBytes[this.#lengthHave++] = chunk[pos++]!;
          if (this.#lengthHave < FRAME_LENGTH_BYTES) return count;
          this.#lengthHave = 0;
          length = readLength(this.#lengthBytes, 0);
        }
        if (length > FRAME_BYTES_MAX) {
          throw new ProtocolError(`frame length ${length} exceeds FRAME_BYTES_MAX (${FRAME_BYTES_MAX})`);
        }
        if (n - pos >= length) {
          const end = pos + length;
          out[count++] = (this.#decodeRange === null ? null : this.#decodeRange(chunk, pos, end)) ?? this.#decodeBody(chunk.subarray(pos, end));
          pos += length;
          if (pos === n) return count;
          continue;
        }
        body = Buffer.allocUnsafe(length); // a Buffer, as the chunks are (keys are decoded by Buffer#toString)
        this.#body = body;
        this.#bodyHave = 0;
      }
      const take = Math.min(body.length - this.#bodyHave, n - pos);
      body.set(chunk.subarray(pos, pos + take), this.#bodyHave);
      this.#bodyHave += take;
      pos += take;
      if (this.#bodyHave < body.length) return count;
      this.#body = null;
      this.#bodyHave = 0;
      out[count++] = this.#decodeBody(body);
      if (pos === n) return count;
    }
  }
}

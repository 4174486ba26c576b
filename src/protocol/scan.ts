/**
 * The structure scan that runs before the MessagePack library sees a body (codec.ts `decodeBody`).
 * Guarantees: `scanBody` returns only for a body that holds exactly one MessagePack value with every
 * container's elements fitting in the bytes left (each needs at least one), nesting within
 * NESTING_DEPTH_MAX, every string valid UTF-8 and no extension type; anything else throws ProtocolError.
 * So the library never allocates more than the body's size (without the scan, `dc ff ff` repeated makes
 * it allocate ~100 GB). It reads the bytes only and allocates nothing.
 * Relies on: node:buffer `isUtf8` (native).
 */
import { isUtf8 } from "node:buffer";
import { ProtocolError } from "../core/errors.js";
import { NESTING_DEPTH_MAX } from "../core/limits.js";

/**
 * Walks the MessagePack structure of a body without building values, so the library never sees a
 * body that would make it allocate more than the body's size: every container's elements must fit in
 * the bytes left (each needs at least one), nesting stays within NESTING_DEPTH_MAX, there is exactly
 * one top-level value, and no extension type appears.
 */
const pendingAtDepth = new Float64Array(NESTING_DEPTH_MAX + 1);

export function scanBody(b: Uint8Array): void {
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

export function readLength(b: Uint8Array, pos: number, bytes: 1 | 2 | 4): number {
  if (b.length - pos < bytes) throw truncated(pos);
  if (bytes === 1) return b[pos]!;
  if (bytes === 2) return (b[pos]! << 8) | b[pos + 1]!;
  return b[pos]! * 0x1000000 + ((b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!);
}

function truncated(pos: number): ProtocolError {
  return new ProtocolError(`body is truncated at byte ${pos}`);
}

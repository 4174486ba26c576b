/**
 * Seeded pseudo-random numbers for the simulator (STYLE: "a simulator that draws every knob from one
 * seed"). sfc32 (Chris Doty-Humphrey's Small Fast Counting generator, 128-bit state, period ≥ 2^32),
 * seeded through splitmix32 so that neighbouring seeds (1, 2, 3, ...) give unrelated streams.
 *
 * Guarantees:
 * - The same seed always yields the same sequence, on every platform: only 32-bit integer arithmetic
 *   (`Math.imul`, `>>> 0`), no floating-point state.
 * - `fork(label)` derives an independent stream. Each part of the world (network, each client's
 *   workload, invalidation callbacks) draws from its own fork, so adding a draw in one part does not
 *   reshuffle every other part of an existing seed's run.
 * Relies on: nothing. Never use Math.random in sim/: a run must replay from its seed alone.
 */

const UINT32 = 0x1_0000_0000;

function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** FNV-1a over a string's UTF-16 code units; used to mix fork labels and to hash traces. */
export function fnv1a(text: string, hash = 0x811c9dc5): number {
  let h = hash >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    const mix = splitmix32(seed);
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    for (let i = 0; i < 12; i++) this.u32(); // discard the warm-up outputs, as sfc32's author recommends
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / UINT32;
  }

  /** Uniform integer in [min, max], both inclusive. */
  int(min: number, max: number): number {
    if (max < min) throw new RangeError(`Prng.int: empty range [${min}, ${max}]`);
    return min + Math.floor(this.float() * (max - min + 1));
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Prng.pick: no items");
    return items[this.int(0, items.length - 1)]!;
  }

  /** Picks a key of `weights` with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as [K, number][];
    let total = 0;
    for (const [, w] of entries) total += w;
    let r = this.float() * total;
    for (const [k, w] of entries) {
      r -= w;
      if (r < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }

  /** A 64-bit value (e.g. a rid) that is never 0 or 2^64-1. */
  u64NonZero(): bigint {
    for (;;) {
      const v = (BigInt(this.u32()) << 32n) | BigInt(this.u32());
      if (v !== 0n && v !== 0xffff_ffff_ffff_ffffn) return v;
    }
  }

  /** An independent stream derived from this one and a label (see the module contract). */
  fork(label: string): Prng {
    return new Prng(fnv1a(label, this.u32()));
  }
}

// The codec's schema table (src/protocol/schema.ts): every command has an entry per direction, and the
// hand-unrolled LOCK fast path is the generic interpretation of its table entry (same wire values, same
// decoded bodies, same ProtocolError texts), over seeded random lock bodies, valid and invalid, grant
// proofs (grantTerm, grantNo, grantTag) included.
// Replay a failing run with KEYLOCK_SEED=<seed>.
import { test } from "node:test";
import assert from "node:assert/strict";
import { keyFromBytes } from "../../src/core/keys.js";
import { Command, WireError } from "../../src/protocol/messages.js";
import {
  LOCK_GENERIC,
  MESSAGE_SCHEMAS,
  payloadKind,
  schemaFor,
  type PayloadContext,
} from "../../src/protocol/schema.js";
import { envInteger, prng } from "../support/prng.js";

test("schema - every command has a request and a response schema; errors have their own", () => {
  for (const cmd of Object.values(Command)) {
    assert.ok(MESSAGE_SCHEMAS[cmd].request, `command ${cmd} request`);
    assert.ok(MESSAGE_SCHEMAS[cmd].response, `command ${cmd} response`);
  }
  assert.equal(payloadKind(Command.LOCK, true, WireError.EAGAIN), "error");
  assert.equal(payloadKind(Command.LOCK_RECOVER, false, WireError.NONE), "recover-request");
  assert.throws(() => schemaFor(Command.LOCK, false, WireError.EAGAIN), /error = 1 on a request/);
});

/** Wire values with their bytes copied (the fast path reuses its array and key buffer). */
function snapshot(wire: unknown): unknown {
  return Array.isArray(wire) ? wire.map((v: unknown) => (v instanceof Uint8Array ? [...v] : v)) : wire;
}

function outcome(run: () => unknown): { value: unknown } | { error: string } {
  try {
    return { value: snapshot(run()) };
  } catch (error) {
    return { error: `${(error as Error).name}: ${(error as Error).message}` };
  }
}

test("schema - the LOCK fast path is the generic interpretation of its table entry", () => {
  const seed = envInteger("KEYLOCK_SEED", Date.now() % 1_000_000);
  console.log(`seed ${seed}`);
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const fast = MESSAGE_SCHEMAS[Command.LOCK].request;
  assert.notEqual(fast, LOCK_GENERIC, "LOCK has its own fast path");
  const modes = ["null", "read", "write", "write_only", "exclusive", 2, undefined];
  const wireModes = [0, 1, 2, 3, 4, -1, "read", null];
  const seqs = [0n, 1n, 5n, (1n << 64n) - 1n, 1n << 64n, -1n, 3, 0];
  const wireSeqs = [0, 1, 5, 2 ** 53, 2n ** 63n, -1, 1.5, "1", null];
  // Grant proofs: the first 4 terms and 5 numbers are well typed and in range (0 first).
  const terms = [0n, 1n, 2n ** 40n, (1n << 64n) - 1n, 1n << 64n, -1n, 3, undefined];
  const proofNumbers = [0, 1, 77, 2 ** 40, 2 ** 53 - 1, 2 ** 53, -1, 1.5, 3n, undefined];
  const wireTerms = [0, 1, 2n ** 40n, (1n << 64n) - 1n, -1, 1.5, "1", null];
  const wireProofNumbers = [0, 1, 77, 2n ** 40n, 2n ** 53n - 1n, 2n ** 53n, 2 ** 53, -1, 0.5, "1", null];
  /**
   * A proof: when `typed`, mostly one the rules allow (a proof in most responses with a non-null newMode,
   * else none), sometimes any well-typed one (so the rules decide); else anything.
   */
  const proof = (typed: boolean, mayCarry: boolean): Record<string, unknown> => {
    if (!typed) return { grantTerm: pick(terms), grantNo: pick(proofNumbers), grantTag: pick(proofNumbers) };
    if (random() < 0.1)
      return {
        grantTerm: pick(terms.slice(0, 4)),
        grantNo: pick(proofNumbers.slice(0, 5)),
        grantTag: pick(proofNumbers.slice(0, 5)),
      };
    return mayCarry && random() < 0.7
      ? {
          grantTerm: pick(terms.slice(1, 4)),
          grantNo: pick(proofNumbers.slice(1, 5)),
          grantTag: pick(proofNumbers.slice(0, 5)),
        }
      : { grantTerm: 0n, grantNo: 0, grantTag: 0 };
  };
  const wireProof = (typed: boolean, mayCarry: boolean): unknown[] => {
    if (!typed) return [pick(wireTerms), pick(wireProofNumbers), pick(wireProofNumbers)];
    if (random() < 0.1)
      return [
        pick(wireTerms.slice(0, 4)),
        pick(wireProofNumbers.slice(0, 5)),
        pick(wireProofNumbers.slice(0, 5)),
      ];
    return mayCarry && random() < 0.7
      ? [pick(wireTerms.slice(1, 4)), pick(wireProofNumbers.slice(1, 5)), pick(wireProofNumbers.slice(0, 5))]
      : [0, 0, 0];
  };
  const keys = () =>
    pick([
      keyFromBytes(Uint8Array.from({ length: Math.floor(random() * 20) }, () => Math.floor(random() * 256))),
      "x".repeat(1025),
      "€",
      7,
    ]);
  const wireKeys = () =>
    pick([new Uint8Array(Math.floor(random() * 8)).fill(97), new Uint8Array(1025), "a", null]);
  let valid = 0;
  for (let i = 0; i < 5000; i++) {
    const context: PayloadContext = { response: random() < 0.5, error: WireError.NONE };
    const typed = random() < 0.5; // half of them well typed, so the lock rules decide
    const newMode = typed ? pick(modes.slice(0, 4)) : pick(modes);
    const mayCarry = context.response && newMode !== "null";
    const body = typed
      ? {
          key: keys(),
          oldMode: pick(modes.slice(0, 4)),
          newMode,
          writeSeq: pick(seqs.slice(0, 3)),
          noQueue: pick([false, true]),
          ...proof(true, mayCarry),
        }
      : {
          key: keys(),
          oldMode: pick(modes),
          newMode,
          writeSeq: pick(seqs),
          noQueue: pick([false, true, 1]),
          ...proof(random() < 0.5, mayCarry),
        };
    const encoded = outcome(() => LOCK_GENERIC.encode(body as never, context));
    assert.deepEqual(
      outcome(() => fast.encode(body as never, context)),
      encoded,
      `encode ${i}`,
    );
    if ("value" in encoded) valid++;
    const wireNewMode = typed ? pick(wireModes.slice(0, 4)) : pick(wireModes);
    const wireMayCarry = context.response && wireNewMode !== 0;
    const wire = typed
      ? [
          new Uint8Array(Math.floor(random() * 8)).fill(97),
          pick(wireModes.slice(0, 4)),
          wireNewMode,
          pick(wireSeqs.slice(0, 4)),
          pick([false, true]),
          ...wireProof(true, wireMayCarry),
        ]
      : random() < 0.9
        ? [
            wireKeys(),
            pick(wireModes),
            wireNewMode,
            pick(wireSeqs),
            pick([false, true, 0]),
            ...wireProof(random() < 0.5, wireMayCarry),
          ]
        : pick([null, [], [1, 2, 3, 4], [new Uint8Array(1), 0, 1, 0, false], {}]);
    const decoded = outcome(() => LOCK_GENERIC.decode(wire, context));
    assert.deepEqual(
      outcome(() => fast.decode(wire, context)),
      decoded,
      `decode ${i}`,
    );
    if ("value" in decoded) valid++;
  }
  assert.ok(valid > 500, `${valid} valid bodies and wire values among the random ones`);
});

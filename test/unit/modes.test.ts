// Every cell of reference §2.2 (both tables), §2.3 and §2.4, plus keylock's handle-sharing table (DESIGN §4).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  LOCK_MODES,
  compatible,
  handlesShare,
  invalidationMode,
  modeFromCode,
  satisfies,
  type LockMode,
} from "../../src/core/modes.js";

const [N, R, W, WO] = ["null", "read", "write", "write_only"] as const;

/** Rows are the granted mode, columns the requested/wanted mode, both in order null, read, write, write_only. */
function checkTable(name: string, relation: (row: LockMode, col: LockMode) => unknown, rows: unknown[][]) {
  for (const [i, row] of LOCK_MODES.entries()) {
    for (const [j, col] of LOCK_MODES.entries()) {
      test(`${name} - ${row} vs ${col} is ${String(rows[i]![j])}`, () => {
        assert.equal(relation(row, col), rows[i]![j]);
      });
    }
  }
}

checkTable("compatible across clients (ref §2.2)", (g, r) => compatible(g, r, false), [
  [true, true, true, true],
  [true, true, false, false],
  [true, false, false, false],
  [true, false, false, true],
]);

checkTable("compatible within one client (ref §2.2)", (g, r) => compatible(g, r, true), [
  [false, false, false, false],
  [false, true, true, false],
  [false, false, false, false],
  [false, false, false, true],
]);

checkTable("invalidation target (ref §2.3)", invalidationMode, [
  [N, N, N, N],
  [N, N, N, N],
  [N, R, N, N],
  [N, N, N, N],
]);

checkTable("satisfies (ref §2.4)", satisfies, [
  [true, false, false, false],
  [true, true, false, false],
  [true, true, true, false],
  [true, false, false, true],
]);

checkTable("handles share within a client (DESIGN §4)", handlesShare, [
  [true, true, true, true],
  [true, true, false, false],
  [true, false, false, false],
  [true, false, false, true],
]);

test("modes - wire codes 0..3 are modes and nothing else is", () => {
  assert.deepEqual([0, 1, 2, 3].map(modeFromCode), [N, R, W, WO]);
  for (const bad of [4, 5, 255, -1, 1.5, NaN]) assert.equal(modeFromCode(bad), undefined);
});

// The published entry points (DESIGN §6): `import { connect } from "keylock"` and `require("keylock")` both work
// in plain Node from the built dist/ (npm ci builds it through `prepare`), without tsx.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { REPO, tempDir } from "../support/processes.js";

function runNode(cwd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, args, { cwd, encoding: "utf8", timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

test("package - ESM import and CommonJS require of keylock both resolve the public API from dist/", () => {
  const dir = tempDir("package");
  try {
    mkdirSync(join(dir.path, "node_modules"));
    symlinkSync(REPO, join(dir.path, "node_modules", "keylock"), "dir");
    const esm = runNode(dir.path, [
      "--input-type=module",
      "-e",
      'import { connect, KeylockError, LockClient } from "keylock"; console.log(typeof connect, typeof KeylockError, typeof LockClient);',
    ]);
    assert.equal(esm.status, 0, esm.stderr);
    assert.equal(esm.stdout.trim(), "function function function");
    const cjs = runNode(dir.path, ["-e", 'const k = require("keylock"); console.log(typeof k.connect, typeof k.KeylockError);']);
    assert.equal(cjs.status, 0, cjs.stderr);
    assert.equal(cjs.stdout.trim(), "function function");
  } finally {
    dir.remove();
  }
});

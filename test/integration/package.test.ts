// The published package (DESIGN §6, issue 12): `import` and `require()` of "keylock" and "keylock/testing" work in
// plain Node from the built dist/ (npm ci builds it through `prepare`), without tsx; the client loads no
// database driver (better-sqlite3 and pg are optional peer dependencies, loaded by `keylock up`/`member` only,
// with a message naming the package when missing); `npm pack` ships dist and docs, and no tests,
// benchmarks, sources or source maps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO, tempDir } from "../support/processes.js";

function runNode(cwd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, args, { cwd, encoding: "utf8", timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** A directory whose node_modules/keylock is this repository, as an installed package. */
function installed(): { path: string; remove(): void } {
  const dir = tempDir("package");
  mkdirSync(join(dir.path, "node_modules"));
  symlinkSync(REPO, join(dir.path, "node_modules", "keylock"), "dir");
  return dir;
}

test("package - ESM import and CommonJS require of keylock and keylock/testing resolve the public API from dist/", () => {
  const dir = installed();
  try {
    const esm = runNode(dir.path, [
      "--input-type=module",
      "-e",
      'import { connect, KeylockError, LockClient, CoherentCache } from "keylock"; import { startCluster } from "keylock/testing"; ' +
        "console.log(typeof connect, typeof KeylockError, typeof LockClient, typeof CoherentCache, typeof startCluster);",
    ]);
    assert.equal(esm.status, 0, esm.stderr);
    assert.equal(esm.stdout.trim(), "function function function function function");
    const cjs = runNode(dir.path, [
      "-e",
      'const k = require("keylock"); const t = require("keylock/testing"); console.log(typeof k.connect, typeof k.KeylockError, typeof t.startCluster);',
    ]);
    assert.equal(cjs.status, 0, cjs.stderr);
    assert.equal(cjs.stdout.trim(), "function function function");
  } finally {
    dir.remove();
  }
});

test("package - a client-only install works without the database drivers; keylock up names the missing one", () => {
  const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as Record<string, Record<string, unknown>>;
  for (const driver of ["better-sqlite3", "pg"]) {
    assert.equal(pkg.dependencies![driver], undefined, `${driver} is not a dependency`);
    assert.ok(pkg.peerDependencies![driver], `${driver} is a peer dependency`);
    assert.deepEqual(pkg.peerDependenciesMeta![driver], { optional: true });
  }
  const dir = installed();
  try {
    // Module hooks that make both drivers missing, as in an install without them.
    writeFileSync(
      join(dir.path, "hooks.mjs"),
      `export async function resolve(specifier, context, next) {
        if (specifier === "better-sqlite3" || specifier === "pg") {
          const error = new Error(\`Cannot find package '\${specifier}' imported from \${context.parentURL}\`);
          error.code = "ERR_MODULE_NOT_FOUND";
          throw error;
        }
        return next(specifier, context);
      }`,
    );
    writeFileSync(join(dir.path, "no-drivers.mjs"), 'import { register } from "node:module"; register("./hooks.mjs", import.meta.url);');
    const client = runNode(dir.path, [
      "--import",
      "./no-drivers.mjs",
      "--input-type=module",
      "-e",
      'import { connect } from "keylock"; import { startCluster } from "keylock/testing"; console.log(typeof connect, typeof startCluster);',
    ]);
    assert.equal(client.status, 0, client.stderr);
    assert.equal(client.stdout.trim(), "function function");
    const up = runNode(dir.path, ["--import", "./no-drivers.mjs", join(dir.path, "node_modules/keylock/dist/src/cli/main.js"), "up", "--dir", join(dir.path, "store"), "--port", "0"]);
    assert.equal(up.status, 1, up.stdout + up.stderr);
    assert.match(up.stderr, /an SQLite store needs the "better-sqlite3" package, an optional peer dependency of keylock: install it next to keylock \(npm install better-sqlite3\)/);
  } finally {
    dir.remove();
  }
});

test("package - npm pack ships dist, docs, README and CHANGELOG; no tests, benchmarks, sources or source maps", () => {
  const result = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: REPO, encoding: "utf8", timeout: 60_000 });
  assert.equal(result.status, 0, result.stderr);
  const files = (JSON.parse(result.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
  for (const required of ["package.json", "README.md", "CHANGELOG.md", "dist/src/index.js", "dist/src/index.d.ts", "dist/src/testing/index.js", "dist/src/testing/index.d.ts", "dist/src/cli/main.js", "docs/operations.md", "docs/protocol.md"]) {
    assert.ok(files.includes(required), `${required} is in the package`);
  }
  const unwanted = files.filter(
    (f) => /(^|\/)(test|tests|bench|sim|scripts|examples)\//.test(f) || f.endsWith(".map") || (f.endsWith(".ts") && !f.endsWith(".d.ts")) || f.includes(".test."),
  );
  assert.deepEqual(unwanted, []);
  for (const file of files.filter((f) => f.endsWith(".js"))) {
    const text = readFileSync(join(REPO, file), "utf8");
    const map = /\/\/# sourceMappingURL=(\S+)/.exec(text);
    assert.ok(map === null, `${file} points to a source map (${map?.[1]}) that is not shipped`);
  }
});

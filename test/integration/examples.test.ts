// examples/ (issue 12) run as a user runs them — plain `node examples/X.mjs` importing "keylock" from the built
// dist/ — against a real `keylock up` on 127.0.0.1, and PostgreSQL at 127.0.0.1:5432 database `test` for the
// fencing example (skipped with the reason when unreachable, a failure when CI=true). So does the README's
// ten-minute example and its keylock/testing example, each copied out of README.md into a directory of its own
// that has keylock installed (the testing one starts its three members on 127.0.0.1 and stops them).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO, freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";
import { PG_SERVER, reportUnreachable, withPgAdmin } from "../support/postgres.js";

const EXAMPLE_TIMEOUT_MS = 60_000;
let up: KeylockUp;
let dir: { path: string; remove(): void };

before(async () => {
  dir = tempDir("examples");
  up = await startUp(dir.path, await freePort());
});
after(async () => {
  await up.kill("SIGTERM");
  dir.remove();
});

function runExample(name: string, args: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runNode(join(REPO, "examples", name), args, REPO);
}

function runNode(file: string, args: string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file, ...args], {
      cwd,
      // Without NODE_TEST_CONTEXT: a `node --test` started here is a user's own run, not a subtest of this one.
      env: { ...process.env, KEYLOCK_SERVERS: up.address, NODE_TEST_CONTEXT: undefined },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), EXAMPLE_TIMEOUT_MS);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("examples - coherent-counter: three processes count exactly, reading the store far less than once per increment", { timeout: EXAMPLE_TIMEOUT_MS + 5000 }, async () => {
  const r = await runExample("coherent-counter.mjs", ["3", "300"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const m = /counter = 900 after 900 increments by 3 processes; the store was read (\d+) and written (\d+) times/.exec(r.stdout);
  assert.ok(m, r.stdout);
  console.log(r.stdout.trim());
  assert.ok(Number(m[1]) < 900, "fewer store reads than increments");
});

test("README - the ten-minute example runs as written, with keylock installed beside it", { timeout: EXAMPLE_TIMEOUT_MS + 5000 }, async () => {
  const block = /```js\n(\/\/ app\.mjs[\s\S]*?)```/.exec(readFileSync(join(REPO, "README.md"), "utf8"));
  assert.ok(block, "README.md has the app.mjs example");
  assert.ok(block[1]!.includes("127.0.0.1:7411"), "the example connects to keylock up's default address");
  const app = tempDir("readme-app");
  try {
    mkdirSync(join(app.path, "node_modules"));
    symlinkSync(REPO, join(app.path, "node_modules", "keylock"), "dir");
    writeFileSync(join(app.path, "app.mjs"), block[1]!.replaceAll("127.0.0.1:7411", up.address));
    const r = await runNode(join(app.path, "app.mjs"), [], app.path);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^token \d+n$/m);
  } finally {
    app.remove();
  }
});

test("README - the keylock/testing example passes under node --test, keylock installed beside it", { timeout: 90_000 }, async () => {
  const block = /```js\n(\/\/ test\/orders\.test\.mjs[\s\S]*?)```/.exec(readFileSync(join(REPO, "README.md"), "utf8"));
  assert.ok(block, "README.md has the test/orders.test.mjs example");
  const app = tempDir("readme-testing");
  try {
    mkdirSync(join(app.path, "node_modules"));
    symlinkSync(REPO, join(app.path, "node_modules", "keylock"), "dir");
    writeFileSync(join(app.path, "orders.test.mjs"), block[1]!);
    const r = await runNode("--test", [join(app.path, "orders.test.mjs")], app.path);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^# pass 1$/m);
    assert.match(r.stdout, /^# fail 0$/m);
  } finally {
    app.remove();
  }
});

test("examples - cache-slow-store: 1000 reads cost one store call, and another client's change is seen at once", { timeout: EXAMPLE_TIMEOUT_MS + 5000 }, async () => {
  const r = await runExample("cache-slow-store.mjs");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /1000 reads took \d+ ms and 1 store call\(s\)/);
  assert.match(r.stdout, /web sees "Ada Lovelace" right after the admin's change/);
});

let pgProblem: string | null = null;
try {
  await withPgAdmin(`postgres://postgres@${PG_SERVER}/test`, (c) => c.query("SELECT 1"));
} catch (error) {
  pgProblem = `PostgreSQL database "test" not reachable at ${PG_SERVER}: ${(error as Error).message}`;
}
if (pgProblem !== null) {
  reportUnreachable(pgProblem, "examples - fenced-postgres-job: PostgreSQL is reachable");
  if (process.env.CI !== "true") test("examples - fenced-postgres-job", { skip: pgProblem }, () => undefined);
} else {
  test("examples - fenced-postgres-job: the table refuses a write with a stale fencing token", { timeout: EXAMPLE_TIMEOUT_MS + 5000 }, async () => {
    const r = await runExample("fenced-postgres-job.mjs");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /the table refused the slow job's late write: stale fencing token \d+ \(the row was written with \d+\)/);
    assert.match(r.stdout, /the report: "written by the next job"/);
  });
}

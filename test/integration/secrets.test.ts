// Secrets at rest and protected mode (DESIGN §9, issue 9): secret files must be owner-only, the SQLite store
// and its directory are created owner-only, `keylock up` takes a secret, and a non-loopback `up` without one
// is refused. Real `keylock` processes on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../../src/index.js";
import { KeylockError } from "../../src/core/errors.js";
import { freePort, runCli, startUp, tempDir } from "../support/processes.js";

const SECRET = "correct horse battery staple";

test("secrets - a secret file that group or others can read is refused by format, up and admin commands, naming the fix", async () => {
  const dir = tempDir("secret-mode");
  try {
    const loose = join(dir.path, "loose");
    writeFileSync(loose, `${SECRET}\n`, { mode: 0o644 });
    const port = await freePort();
    for (const args of [
      ["format", "--store", `sqlite:${join(dir.path, "a.db")}`, "--slot", `0=127.0.0.1:${port}`, "--secret-file", loose],
      ["up", "--dir", join(dir.path, "up"), "--port", String(port), "--secret-file", loose],
      ["status", "--servers", `127.0.0.1:${port}`, "--secret-file", loose],
    ]) {
      const result = await runCli(args);
      assert.equal(result.code, 1, `${args[0]}: ${result.stdout}`);
      assert.match(result.stderr, /can be read by group or others \(mode 0644\); make it owner-only: chmod 600/, args[0]);
    }
  } finally {
    dir.remove();
  }
});

test("secrets - keylock up --secret-file serves only clients that know the secret; store and directory are owner-only", async () => {
  const dir = tempDir("secret-up");
  const secretFile = join(dir.path, "secret");
  writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
  const data = join(dir.path, "data");
  const port = await freePort();
  let up = await startUp(data, port, ["--secret-file", secretFile]);
  try {
    assert.equal(statSync(data).mode & 0o777, 0o700);
    assert.equal(statSync(join(data, "keylock.db")).mode & 0o777, 0o600);
    for (const suffix of ["-wal", "-shm"]) {
      const mode = statSync(join(data, `keylock.db${suffix}`), { throwIfNoEntry: false })?.mode;
      if (mode !== undefined) assert.equal(mode & 0o077, 0, `keylock.db${suffix} is readable by others`);
    }
    const refused = await connect({ servers: [up.address], connectTimeoutMs: 2000 }).catch((e: unknown) => e);
    assert.ok(refused instanceof KeylockError && refused.code === "EAUTH", String(refused));
    const client = await connect({ servers: [up.address], secret: SECRET });
    (await client.acquire("secret/1", "write")).release();
    await client.close();
    await up.kill("SIGTERM");

    // The same --dir with another secret, or none, is refused with a message saying what to pass.
    const other = join(dir.path, "other");
    writeFileSync(other, "another secret\n", { mode: 0o600 });
    const wrong = await runCli(["up", "--dir", data, "--port", String(port), "--secret-file", other]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /formatted with another cluster secret/);
    const none = await runCli(["up", "--dir", data, "--port", String(port)]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /formatted with a cluster secret; pass the same --secret-file/);
    up = await startUp(data, port, ["--secret-file", secretFile]);
  } finally {
    await up.kill("SIGTERM");
    dir.remove();
  }
});

test("secrets - protected mode: keylock up on a non-loopback host without a secret is refused before it binds", async () => {
  const dir = tempDir("protected");
  try {
    const result = await runCli(["up", "--dir", join(dir.path, "data"), "--host", "0.0.0.0", "--port", String(await freePort())]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /--host 0\.0\.0\.0 is reachable from other machines and no --secret-file was given/);
    assert.match(result.stderr, /--insecure/);
    assert.doesNotMatch(result.stdout, /serving on/);
  } finally {
    dir.remove();
  }
});

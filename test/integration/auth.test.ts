// Cluster secret (DESIGN §4): a greeting must prove the secret; a wrong or missing one is refused with EAUTH
// and closes only that connection. Real `keylock format` and `keylock member` processes on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../../src/index.js";
import { KeylockError } from "../../src/core/errors.js";
import { freeMemberPort } from "../support/member-cluster.js";
import { runCli, spawnTs, tempDir } from "../support/processes.js";

test("auth - a cluster with a secret refuses greetings without the right proof (EAUTH) and serves the rest", async () => {
  const dir = tempDir("auth");
  const secretFile = join(dir.path, "secret");
  writeFileSync(secretFile, "correct horse battery staple\n", { mode: 0o600 });
  const address = `127.0.0.1:${await freeMemberPort()}`;
  const store = `sqlite:${join(dir.path, "keylock.db")}`;
  const formatted = await runCli(["format", "--store", store, "--slot", `0=${address}`, "--secret-file", secretFile]);
  assert.equal(formatted.code, 0, formatted.stderr);
  const member = spawnTs("src/cli/main.ts", ["member", "--store", store, "--slot", "0", "--heartbeat-timeout-ms", "2000", "--secret-file", secretFile]);
  try {
    await member.waitForLine(/^keylock: serving on /);
    for (const secret of [undefined, "wrong"]) {
      const error = await connect({ servers: [address], connectTimeoutMs: 2000, ...(secret === undefined ? {} : { secret }) }).catch(
        (e: unknown) => e,
      );
      assert.ok(error instanceof KeylockError && error.code === "EAUTH", `secret ${String(secret)}: ${String(error)}`);
    }
    const client = await connect({ servers: [address], secret: "correct horse battery staple" });
    const lock = await client.acquire("auth/1", "write");
    lock.release();
    const status = await runCli(["status", "--servers", address, "--secret-file", secretFile, "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const refused = await runCli(["status", "--servers", address, "--json"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /secret/);
    await client.close();
  } finally {
    await member.kill("SIGTERM");
    dir.remove();
  }
});

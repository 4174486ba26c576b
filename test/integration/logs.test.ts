// Structured logs (issue 12): `keylock up` writes pino JSON lines on stderr (level, time, slot, term, and
// rid where it applies) and honours --log-level; connect({ logger }) logs reconnects and refused greetings
// through a real pino logger. Real processes on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { connect, KeylockError } from "../../src/index.js";
import { freePort, startUp, tempDir } from "../support/processes.js";

function stderrRecords(output: string[]): Record<string, unknown>[] {
  return output.filter((l) => l.startsWith("[stderr] {")).map((l) => JSON.parse(l.slice(9)) as Record<string, unknown>);
}

function capturingPino(): { logger: pino.Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, records };
}

test("logs - keylock up logs JSON lines with level, time, slot and term; a client's logger sees its reconnect", { timeout: 60_000 }, async () => {
  const dir = tempDir("logs");
  const port = await freePort();
  let up = await startUp(dir.path, port, ["--log-level", "debug"]);
  const { logger, records } = capturingPino();
  const client = await connect({ servers: [up.address], logger, name: "logs-test" });
  try {
    const lines = stderrRecords(up.output);
    assert.ok(lines.length > 0, up.output.join("\n"));
    for (const line of lines) {
      assert.ok(["debug", "info", "warn", "error"].includes(String(line.level)), JSON.stringify(line));
      assert.match(String(line.time), /^\d{4}-\d\d-\d\dT/);
      assert.equal(line.slot, 0);
    }
    assert.ok(lines.some((l) => typeof l.term === "number" && /leader in term/.test(String(l.msg))), JSON.stringify(lines));

    await up.kill("SIGKILL");
    up = await startUp(dir.path, port);
    const deadline = Date.now() + 20_000;
    while (!records.some((r) => /^reconnected to /.test(String(r.msg))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const reconnected = records.find((r) => /^reconnected to /.test(String(r.msg)));
    assert.ok(reconnected, JSON.stringify(records));
    assert.equal(reconnected.level, 30, "info");
    assert.equal(reconnected.rid, client.rid.toString(16).padStart(16, "0"), "the child logger carries the rid");
    assert.equal(reconnected.name, "logs-test");
    assert.ok(records.some((r) => r.level === 40 && /connection to the server lost/.test(String(r.msg))), "the lost connection is a warning");
    assert.equal(client.stats().reconnects, 1, "stats() counts the reconnect");
    await client.close();
  } finally {
    await up.kill("SIGKILL");
    dir.remove();
  }
});

test("logs - a refused greeting (EAUTH) is logged as an error; --log-level warn drops info lines", { timeout: 60_000 }, async () => {
  const dir = tempDir("logs-auth");
  const secretFile = join(dir.path, "secret");
  writeFileSync(secretFile, "a secret of some length\n", { mode: 0o600 });
  const up = await startUp(dir.path, await freePort(), ["--secret-file", secretFile, "--log-level", "warn"]);
  try {
    const { logger, records } = capturingPino();
    const error = await connect({ servers: [up.address], secret: "wrong", logger, connectTimeoutMs: 5000 }).catch((e: unknown) => e);
    assert.ok(error instanceof KeylockError && error.code === "EAUTH", String(error));
    assert.ok(records.some((r) => r.level === 50 && r.code === "EAUTH" && /connect failed/.test(String(r.msg))), JSON.stringify(records));
    await new Promise((r) => setTimeout(r, 200));
    const lines = stderrRecords(up.output);
    assert.ok(lines.every((l) => l.level === "warn" || l.level === "error"), JSON.stringify(lines));
    assert.ok(lines.some((l) => /refused greeting/.test(String(l.msg)) && typeof l.rid === "string"), JSON.stringify(lines));
  } finally {
    await up.kill("SIGKILL");
    dir.remove();
  }
});

// The keylock command as a user runs it (DESIGN §6): real processes, JSON shapes, human tables, refusals.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Worker, freePort, runCli, startUp, tempDir, type KeylockUp } from "../support/processes.js";

let up: KeylockUp;
let dir: { path: string; remove(): void };
let worker: Worker;
let rid: string;

before(async () => {
  dir = tempDir("cli");
  up = await startUp(dir.path, await freePort());
  worker = new Worker();
  rid = (await worker.ok("connect", { servers: [up.address], name: "cli-client" })).rid as string;
  await worker.ok("acquire", { key: "cli/ü", mode: "write" });
});

after(async () => {
  await worker.kill();
  await up.kill("SIGTERM");
  dir.remove();
});

test("cli - status --json has the documented shape", async () => {
  const { code, stdout, stderr } = await runCli(["status", "--servers", up.address, "--json"]);
  assert.equal(code, 0, stderr);
  const status = JSON.parse(stdout) as Record<string, unknown>;
  assert.deepEqual(Object.keys(status).sort(), ["clients", "clientsTotal", "leader", "members", "recovering", "term"]);
  assert.equal(typeof status.term, "number");
  assert.deepEqual(status.leader, { slot: 0, address: up.address });
  assert.deepEqual(
    (status.members as { slot: number; address: string; role: string }[]).map((m) => [m.slot, m.address, m.role]),
    [[0, up.address, "leader"]],
  );
  const clients = status.clients as { rid: string; name: string; address: string }[];
  assert.equal(clients.length, 1);
  assert.equal(clients[0]!.rid, rid);
  assert.match(clients[0]!.rid, /^[0-9a-f]{16}$/);
  assert.equal(clients[0]!.name, "cli-client");
  assert.equal(status.clientsTotal, 1);
  assert.equal(status.recovering, false);
});

test("cli - locks --json and stats --json name keys as text and hex", async () => {
  const locks = await runCli(["locks", "--servers", up.address, "--json"]);
  assert.equal(locks.code, 0, locks.stderr);
  assert.deepEqual(JSON.parse(locks.stdout), [
    { key: "cli/ü", keyHex: Buffer.from("cli/ü").toString("hex"), mode: "write", state: "granted", rid },
  ]);
  const stats = await runCli(["stats", "--servers", up.address, "--json"]);
  assert.equal(stats.code, 0, stats.stderr);
  assert.deepEqual(JSON.parse(stats.stdout), [
    { key: "cli/ü", keyHex: Buffer.from("cli/ü").toString("hex"), requests: 1, invalidations: 0, responses: 0, grants: 1 },
  ]);
});

test("cli - human output is a table", async () => {
  const { code, stdout } = await runCli(["locks", "--servers", up.address]);
  assert.equal(code, 0);
  assert.match(stdout, /^KEY\s+MODE\s+STATE\s+RID/m);
  assert.match(stdout, new RegExp(`cli/ü\\s+write\\s+granted\\s+${rid}`));
  const status = await runCli(["status", "--servers", up.address]);
  assert.match(status.stdout, /leader slot 0/);
});

test("cli - unknown flags and bad values are refused, naming them", async () => {
  const cases: [string[], RegExp][] = [
    [["status", "--servers", up.address, "--bogus"], /--bogus/],
    [["up", "--heartbeat-timeout-ms", "100"], /--heartbeat-timeout-ms must be an integer from 2000 to 60000/],
    [["up", "--port", "70000"], /--port must be an integer from 0 to 65534/],
    [["format", "--store", "sqlite:/tmp/x.db", "--slot", "15=127.0.0.1:1"], /slot number must be 0\.\.14/],
    [["status", "--servers", "nohost"], /--servers/],
    [["format", "--store", "mysql://x", "--slot", "0=127.0.0.1:7000"], /mysql|store/i],
  ];
  for (const [args, pattern] of cases) {
    const { code, stdout, stderr } = await runCli(args);
    assert.notEqual(code, 0, `${args.join(" ")} must fail`);
    assert.match(stderr + stdout, pattern, `${args.join(" ")}: ${stderr}`);
  }
});

test("cli - a member that cannot be reached is reported, not a crash", async () => {
  const { code, stderr } = await runCli(["status", "--servers", `127.0.0.1:${await freePort()}`]);
  assert.equal(code, 1);
  assert.match(stderr, /keylock: .*no member answered/);
});

test("cli - up --metrics-port serves Prometheus metrics", async () => {
  const metricsDir = tempDir("metrics");
  const metricsPort = await freePort();
  const server = await startUp(metricsDir.path, await freePort(), ["--metrics-port", String(metricsPort)]);
  try {
    const w = new Worker();
    await w.ok("connect", { servers: [server.address], name: "metrics-client" });
    await w.ok("acquire", { key: "m/1", mode: "write" });
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(text, /^keylock_member_is_leader 1$/m);
    assert.match(text, /^keylock_grants_total 1$/m);
    assert.match(text, /^keylock_lock_entries 1$/m);
    assert.match(text, /^# TYPE keylock_grants_total counter$/m);
    await w.kill();
  } finally {
    await server.kill("SIGTERM");
    metricsDir.remove();
  }
});

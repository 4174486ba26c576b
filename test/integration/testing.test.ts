// keylock/testing (DESIGN §6): startCluster() as a user's test suite sees it — servers to connect to, the
// leader, kill and restart, HTTP ports, a secret, PostgreSQL by URL (a database of its own, dropped by
// stop()), and nothing left behind. Real member processes on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { connect } from "../../src/index.js";
import { startCluster } from "../../src/testing/index.js";
import { reportUnreachable, scratchDatabase, withPgAdmin } from "../support/postgres.js";

test("testing - startCluster serves locks, names its leader, survives kill and restart, and removes its files on stop", { timeout: 90_000 }, async () => {
  const cluster = await startCluster({ members: 2, secret: "a secret for the test cluster", httpPorts: true });
  let client: Awaited<ReturnType<typeof connect>> | null = null;
  try {
    assert.equal(cluster.servers.length, 2);
    for (const address of cluster.servers) assert.match(address, /^127\.0\.0\.1:\d+$/);
    const leader = await cluster.leader();
    assert.equal(leader.address, cluster.servers[leader.slot]);
    client = await connect({ servers: cluster.servers, secret: "a secret for the test cluster" });
    (await client.acquire("testing/1", "write")).release();

    const metrics = await fetch(`${cluster.httpUrl(leader.slot)}metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /keylock_/);

    assert.equal(await cluster.kill(leader.slot, "SIGKILL"), -1);
    const next = await cluster.leader({ exclude: leader.slot });
    assert.notEqual(next.slot, leader.slot);
    await cluster.restart(leader.slot);
    const again = await client.acquire("testing/1", "write");
    assert.ok(again.writeSeq > 0n);
    again.release();
    await client.close();
    client = null;
  } finally {
    await client?.close();
    await cluster.stop();
  }
  assert.ok(!existsSync(cluster.store.slice("sqlite:".length)), "the store's temporary directory is gone");
  await assert.rejects(cluster.restart(0), /stopped/);
});

const database = await scratchDatabase("testing");
if ("unreachable" in database) {
  reportUnreachable(database.unreachable, "testing (postgres) - the PostgreSQL server is reachable");
  if (process.env.CI !== "true") test("testing (postgres) - startCluster on PostgreSQL", { skip: database.unreachable }, () => undefined);
} else {
  test("testing (postgres) - startCluster on a PostgreSQL URL uses a database of its own and drops it on stop", { timeout: 60_000 }, async () => {
    try {
      const cluster = await startCluster({ members: 1, store: database.url });
      const name = new URL(cluster.store).pathname.slice(1);
      assert.match(name, /^keylock_cluster_[0-9a-f]{12}$/);
      const client = await connect({ servers: cluster.servers });
      (await client.acquire("testing/pg", "read")).release();
      await client.close();
      await cluster.stop();
      const left = await withPgAdmin(database.url, (c) => c.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]));
      assert.equal(left.rowCount, 0, "the cluster's database was dropped");
    } finally {
      await database.drop();
    }
  });
}

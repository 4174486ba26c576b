// The bench's protocol floor (bench/relay-floor.ts): a bare relay of one key, used to show what keylock's
// hop pattern costs in Node with none of keylock's work. Checked here for behaving as the lock it stands
// for (never two holders, FIFO hand-offs, cached re-acquire until asked, a leaving holder frees the key);
// its speed is only measured by `npm run bench`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { RelayClient } from "../../bench/relay-floor.js";

const RELAY = fileURLToPath(new URL("../../bench/relay-floor.ts", import.meta.url));

test("relay floor: one holder at a time, hand-offs alternate, an idle holder keeps its grant cached, a leaving holder frees the key", { timeout: 30_000 }, async () => {
  const relay = spawn(process.execPath, ["--import", "tsx", RELAY], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: relay.stdout }).on("line", (line) => {
        const match = /^relay: listening on (\d+)$/.exec(line);
        if (match !== null) resolve(Number(match[1]));
      });
      relay.once("exit", (code) => reject(new Error(`relay exited with ${code}`)));
    });
    const [a, b] = await Promise.all([RelayClient.open(port), RelayClient.open(port)]);
    let holders = 0;
    const order: string[] = [];
    const loop = async (name: string, client: RelayClient, rounds: number): Promise<void> => {
      for (let i = 0; i < rounds; i++) {
        const handle = await client.acquire();
        holders++;
        assert.equal(holders, 1, "two holders at once");
        order.push(name);
        await new Promise((r) => setImmediate(r));
        holders--;
        handle.release();
        await new Promise((r) => setImmediate(r));
      }
    };
    // Alone, a holder re-acquires from its cache: no message, so no one else is involved.
    await loop("a", a, 3);
    assert.deepEqual(order, ["a", "a", "a"]);
    order.length = 0;
    // Both loop: every acquisition is granted (one holder at a time), and b gets its turns.
    await Promise.all([loop("a", a, 20), loop("b", b, 20)]);
    assert.equal(order.length, 40);
    assert.ok(order.filter((n) => n === "b").length === 20);
    // a holds the key and leaves; b, waiting, is granted.
    const held = await a.acquire();
    const waiting = b.acquire();
    a.close();
    (await waiting).release();
    held.release();
    b.close();
  } finally {
    relay.kill("SIGKILL");
  }
});

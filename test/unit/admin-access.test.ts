// Admin access without a cluster secret (DESIGN §9): loopback only, or a client certificate the member verified.
import { test } from "node:test";
import assert from "node:assert/strict";
import { adminRefusal } from "../../src/runtime/server.js";

test("admin access - without a secret only loopback peers and verified TLS clients are served", () => {
  const cases: [string, boolean, boolean, boolean][] = [
    // address, hasSecret, tlsClientVerified, served
    ["127.0.0.1:5000", false, false, true],
    ["127.8.9.10:5000", false, false, true],
    ["[::1]:5000", false, false, true],
    ["[::ffff:127.0.0.1]:5000", false, false, true],
    ["10.1.2.3:5000", false, false, false],
    ["[2001:db8::1]:5000", false, false, false],
    ["[::ffff:10.1.2.3]:5000", false, false, false],
    ["unknown", false, false, false],
    ["10.1.2.3:5000", true, false, true],
    ["10.1.2.3:5000", false, true, true],
  ];
  for (const [address, hasSecret, tlsClientVerified, served] of cases) {
    const why = adminRefusal({ address, hasSecret, tlsClientVerified });
    assert.equal(why === undefined, served, `${address} secret=${hasSecret} tls=${tlsClientVerified}: ${why}`);
    if (!served) assert.match(why!, /loopback only/);
  }
});

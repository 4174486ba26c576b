// TLS and mutual TLS for client and admin connections (issue 9, DESIGN §9): real `keylock up` and
// `keylock member` processes on 127.0.0.1 with a throwaway CA made at run time (test/support/tls.ts);
// the public API (`connect({ tls })`), the CLI's admin commands, the clear errors (plaintext at a TLS
// member, TLS at a plaintext member, a wrong CA, a missing or foreign client certificate), and a
// three-member cluster with a secret and mutual TLS whose leader is SIGKILLed while a client holds a lock.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { chmodSync, copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { connect, KeylockError, type LockClient } from "../../src/index.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { keyFromBytes, keyToText } from "../../src/core/keys.js";
import { MemberCluster } from "../support/member-cluster.js";
import { listenTcp } from "../../src/runtime/listener.js";
import { FramedConnection } from "../../src/io/tcp.js";
import { freePort, runCli, startUp, tempDir, type KeylockUp } from "../support/processes.js";
import { makeTestPki, type TestPki } from "../support/tls.js";

let pki: TestPki;
let tlsUp: KeylockUp;
let mtlsUp: KeylockUp;
const dirs: { remove(): void }[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  pki = makeTestPki();
  const a = tempDir("tls");
  const b = tempDir("mtls");
  dirs.push(a, b);
  [tlsUp, mtlsUp] = await Promise.all([
    startUp(a.path, await freePort(), ["--tls-cert", pki.serverCert, "--tls-key", pki.serverKey]),
    startUp(b.path, await freePort(), ["--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-ca", pki.caCert, "--tls-client-auth"]),
  ]);
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await Promise.all([tlsUp?.kill("SIGTERM"), mtlsUp?.kill("SIGTERM")]);
  for (const dir of dirs) dir.remove();
  pki?.remove();
});

async function rejection(promise: Promise<unknown>): Promise<KeylockError> {
  try {
    const value = await promise;
    if (value && typeof (value as LockClient).close === "function") await (value as LockClient).close();
  } catch (error) {
    assert.ok(error instanceof KeylockError, `a KeylockError, not ${String(error)}`);
    return error;
  }
  assert.fail("expected a rejection");
}

test("tls - keylock up --tls-cert --tls-key: a client with tls.ca locks end to end, and status --tls-ca sees it", async () => {
  const client = await connect({ servers: [tlsUp.address], tls: { ca: pki.read(pki.caCert) }, name: "tls-client", connectTimeoutMs: 10_000 });
  try {
    const lock = await client.acquire("tls/1", "write");
    assert.ok(lock.writeSeq > 0n);
    lock.release();
    const status = await runCli(["status", "--servers", tlsUp.address, "--tls-ca", pki.caCert, "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const clients = (JSON.parse(status.stdout) as { clients: { name: string }[] }).clients;
    assert.ok(clients.some((c) => c.name === "tls-client"), status.stdout);
    const locks = await runCli(["locks", "--servers", tlsUp.address, "--tls-ca", pki.caCert, "--json"]);
    assert.equal(locks.code, 0, locks.stderr);
    assert.deepEqual((JSON.parse(locks.stdout) as { key: string }[]).map((r) => r.key), ["tls/1"]);
    // "localhost" is in the certificate too: servername defaults to the host of a named address.
    const byName = await connect({ servers: [tlsUp.address.replace("127.0.0.1", "localhost")], tls: { ca: pki.read(pki.caCert) }, connectTimeoutMs: 10_000 });
    await byName.close();
  } finally {
    await client.close();
  }
});

test("tls - a plaintext client at a TLS member is refused at once with EAUTH saying the member serves TLS only", async () => {
  const started = performance.now();
  const error = await rejection(connect({ servers: [tlsUp.address], connectTimeoutMs: 20_000 }));
  assert.equal(error.code, "EAUTH");
  assert.match(error.message, /serves TLS only: connect with the tls option/);
  assert.ok(performance.now() - started < 10_000, "not retried until connectTimeoutMs");
  const cli = await runCli(["status", "--servers", tlsUp.address]);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /serves TLS only.*--tls-ca F/);
});

test("tls - a wrong CA or a name not in the certificate is EAUTH naming the cause, at once", async () => {
  const started = performance.now();
  const wrongCa = await rejection(connect({ servers: [tlsUp.address], tls: { ca: pki.read(pki.otherCaCert) }, connectTimeoutMs: 20_000 }));
  assert.equal(wrongCa.code, "EAUTH");
  assert.match(wrongCa.message, /certificate was not accepted: .*SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY/);
  assert.ok(performance.now() - started < 10_000, "not retried until connectTimeoutMs");
  const wrongName = await rejection(
    connect({ servers: [tlsUp.address], tls: { ca: pki.read(pki.caCert), servername: "example.com" }, connectTimeoutMs: 20_000 }),
  );
  assert.equal(wrongName.code, "EAUTH");
  assert.match(wrongName.message, /example\.com.*ERR_TLS_CERT_ALTNAME_INVALID/);
  const cli = await runCli(["status", "--servers", tlsUp.address, "--tls-ca", pki.otherCaCert]);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /certificate was not accepted/);
  const systemCas = await rejection(connect({ servers: [tlsUp.address], tls: true, connectTimeoutMs: 20_000 }));
  assert.equal(systemCas.code, "EAUTH", "a private CA is not among the system CAs");
});

test("tls - bad tls options are refused with EINVAL", async () => {
  const bad = await rejection(connect({ servers: [tlsUp.address], tls: "yes" as unknown as true }));
  assert.equal(bad.code, "EINVAL");
  const half = await rejection(connect({ servers: [tlsUp.address], tls: { cert: pki.read(pki.clientCert) } }));
  assert.equal(half.code, "EINVAL");
  assert.match(half.message, /tls\.cert needs tls\.key/);
});

test("tls - a TLS client at a plaintext member fails clearly, within connectTimeoutMs", async () => {
  // A plaintext service port: frames only (a ClientHello is an oversize frame, so it closes at once).
  const plain = await listenTcp("127.0.0.1", 0, (socket) => new FramedConnection(socket).start({ onMessage: () => undefined, onClose: () => undefined }));
  try {
    const error = await rejection(connect({ servers: [plain.address], tls: { ca: pki.read(pki.caCert) }, connectTimeoutMs: 1000 }));
    assert.equal(error.code, "ETIMEDOUT");
    assert.match(error.message, /TLS handshake with .* failed: .*is it a plaintext member\?/);
  } finally {
    await plain.close();
  }
});

test("tls - --tls-client-auth: no client certificate or a foreign one is EAUTH; the CA's one locks; the CLI with --tls-cert works", async () => {
  const ca = pki.read(pki.caCert);
  const none = await rejection(connect({ servers: [mtlsUp.address], tls: { ca }, connectTimeoutMs: 20_000 }));
  assert.equal(none.code, "EAUTH");
  assert.match(none.message, /requires a TLS client certificate/);
  const foreign = await rejection(
    connect({ servers: [mtlsUp.address], tls: { ca, cert: pki.read(pki.otherClientCert), key: pki.read(pki.otherClientKey) }, connectTimeoutMs: 20_000 }),
  );
  assert.equal(foreign.code, "EAUTH");
  assert.match(foreign.message, /refused this client's TLS certificate/);

  const client = await connect({ servers: [mtlsUp.address], tls: { ca, cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) }, name: "mtls" });
  try {
    (await client.acquire("mtls/1", "write")).release();
    const ok = await runCli(["locks", "--servers", mtlsUp.address, "--tls-ca", pki.caCert, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey, "--json"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual((JSON.parse(ok.stdout) as { key: string }[]).map((r) => r.key), ["mtls/1"]);
    const refused = await runCli(["status", "--servers", mtlsUp.address, "--tls-ca", pki.caCert]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /requires a TLS client certificate/);
  } finally {
    await client.close();
  }
});

test("tls - bad TLS flags are refused before anything starts, naming the flag", async () => {
  const dir = tempDir("tls-flags");
  dirs.push(dir);
  const openKey = join(dir.path, "open.key");
  copyFileSync(pki.serverKey, openKey);
  chmodSync(openKey, 0o644);
  const up = ["up", "--dir", join(dir.path, "d"), "--port", "0"];
  const cases: [string[], RegExp][] = [
    [[...up, "--tls-cert", pki.serverCert], /--tls-key/],
    [[...up, "--tls-key", pki.serverKey], /--tls-cert/],
    [[...up, "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-auth"], /--tls-client-auth needs --tls-ca/],
    [[...up, "--tls-cert", pki.serverCert, "--tls-key", openKey], /--tls-key .* can be read by group or others.*chmod 600/],
    [[...up, "--tls-cert", join(dir.path, "missing.crt"), "--tls-key", pki.serverKey], /--tls-cert .*missing\.crt.*ENOENT/],
    [[...up, "--tls-cert", pki.serverKey, "--tls-key", pki.serverKey], /--tls-cert .* holds no PEM certificate/],
    [[...up, "--tls-cert", pki.clientCert, "--tls-key", pki.serverKey], /--tls-cert\/--tls-key.*(mismatch|key)/i],
    [["status", "--servers", "127.0.0.1:1", "--tls-ca", pki.caCert, "--tls-cert", pki.clientCert], /--tls-cert needs its private key/],
  ];
  for (const [args, pattern] of cases) {
    const { code, stderr } = await runCli(args);
    assert.equal(code, 1, `${args.join(" ")} must fail`);
    assert.match(stderr, pattern, `${args.join(" ")}: ${stderr}`);
  }
  // Protected mode: TLS alone does not authenticate clients, mutual TLS does. Nothing binds a non-loopback
  // address here: the refused start stops before binding, and the accepted one stops at its store, which
  // was formatted for 127.0.0.1 (the --host check comes after protected mode and before any bind).
  const remote = ["up", "--host", "0.0.0.0", "--port", "7411", "--tls-cert", pki.serverCert, "--tls-key", pki.serverKey];
  const tlsOnly = await runCli([...remote, "--dir", join(dir.path, "r1")]);
  assert.equal(tlsOnly.code, 1);
  assert.match(tlsOnly.stderr, /reachable from other machines.*--tls-client-auth/);
  const formatted = await runCli(["format", "--store", `sqlite:${join(dir.path, "r2", "keylock.db")}`, "--slot", "0=127.0.0.1:7411"]);
  assert.equal(formatted.code, 0, formatted.stderr);
  const mutual = await runCli([...remote, "--dir", join(dir.path, "r2"), "--tls-ca", pki.caCert, "--tls-client-auth"]);
  assert.equal(mutual.code, 1);
  assert.doesNotMatch(mutual.stderr, /reachable from other machines/);
  assert.match(mutual.stderr, /was formatted to serve on 127\.0\.0\.1:7411, not 0\.0\.0\.0:7411/);
});

test("tls - a connection that never finishes its TLS handshake is dropped; failed handshakes are counted, the listener keeps serving", async () => {
  const logged: string[] = [];
  let reached = 0;
  const listener = await listenTcp("127.0.0.1", 0, (socket) => (reached++, socket.destroy()), undefined, {
    cert: pki.read(pki.serverCert),
    key: pki.read(pki.serverKey),
    clientAuth: false,
    handshakeTimeoutMs: 300,
    log: (line) => logged.push(line),
  });
  try {
    const closed = (write: Buffer | null): Promise<number> =>
      new Promise((resolve, reject) => {
        const started = performance.now();
        const socket = net.connect({ host: "127.0.0.1", port: listener.port }, () => {
          if (write) socket.write(write);
        });
        socket.on("error", () => undefined);
        socket.on("close", () => resolve(performance.now() - started));
        setTimeout(() => reject(new Error("the listener kept a silent connection open")), 5000).unref();
      });
    const silent = await closed(null);
    assert.ok(silent >= 250, `closed by the handshake deadline (${Math.round(silent)} ms)`);
    await closed(Buffer.from("GET / HTTP/1.1\r\n\r\n"));
    assert.equal(listener.tlsClientErrors, 2);
    assert.equal(logged.length, 1, "one line per interval, the rest counted");
    await rejection(connect({ servers: [listener.address], tls: { ca: pki.read(pki.caCert) }, connectTimeoutMs: 500 }));
    assert.ok(reached > 0, "a TLS client still reaches the owner");
    assert.equal(listener.tlsClientErrors, 2, "and is not counted as a failure");
  } finally {
    await listener.close();
  }
});

test("tls - a three-member cluster with a secret and mutual TLS: the client holding a lock follows a SIGKILLed leader to the next one", async () => {
  const tlsArgs = ["--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-ca", pki.caCert, "--tls-client-auth"];
  const secretFile = join(pki.dir, "secret");
  writeFileSync(secretFile, "tls-failover-secret\n", { mode: 0o600 });
  const cluster = await MemberCluster.format({ members: 3, heartbeatTimeoutMs: 2000, extraArgs: tlsArgs, secretFile });
  cleanups.push(() => cluster.close());
  const since = performance.now();
  await cluster.startAll();
  const first = await cluster.waitForServing(since, 30_000);
  const tls = { ca: pki.read(pki.caCert), cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) };
  const servers = cluster.addresses;
  const secret = "tls-failover-secret";
  const client = await connect({ servers, tls, secret, name: "mtls-failover", connectTimeoutMs: 30_000 });
  cleanups.push(() => client.close());
  const held = await client.acquire("held/1", "write");
  const firstSeq = held.writeSeq;
  const recovered = new Promise<void>((resolve) => client.on("recovered", () => resolve()));

  const killedAt = performance.now();
  await cluster.kill(first.slot, "SIGKILL");
  const second = await cluster.waitForServing(killedAt, 30_000);
  assert.notEqual(second.slot, first.slot);
  await recovered;

  // The lock held before the failover is still held by this client on the new leader, seen over mTLS.
  const rows = (await adminQuery({ servers, tls, secret }, Command.ADMIN_LOCKS)) as { key: Uint8Array; mode: string; state: string }[];
  assert.deepEqual(
    rows.filter((r) => keyToText(keyFromBytes(r.key)) === "held/1").map((r) => [r.mode, r.state]),
    [["write", "granted"]],
  );
  held.release();
  const next = await client.acquire("other/1", "write");
  assert.ok(next.writeSeq > firstSeq, "tokens only grow across the failover");
  next.release();
  const status = await runCli(["status", "--servers", servers.join(","), "--secret-file", secretFile, "--tls-ca", pki.caCert, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey, "--json"]);
  assert.equal(status.code, 0, status.stderr);
  assert.equal((JSON.parse(status.stdout) as { leader: { slot: number } }).leader.slot, second.slot);
});

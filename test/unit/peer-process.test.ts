// Finding the process behind a connection from /proc (io/peer-process.ts), against real loopback
// connections between this test process and child processes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { findPeerProcess, ownProcess, processStart, sameProcess } from "../../src/io/peer-process.js";

const linux = process.platform === "linux";

/** A server on 127.0.0.1 (or ::1) that hands out the sockets it accepts. */
async function listen(host = "127.0.0.1"): Promise<{ port: number; next: () => Promise<net.Socket>; close: () => void }> {
  const accepted: net.Socket[] = [];
  const waiters: ((s: net.Socket) => void)[] = [];
  const server = net.createServer((socket) => {
    const waiter = waiters.shift();
    if (waiter) waiter(socket);
    else accepted.push(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    next: () => {
      const ready = accepted.shift();
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiters.push(resolve));
    },
    close: () => server.close(),
  };
}

/** A child that connects to host:port and then stays connected until killed. */
function connectingChild(host: string, port: number): ChildProcess {
  const source = `const s = require("node:net").connect(${port}, ${JSON.stringify(host)}); s.on("error", () => {}); setInterval(() => {}, 1000);`;
  return spawn(process.execPath, ["-e", source], { stdio: "ignore" });
}

async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => child.once("exit", resolve));
}

test("peer process - the child that owns a loopback connection is found, with its start token", { skip: !linux }, async () => {
  const server = await listen();
  const child = connectingChild("127.0.0.1", server.port);
  try {
    const socket = await server.next();
    const found = await findPeerProcess(socket);
    assert.equal(found.process?.pid, child.pid, found.reason);
    assert.equal(found.process?.start, processStart(child.pid!));
    assert.equal(sameProcess(child.pid!, found.process.start), "running");
    socket.destroy();
  } finally {
    child.kill("SIGKILL");
    await exited(child);
    server.close();
  }
});

test("peer process - over IPv6 loopback too", { skip: !linux }, async (t) => {
  let server;
  try {
    server = await listen("::1");
  } catch {
    t.skip("no IPv6 loopback");
    return;
  }
  const child = connectingChild("::1", server.port);
  try {
    const socket = await server.next();
    const found = await findPeerProcess(socket);
    assert.equal(found.process?.pid, child.pid, found.reason);
    socket.destroy();
  } finally {
    child.kill("SIGKILL");
    await exited(child);
    server.close();
  }
});

test("peer process - a connection whose process is gone has no owner; the dead process is not 'running'", { skip: !linux }, async () => {
  const server = await listen();
  const child = connectingChild("127.0.0.1", server.port);
  const socket = await server.next();
  const before = await findPeerProcess(socket);
  assert.equal(before.process?.pid, child.pid, before.reason);
  child.kill("SIGKILL");
  await exited(child);
  const after = await findPeerProcess(socket);
  assert.equal(after.process, null);
  assert.equal(sameProcess(child.pid!, before.process!.start), "gone");
  socket.destroy();
  server.close();
});

test("peer process - a client inside this process is this process; several lookups at once each get theirs", { skip: !linux }, async () => {
  const server = await listen();
  const own = net.connect(server.port, "127.0.0.1");
  const children = [connectingChild("127.0.0.1", server.port), connectingChild("127.0.0.1", server.port)];
  try {
    const sockets = await Promise.all([server.next(), server.next(), server.next()]);
    const found = await Promise.all(sockets.map((s) => findPeerProcess(s)));
    const pids = found.map((f) => f.process?.pid).sort();
    assert.deepEqual(pids, [process.pid, ...children.map((c) => c.pid)].sort());
    for (const s of sockets) s.destroy();
  } finally {
    own.destroy();
    for (const c of children) c.kill("SIGKILL");
    await Promise.all(children.map(exited));
    server.close();
  }
});

test("peer process - start tokens: another pid, another boot, another machine", { skip: !linux }, () => {
  const me = ownProcess();
  assert.ok(me !== null);
  assert.equal(sameProcess(process.pid, me.start), "running");
  const [host, machine, boot, ticks] = me.start.split(" ");
  assert.equal(sameProcess(process.pid, `${host} ${machine} ${boot} ${Number(ticks) + 1}`), "gone", "a pid reused by a later process");
  assert.equal(sameProcess(process.pid, `${host} ${machine} another-boot ${ticks}`), "gone", "this machine rebooted since");
  assert.equal(sameProcess(process.pid, `other-host ${machine} ${boot} ${ticks}`), "elsewhere");
  assert.equal(sameProcess(process.pid, "garbage"), "elsewhere");
});

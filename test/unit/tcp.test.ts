// io/tcp.ts FramedConnection over a real loopback socket: frames leave in send() order, one socket write
// per batch (a tick's sends, or a received chunk's answers), and close() flushes what was queued (in
// its socket.end).
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { FramedConnection, SEND_QUEUE_BYTES_MAX, connectTcp } from "../../src/io/tcp.js";
import { FrameDecoder, encodeMessage } from "../../src/protocol/codec.js";
import { Command, WireError, type Message } from "../../src/protocol/messages.js";
import { keyFromText } from "../../src/core/keys.js";

function lock(seq: number, key: string, response = false): Message {
  return {
    header: { seq, ack: 0, id: seq, cmd: Command.LOCK, response, error: WireError.NONE },
    payload: {
      kind: "lock",
      body: {
        key: keyFromText(key),
        oldMode: "null",
        newMode: response ? "read" : "write",
        writeSeq: 0n,
        noQueue: false,
        grantTerm: 0n,
        grantNo: 0,
        grantTag: 0,
      },
    },
  };
}

/** A connected pair: `ours` is a FramedConnection on the server side, `peer` the raw client socket. */
async function pair(): Promise<{ ours: FramedConnection; peer: net.Socket; writes: Buffer[]; close: () => void }> {
  const server = net.createServer({ pauseOnConnect: true });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
  const peer = net.connect({ host: "127.0.0.1", port });
  await once(peer, "connect");
  const socket = await accepted;
  const writes: Buffer[] = [];
  const write = (data: Buffer): boolean => net.Socket.prototype.write.call(socket, data);
  socket.write = (data: Buffer): boolean => {
    writes.push(Buffer.from(data));
    return write(data);
  };
  return {
    ours: new FramedConnection(socket),
    peer,
    writes,
    close: () => {
      peer.destroy();
      socket.destroy();
      server.close();
    },
  };
}

/** Reads frames from `peer` until `count` messages arrived (the socket stays open for more). */
function receive(peer: net.Socket, count: number): Promise<Message[]> {
  const decoder = new FrameDecoder();
  const got: Message[] = [];
  return new Promise((resolve) => {
    const onData = (chunk: Buffer): void => {
      got.push(...decoder.push(chunk));
      if (got.length < count) return;
      peer.off("data", onData);
      peer.pause();
      resolve(got);
    };
    peer.on("data", onData);
    peer.resume();
  });
}

const seqs = (messages: readonly Message[]): number[] => messages.map((m) => m.header.seq);

test("tcp - frames sent in one tick leave in order, in one write", async () => {
  const { ours, peer, writes, close } = await pair();
  try {
    ours.start({ onMessage: () => {}, onClose: () => {} });
    const sent = [lock(1, "a"), lock(2, "bb"), lock(3, "ccc", true)];
    for (const m of sent) assert.equal(ours.send(m), true);
    const got = await receive(peer, 3);
    assert.deepEqual(got, sent);
    assert.equal(writes.length, 1);
    assert.deepEqual(writes[0], Buffer.concat(sent.map((m) => encodeMessage(m))));
    // A later tick's single frame is a write of its own; the batch state starts empty again.
    ours.send(lock(4, "d"));
    assert.deepEqual(seqs(await receive(peer, 1)), [4]);
    assert.equal(writes.length, 2);
    for (let i = 5; i < 9; i++) ours.send(lock(i, `k${i}`));
    assert.deepEqual(seqs(await receive(peer, 4)), [5, 6, 7, 8]);
    assert.equal(writes.length, 3);
  } finally {
    close();
  }
});

test("tcp - answers queued while a received chunk is delivered go out in one write when it is done", async () => {
  const { ours, peer, writes, close } = await pair();
  try {
    const delivered: number[] = [];
    ours.start({
      onMessage: (m) => {
        delivered.push(m.header.seq);
        // Two answers per message: the chunk's four answers leave together, after the last message.
        ours.send(lock(m.header.seq * 10, "x", true));
        ours.send(lock(m.header.seq * 10 + 1, "y", true));
        assert.equal(writes.length, 0, "nothing is written while the chunk is being delivered");
      },
      onClose: () => {},
    });
    peer.write(Buffer.concat([encodeMessage(lock(1, "a")), encodeMessage(lock(2, "b"))]));
    const got = await receive(peer, 4);
    assert.deepEqual(delivered, [1, 2]);
    assert.deepEqual(seqs(got), [10, 11, 20, 21]);
    assert.equal(writes.length, 1);
  } finally {
    close();
  }
});

test("tcp - close() flushes every queued frame, in order, and later sends are refused", async () => {
  const { ours, peer, writes, close } = await pair();
  try {
    const reasons: string[] = [];
    ours.start({ onMessage: () => {}, onClose: (reason) => reasons.push(reason) });
    ours.send(lock(1, "a"));
    ours.send(lock(2, "b"));
    ours.send(lock(3, "c"));
    ours.close("done here");
    assert.equal(ours.send(lock(4, "d")), false);
    assert.deepEqual(seqs(await receive(peer, 3)), [1, 2, 3]);
    assert.equal(writes.length, 0, "flushed by socket.end, not by separate writes");
    assert.deepEqual(reasons, ["done here"]);
  } finally {
    close();
  }
});

test("tcp - a malformed frame closes the connection with the reason, delivering nothing after it", async () => {
  const { ours, peer, close } = await pair();
  try {
    const delivered: number[] = [];
    const closed = new Promise<string>((resolve) => ours.start({ onMessage: (m) => delivered.push(m.header.seq), onClose: resolve }));
    const bad = Buffer.from([0, 0, 0, 3, 0xc1, 0xc1, 0xc1]);
    peer.write(Buffer.concat([encodeMessage(lock(1, "a")), bad, encodeMessage(lock(2, "b"))]));
    assert.match(await closed, /^malformed input: /);
    assert.deepEqual(delivered, [], "a throw discards the chunk's earlier messages (frame.ts contract)");
  } finally {
    close();
  }
});

test("tcp - a connectTcp socket reads through one reused buffer: split, batched and early frames all arrive, in order", async () => {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
  const socket = await connectTcp("127.0.0.1", port, 2000);
  const peer = await accepted;
  try {
    // Sent before start(): waits in the socket, then is delivered first.
    const early = [lock(1, "early-1"), lock(2, "early-2")];
    peer.write(Buffer.concat(early.map((m) => encodeMessage(m))));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const ours = new FramedConnection(socket);
    const got: Message[] = [];
    let wanted = 0;
    let arrived: () => void = () => {};
    ours.start({
      onMessage: (m) => {
        got.push(m);
        if (got.length === wanted) arrived();
      },
      onClose: () => {},
    });
    const until = (count: number): Promise<void> =>
      got.length >= count ? Promise.resolve() : new Promise((resolve) => ((wanted = count), (arrived = resolve)));
    await until(2);
    // One frame cut into single bytes, each written on its own.
    const split = encodeMessage(lock(3, "split"));
    for (const byte of split) {
      peer.write(Buffer.from([byte]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    // Many frames at once, more than one read buffer's worth (each read reuses the same buffer).
    const many: Message[] = [];
    for (let i = 4; i < 4 + 5000; i++) many.push(lock(i, `key/${String(i).padStart(20, "0")}`));
    peer.write(Buffer.concat(many.map((m) => encodeMessage(m))));
    await until(3 + many.length);
    assert.deepEqual(got, [...early, lock(3, "split"), ...many]);
    // And it writes as any FramedConnection does.
    const answer = new Promise<Message[]>((resolve) => {
      const decoder = new FrameDecoder();
      peer.on("data", (chunk: Buffer) => resolve(decoder.push(chunk)));
    });
    ours.send(lock(7, "answer", true));
    assert.deepEqual(await answer, [lock(7, "answer", true)]);
  } finally {
    peer.destroy();
    socket.destroy();
    server.close();
  }
});

test("tcp - a connectTcp connection reports the peer's close and a malformed frame like any other", async () => {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as net.AddressInfo).port;
  const peers: net.Socket[] = [];
  server.on("connection", (peer) => peers.push(peer));
  try {
    const a = new FramedConnection(await connectTcp("127.0.0.1", port, 2000));
    const closedA = new Promise<string>((resolve) => a.start({ onMessage: () => {}, onClose: resolve }));
    while (peers.length < 1) await new Promise((resolve) => setTimeout(resolve, 5));
    peers[0]!.end();
    assert.equal(await closedA, "peer closed the connection");
    const b = new FramedConnection(await connectTcp("127.0.0.1", port, 2000));
    const closedB = new Promise<string>((resolve) => b.start({ onMessage: () => {}, onClose: resolve }));
    while (peers.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    peers[1]!.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    assert.match(await closedB, /^malformed input: .*frame length 4294967295 exceeds FRAME_BYTES_MAX/);
  } finally {
    for (const peer of peers) peer.destroy();
    server.close();
  }
});

test("tcp - a peer that stops reading is disconnected once more than SEND_QUEUE_BYTES_MAX is queued, never grows memory past it", async () => {
  const { ours, peer, close } = await pair();
  try {
    peer.pause(); // reads nothing from here on
    const closed = new Promise<string>((resolve) => ours.start({ onMessage: () => {}, onClose: resolve }));
    let reason: string | null = null;
    void closed.then((r) => (reason = r));
    const bigKey = "k".repeat(1000);
    let sent = 0;
    // Many frames per tick: the batched flush (first frame + the rest in one buffer) is what backs up.
    while (reason === null && sent < 200_000) {
      for (let i = 0; i < 1000 && ours.send(lock(sent + 1, bigKey)); i++) sent++;
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.match(String(reason), /peer is not reading: more than \d+ bytes queued/);
    assert.equal(ours.send(lock(1, "a")), false, "closed: later sends are refused");
    assert.ok(sent * 1000 > SEND_QUEUE_BYTES_MAX, "it took more than the bound to back up");
  } finally {
    close();
  }
});

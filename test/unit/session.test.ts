// Unit tests of the reliable session for what transcripts show badly: the §6.11 table one row per test,
// the regressions B21 and B27, and seeded randomized runs of two sessions talking through a lossy socket
// (everything in flight is lost at a disconnect) across many reconnects and failovers. Replay a failing
// run with KEYLOCK_SEED=<seed>.
import { test } from "node:test";
import assert from "node:assert/strict";
import { InvariantError } from "../../src/core/errors.js";
import { ReliableSession, classifyGreeting, type GreetingClass } from "../../src/core/session.js";
import { WireSession } from "../../src/protocol/session.js";
import { Command, WireError, type Body, type Header, type Message } from "../../src/protocol/messages.js";
import { prng } from "../support/prng.js";

const PAYLOAD: Body = { kind: "farewell", body: {} };
const TERM = 7n;

function header(fields: Partial<Header> & { seq: number; id: number }): Header {
  return { ack: 0, cmd: Command.LOCK, response: false, error: WireError.NONE, ...fields };
}

/** Every combination of the "any" / "n/a" columns of one §6.11 row gives `expected`. */
function assertRow(
  lastServerTerm: bigint,
  farewells: readonly boolean[],
  sessions: readonly boolean[],
  expected: GreetingClass,
): void {
  for (const farewell of farewells) {
    for (const hasSession of sessions) {
      assert.equal(
        classifyGreeting({ lastServerTerm, farewell }, { term: TERM, hasSession }),
        expected,
        `lastServerTerm=${lastServerTerm} farewell=${farewell} hasSession=${hasSession}`,
      );
    }
  }
}

const ANY = [false, true] as const;

test("session - §6.11 row 1: lastServerTerm 0 (never greeted), any farewell, session n/a → new-client", () => {
  assertRow(0n, ANY, ANY, "new-client");
});

test("session - §6.11 row 2: lastServerTerm == this term, any farewell, session found → reconnect", () => {
  assertRow(TERM, ANY, [true], "reconnect");
});

test("session - §6.11 row 3: lastServerTerm == this term, no farewell, no session → forgotten", () => {
  assertRow(TERM, [false], [false], "forgotten");
});

test("session - §6.11 row 4: lastServerTerm == this term, farewell, no session → farewell-retry", () => {
  assertRow(TERM, [true], [false], "farewell-retry");
});

test("session - §6.11 row 5: lastServerTerm another term (older or newer), any farewell, any session → first-contact", () => {
  assertRow(TERM - 1n, ANY, ANY, "first-contact");
  assertRow(1n, ANY, ANY, "first-contact");
  assertRow(TERM + 3n, ANY, ANY, "first-contact");
});

test("session - B21: a resent first greeting classifies as new-client again, not as an error", () => {
  const greeting = { lastServerTerm: 0n, farewell: false };
  assert.equal(classifyGreeting(greeting, { term: TERM, hasSession: false }), "new-client");
  // The answer to the first greeting was lost; the server made a session, the client still sends 0.
  assert.equal(classifyGreeting(greeting, { term: TERM, hasSession: true }), "new-client");
});

test("session - B27: a response kept for resend when the socket migrates goes out first, before new messages", () => {
  const server = new WireSession();
  server.attach();
  assert.equal(server.receive(header({ seq: 1, id: 1, cmd: Command.FAREWELL })), "deliver");
  const sent = server.respond(Command.FAREWELL, 1, PAYLOAD);
  assert.ok(sent, "attached: the response goes out at once");
  server.detach(); // it never arrived
  assert.equal(server.request(Command.LOCK_RECOVER, PAYLOAD).message, null, "detached: kept");
  const resent = server.attach();
  assert.deepEqual(
    resent.map((m) => [m.header.cmd, m.header.response, m.header.seq]),
    [
      [Command.FAREWELL, true, 1],
      [Command.LOCK_RECOVER, false, 2],
    ],
  );
  const next = server.request(Command.LOCK, PAYLOAD).message;
  assert.equal(next?.header.seq, 3, "new messages follow the resent ones");
});

test("session - a new session is detached: messages wait for attach()", () => {
  const session = new WireSession();
  assert.equal(session.attached, false);
  const { id, message } = session.request(Command.LOCK, PAYLOAD);
  assert.equal(id, 1);
  assert.equal(message, null);
  const sent = session.attach();
  assert.equal(session.attached, true);
  assert.deepEqual(sent, [
    {
      header: { seq: 1, ack: 0, id: 1, cmd: Command.LOCK, response: false, error: WireError.NONE },
      payload: PAYLOAD,
    },
  ]);
});

test("session - a response carries its error code; a kept one keeps it across attach", () => {
  const session = new WireSession();
  session.attach();
  session.receive(header({ seq: 1, id: 4 }));
  const sent = session.respond(Command.LOCK, 4, PAYLOAD, WireError.EAGAIN);
  assert.equal(sent?.header.error, WireError.EAGAIN);
  assert.equal(sent?.header.response, true);
  session.detach();
  assert.equal(session.attach()[0]?.header.error, WireError.EAGAIN);
});

test("session - farewell-retry: a fresh session answering a peer that acked its predecessor numbers after that ack", () => {
  const server = new WireSession({ continuesPredecessor: true });
  server.attach();
  assert.equal(server.receive(header({ seq: 40, ack: 25, id: 12, cmd: Command.FAREWELL })), "deliver");
  const response = server.respond(Command.FAREWELL, 12, PAYLOAD)!;
  assert.equal(response.header.seq, 26);
  // The client's session, which saw the dropped server session up to seq 25, accepts it.
  const client = new WireSession();
  client.attach();
  for (let i = 0; i < 40; i++) client.request(Command.LOCK, PAYLOAD); // it sent up to seq 40
  for (let seq = 1; seq <= 25; seq++) client.receive(header({ seq, id: seq }));
  assert.equal(client.receive(response.header), "unmatched-response", "not a duplicate");
  assert.equal(client.lastReceivedSeq, 26);
});

test("session - peer input never throws: random headers give verdicts", () => {
  const seed = seedFromEnv();
  console.log(`session fuzz: KEYLOCK_SEED=${seed}`);
  const random = prng(seed);
  const session = new WireSession();
  session.attach();
  for (let i = 0; i < 20; i++) session.request(Command.LOCK, PAYLOAD);
  const commands = Object.values(Command);
  const pick = (n: number) => Math.floor(random() * n);
  for (let i = 0; i < 20_000; i++) {
    const verdict = session.receive({
      seq: pick(3) === 0 ? pick(5) : pick(100_000),
      ack: pick(3) === 0 ? 0 : pick(2 ** 40),
      id: pick(40),
      cmd: commands[pick(commands.length)]!,
      response: random() < 0.5,
      error: WireError.NONE,
    });
    assert.ok(["deliver", "duplicate", "unmatched-response", "protocol-error"].includes(verdict));
    // Whatever the peer sent, answering what is owed and sending more never throws.
    if (verdict === "deliver" && i % 7 === 0) session.request(Command.LOCK, PAYLOAD);
  }
});

test("session - hostile ack: an ack near 2^53 is a protocol error, not adopted, and cannot exhaust our seqs", () => {
  const server = new WireSession();
  server.attach();
  const forged = header({ seq: 1, ack: 2 ** 53 - 2, id: 1 });
  assert.equal(server.receive(forged), "protocol-error");
  assert.match(server.problem ?? "", /acknowledges seqs never sent/);
  assert.equal(server.receive(header({ seq: 2, ack: 2 ** 53 - 2, id: 2 })), "protocol-error");
  // Before the fix the next seq was taken from the forged ack: seqs ran out and an InvariantError followed.
  assert.equal(server.request(Command.LOCK, PAYLOAD).message?.header.seq, 1);
  assert.equal(server.request(Command.LOCK, PAYLOAD).message?.header.seq, 2);
  assert.equal(server.lastReceivedSeq, 0, "a refused header changes nothing");
});

test("session - hostile request ids: an id reused while still owed is a protocol error and the answer never throws", () => {
  const server = new WireSession();
  server.attach();
  assert.equal(server.receive(header({ seq: 1, id: 5, cmd: Command.FAREWELL })), "deliver");
  assert.equal(server.receive(header({ seq: 2, id: 5, cmd: Command.FAREWELL })), "protocol-error");
  assert.equal(server.receive(header({ seq: 3, id: 5, cmd: Command.LOCK })), "protocol-error");
  assert.equal(server.owedResponses, 1);
  assert.ok(server.owes(5));
  assert.ok(server.respond(Command.FAREWELL, 5, PAYLOAD));
  assert.equal(server.owes(5), false);
});

test("session - owed requests: the first in its fields and the rest in a Map behave as one set, in any answer order", () => {
  const server = new WireSession();
  server.attach();
  // One at a time (the usual path): each owed, answered, then no longer owed.
  for (let i = 1; i <= 3; i++) {
    assert.equal(server.receive(header({ seq: i, id: i })), "deliver");
    assert.ok(server.owes(i));
    assert.equal(server.owedResponses, 1);
    assert.ok(server.respond(Command.LOCK, i, PAYLOAD));
    assert.equal(server.owes(i), false);
    assert.equal(server.owedResponses, 0);
  }
  // Several at once, answered out of order; ids reused while owed are refused wherever they are kept.
  const ids = [10, 11, 12, 13];
  let seq = 4;
  for (const id of ids) assert.equal(server.receive(header({ seq: seq++, id, cmd: id % 2 === 0 ? Command.LOCK : Command.FAREWELL })), "deliver");
  assert.equal(server.owedResponses, 4);
  for (const id of ids) {
    assert.equal(server.receive(header({ seq: seq++, id })), "protocol-error");
    assert.match(server.problem ?? "", new RegExp(`request id ${id} is reused while the ${id % 2 === 0 ? "LOCK" : "FAREWELL"} request`));
  }
  assert.equal(server.owes(0), false, "id 0 is never owed");
  assert.throws(() => server.respond(Command.LOCK, 11, PAYLOAD), InvariantError, "answered with another command");
  assert.ok(server.respond(Command.LOCK, 10, PAYLOAD)); // the one kept in fields
  assert.equal(server.receive(header({ seq, id: 14 })), "deliver"); // takes the free fields
  for (const [id, cmd] of [[13, Command.FAREWELL], [14, Command.LOCK], [11, Command.FAREWELL], [12, Command.LOCK]] as const) {
    assert.ok(server.owes(id));
    assert.ok(server.respond(cmd, id, PAYLOAD));
    assert.equal(server.owes(id), false);
    assert.throws(() => server.respond(cmd, id, PAYLOAD), InvariantError, "answered twice");
  }
  assert.equal(server.owedResponses, 0);
  // After a reset, ids owed to the previous server (in fields and in the Map) are dropped when answered.
  const client = new WireSession();
  client.attach();
  client.receive(header({ seq: 1, id: 1 }));
  client.receive(header({ seq: 2, id: 2 }));
  client.resetForNewServer();
  assert.equal(client.owedResponses, 0);
  assert.equal(client.respond(Command.LOCK, 2, PAYLOAD), null);
  assert.equal(client.respond(Command.LOCK, 1, PAYLOAD), null);
  assert.throws(() => client.respond(Command.LOCK, 1, PAYLOAD), InvariantError);
});

test("session - hostile header values: seq and id outside 1..2^53-1 and non-integer acks are protocol errors", () => {
  const server = new WireSession();
  server.attach();
  for (const bad of [
    header({ seq: 0, id: 1 }),
    header({ seq: -1, id: 1 }),
    header({ seq: 1.5, id: 1 }),
    header({ seq: 2 ** 53, id: 1 }),
    header({ seq: 1, id: 0 }),
    header({ seq: 1, id: -3 }),
    header({ seq: 1, id: 1, ack: -1 }),
    header({ seq: 1, id: 1, ack: 0.5 }),
    header({ seq: 1, id: 0, response: true }),
  ]) {
    assert.equal(server.receive(bad), "protocol-error", JSON.stringify(bad));
  }
  assert.equal(server.lastReceivedSeq, 0);
  assert.equal(server.owedResponses, 0);
});

test("session - farewell-retry adoption is bounded and only before the first send", () => {
  const fresh = new WireSession({ continuesPredecessor: true });
  fresh.attach();
  assert.equal(fresh.receive(header({ seq: 1, ack: 2 ** 52 + 1, id: 1 })), "protocol-error");
  assert.equal(fresh.receive(header({ seq: 1, ack: 2 ** 52, id: 1 })), "deliver");
  assert.equal(fresh.respond(Command.LOCK, 1, PAYLOAD)?.header.seq, 2 ** 52 + 1);
  assert.equal(fresh.receive(header({ seq: 2, ack: 2 ** 52 + 5, id: 2 })), "protocol-error");
  const used = new WireSession({ continuesPredecessor: true });
  used.attach();
  used.request(Command.LOCK, PAYLOAD);
  assert.equal(used.receive(header({ seq: 1, ack: 10, id: 1 })), "protocol-error");
});

test("session - B33: 100k messages in flight are matched without linear scans", () => {
  const a = new WireSession();
  const b = new WireSession();
  a.attach();
  b.attach();
  const count = 100_000;
  const started = performance.now();
  const requests: Message[] = [];
  for (let i = 0; i < count; i++) requests.push(a.request(Command.LOCK, PAYLOAD).message!);
  for (const m of requests) assert.equal(b.receive(m.header), "deliver");
  // Answered newest first: the worst case for a list scanned from the front.
  const responses: Message[] = [];
  for (let i = requests.length - 1; i >= 0; i--) {
    responses.push(b.respond(Command.LOCK, requests[i]!.header.id, PAYLOAD)!);
  }
  for (const m of responses) assert.equal(a.receive(m.header), "deliver");
  assert.equal(a.unansweredRequests, 0);
  // One more message from a acknowledges every response at once.
  b.receive(a.request(Command.LOCK, PAYLOAD).message!.header);
  assert.equal(b.unackedResponses, 0);
  const elapsedMs = performance.now() - started;
  assert.ok(elapsedMs < 5_000, `took ${elapsedMs.toFixed(0)} ms`);
});

test("session - local misuse throws InvariantError; peer input does not", () => {
  const session = new WireSession();
  session.attach();
  assert.throws(() => session.respond(Command.LOCK, 1, PAYLOAD), InvariantError);
  assert.throws(() => session.request(Command.GREETING, PAYLOAD), InvariantError);
  session.receive(header({ seq: 1, id: 1 }));
  assert.throws(() => session.respond(Command.FAREWELL, 1, PAYLOAD), InvariantError);
  session.respond(Command.LOCK, 1, PAYLOAD);
  assert.throws(() => session.respond(Command.LOCK, 1, PAYLOAD), InvariantError);
});

// ---------------------------------------------------------------------------------------------------
// Randomized: a client and a server session talk through a "socket" that loses everything in flight at
// a disconnect. Each side sends requests, answers the other's requests at random later steps, and
// attaches again after every reconnect. Failovers (in the second test) replace the server session.


function seedFromEnv(): number {
  const envSeed = process.env.KEYLOCK_SEED;
  return envSeed !== undefined ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
}

type Side = "client" | "server";

interface Endpoint {
  session: WireSession;
  /** The peer's request ids delivered here and not answered yet. */
  owed: number[];
  /** Messages on their way to this endpoint. */
  inbound: Message[];
  /** How often each of the peer's request ids was delivered here. */
  requestsDelivered: Map<number, number>;
  /** How often a response to each of our request ids was delivered here. */
  responsesDelivered: Map<number, number>;
  /** Our request ids, in the order we made them. */
  requestsMade: number[];
  lastDeliveredRequestId: number;
}

function endpoint(): Endpoint {
  return {
    session: new WireSession(),
    owed: [],
    inbound: [],
    requestsDelivered: new Map(),
    responsesDelivered: new Map(),
    requestsMade: [],
    lastDeliveredRequestId: 0,
  };
}

function bump(map: Map<number, number>, id: number): void {
  map.set(id, (map.get(id) ?? 0) + 1);
}

class LossyPair {
  readonly random: () => number;
  client = endpoint();
  server = endpoint();
  connected = false;
  /** Server sessions so far (failovers); each is a new peer for the client. */
  servers = 1;
  log: string[] = [];
  readonly stats = { reconnects: 0, failovers: 0, dropped: 0, duplicates: 0 };

  constructor(seed: number) {
    this.random = prng(seed);
  }

  peerOf(side: Side): Endpoint {
    return side === "client" ? this.server : this.client;
  }

  send(from: Side, message: Message | null): void {
    if (message !== null && this.connected) this.peerOf(from).inbound.push(message);
  }

  request(from: Side): void {
    const self = from === "client" ? this.client : this.server;
    const { id, message } = self.session.request(Command.LOCK, PAYLOAD);
    self.requestsMade.push(id);
    this.log.push(`${from} request id=${id}${message ? ` seq=${message.header.seq}` : " (kept)"}`);
    this.send(from, message);
  }

  answer(from: Side): void {
    const self = from === "client" ? this.client : this.server;
    if (self.owed.length === 0) return;
    const index = Math.floor(this.random() * self.owed.length);
    const id = self.owed.splice(index, 1)[0]!;
    const message = self.session.respond(Command.LOCK, id, PAYLOAD);
    this.log.push(`${from} respond id=${id}${message ? ` seq=${message.header.seq}` : " (kept)"}`);
    this.send(from, message);
  }

  /** Delivers the next message on its way to `to`; returns false when there is none. */
  deliver(to: Side): boolean {
    const self = to === "client" ? this.client : this.server;
    const message = self.inbound.shift();
    if (message === undefined) return false;
    const { seq, ack, id, response } = message.header;
    const verdict = self.session.receive(message.header);
    this.log.push(`${to} <- ${response ? "response" : "request"} seq=${seq} ack=${ack} id=${id}: ${verdict}`);
    if (verdict === "duplicate") this.stats.duplicates++;
    assert.notEqual(verdict, "unmatched-response", `${to} got a response nobody waits for (id ${id})`);
    if (verdict !== "deliver") return true;
    if (response) {
      bump(self.responsesDelivered, id);
    } else {
      bump(self.requestsDelivered, id);
      assert.ok(
        id > self.lastDeliveredRequestId,
        `${to} got request ${id} after ${self.lastDeliveredRequestId}`,
      );
      self.lastDeliveredRequestId = id;
      self.owed.push(id);
    }
    return true;
  }

  disconnect(): void {
    this.stats.dropped += this.client.inbound.length + this.server.inbound.length;
    this.log.push(`disconnect (${this.client.inbound.length + this.server.inbound.length} in flight lost)`);
    this.client.inbound = [];
    this.server.inbound = [];
    this.connected = false;
    this.client.session.detach();
    this.server.session.detach();
  }

  /** A new socket to the same server: both sides resend what they keep, then carry on. */
  reconnect(): void {
    this.stats.reconnects++;
    this.connected = true;
    this.log.push("reconnect");
    for (const m of this.server.session.attach()) this.send("server", m);
    for (const m of this.client.session.attach()) this.send("client", m);
  }

  /**
   * The server dies (whatever it owed or kept is gone); the client greets a new one and resets. The
   * client's driver drops answers to the dead server's requests (its epoch changed).
   */
  failover(): void {
    if (this.connected) this.disconnect();
    this.stats.failovers++;
    this.servers++;
    this.log.push(`failover to server #${this.servers}`);
    this.server = endpoint();
    this.client.owed = [];
    this.client.requestsDelivered = new Map();
    this.client.lastDeliveredRequestId = 0;
    this.client.session.resetForNewServer();
    this.connected = true;
    this.server.session.attach();
    for (const m of this.client.session.attach()) this.send("client", m);
  }

  step(allowFailover: boolean): void {
    const roll = this.random();
    const side: Side = this.random() < 0.5 ? "client" : "server";
    if (roll < 0.25) this.request(side);
    else if (roll < 0.4) this.answer(side);
    else if (roll < 0.9) this.deliver(side);
    else if (roll < 0.95 || !allowFailover) {
      if (this.connected) {
        if (this.random() < 0.5) this.disconnect();
      } else this.reconnect();
    } else this.failover();
  }

  /** Heals: connected, and everything delivered and answered until nothing moves. */
  heal(): void {
    if (!this.connected) this.reconnect();
    for (;;) {
      let moved = false;
      while (this.deliver("client") || this.deliver("server")) moved = true;
      while (this.client.owed.length > 0) {
        this.answer("client");
        moved = true;
      }
      while (this.server.owed.length > 0) {
        this.answer("server");
        moved = true;
      }
      if (!moved) return;
    }
  }
}

function runSeeds(name: string, rounds: number, body: (pair: LossyPair) => void): void {
  const baseSeed = seedFromEnv();
  console.log(`${name}: KEYLOCK_SEED=${baseSeed}`);
  for (let round = 0; round < rounds; round++) {
    const pair = new LossyPair((baseSeed + round) >>> 0);
    try {
      body(pair);
    } catch (error) {
      console.log(
        `failed in round ${round} (KEYLOCK_SEED=${baseSeed}); last steps:\n${pair.log.slice(-40).join("\n")}`,
      );
      throw error;
    }
  }
}

test("session - same peer across many reconnects: every request and every response is delivered exactly once, in order", () => {
  const steps = 600;
  const totals = { reconnects: 0, dropped: 0, duplicates: 0 };
  runSeeds("session exactly-once", 60, (pair) => {
    for (let i = 0; i < steps; i++) pair.step(false);
    pair.heal();
    for (const [side, self, peer] of [
      ["client", pair.client, pair.server],
      ["server", pair.server, pair.client],
    ] as const) {
      for (const id of self.requestsMade) {
        assert.equal(peer.requestsDelivered.get(id), 1, `${side} request ${id} delivered to its peer`);
        assert.equal(self.responsesDelivered.get(id), 1, `response to ${side} request ${id} delivered`);
      }
      assert.equal(peer.requestsDelivered.size, self.requestsMade.length, `${side}: no request from nowhere`);
      assert.equal(self.session.unansweredRequests, 0, `${side} keeps no request after healing`);
      assert.equal(self.session.owedResponses, 0, `${side} owes nothing after healing`);
    }
    // One more exchange each way acknowledges every response but the last one of each side.
    pair.request("client");
    pair.request("server");
    pair.heal();
    assert.ok(pair.client.session.unackedResponses <= 1, "client responses acknowledged");
    assert.ok(pair.server.session.unackedResponses <= 1, "server responses acknowledged");
    totals.reconnects += pair.stats.reconnects;
    totals.dropped += pair.stats.dropped;
    totals.duplicates += pair.stats.duplicates;
  });
  // The runs must actually have lost messages and dropped resent duplicates.
  assert.ok(
    totals.reconnects > 100 && totals.dropped > 100 && totals.duplicates > 100,
    JSON.stringify(totals),
  );
});

test("session - failovers to new servers: unanswered requests resent (at-least-once), old responses dropped, each answer delivered once", () => {
  const steps = 600;
  const totals = { failovers: 0, redelivered: 0 };
  runSeeds("session at-least-once", 60, (pair) => {
    /** Client request id → how many servers it was delivered to. */
    const deliveredTo = new Map<number, number>();
    const countServer = (server: Endpoint) => {
      for (const [id, times] of server.requestsDelivered) {
        assert.equal(times, 1, `request ${id} delivered twice to one server`);
        deliveredTo.set(id, (deliveredTo.get(id) ?? 0) + 1);
      }
    };
    for (let i = 0; i < steps; i++) {
      const before = pair.server;
      pair.step(true);
      if (pair.server !== before) countServer(before);
    }
    pair.heal();
    countServer(pair.server);
    for (const id of pair.client.requestsMade) {
      assert.ok((deliveredTo.get(id) ?? 0) >= 1, `client request ${id} never delivered`);
      assert.equal(pair.client.responsesDelivered.get(id), 1, `response to client request ${id} delivered`);
      if ((deliveredTo.get(id) ?? 0) > 1) totals.redelivered++;
    }
    assert.equal(pair.client.session.unansweredRequests, 0);
    // The last server's own requests: exactly once each way.
    for (const id of pair.server.requestsMade) {
      assert.equal(pair.client.requestsDelivered.get(id), 1, `server request ${id} delivered`);
      assert.equal(pair.server.responsesDelivered.get(id), 1, `response to server request ${id} delivered`);
    }
    totals.failovers += pair.stats.failovers;
  });
  assert.ok(totals.failovers > 100 && totals.redelivered > 0, JSON.stringify(totals));
});

test("session - the core session is generic: it carries any command, status and payload type, never looking inside", () => {
  type ToyCommand = "get" | "put" | "hello";
  const profile = { noError: "ok", unsequenced: ["hello"] as ToyCommand[], commandName: (cmd: ToyCommand) => cmd };
  const client = new ReliableSession<ToyCommand, string, { value: number }>(profile);
  const server = new ReliableSession<ToyCommand, string, { value: number }>(profile);
  client.attach();
  server.attach();
  const sent = client.request("put", { value: 42 }).message!;
  assert.deepEqual(sent.header, { seq: 1, ack: 0, id: 1, cmd: "put", response: false, error: "ok" });
  assert.equal(server.receive(sent.header), "deliver");
  const answer = server.respond("put", 1, { value: 43 }, "busy")!;
  assert.deepEqual(answer, { header: { seq: 1, ack: 1, id: 1, cmd: "put", response: true, error: "busy" }, payload: { value: 43 } });
  assert.equal(client.receive(answer.header), "deliver");
  assert.equal(client.unansweredRequests, 0);
  assert.throws(() => client.request("hello", { value: 0 }), InvariantError, "an unsequenced command is never queued");
  assert.throws(() => server.respond("get", 1, { value: 0 }), /response get id=1: no request with that id/);
});

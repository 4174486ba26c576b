/**
 * Transcript tests (STYLE.md, etcd-io/raft): a text file is a script of commands, each followed by the
 * lines it is expected to print, each prefixed "> ". Lines starting with "#" and blank lines are kept
 * as written. Run with KEYLOCK_REWRITE=1 to regenerate the expected lines; review the diff like code.
 *
 *   # Read after write elsewhere
 *   request A k1 write
 *   > grant A k1 null->write seq=1
 *
 * Relies on: the handler being deterministic (same commands, same output).
 */
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import { test } from "node:test";

export const REWRITE = process.env.KEYLOCK_REWRITE === "1";

/** Runs one command line and returns the lines it prints (without the "> " prefix). */
export type CommandHandler = (command: string, args: string[]) => string[];

/** Runs a transcript file against a fresh handler and returns the file as it should read. */
export function runTranscript(text: string, handler: CommandHandler): string {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith(">")) continue; // expected output: regenerated below
    out.push(line);
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const [command, ...args] = trimmed.split(/\s+/);
    let printed: string[];
    try {
      printed = handler(command!, args);
    } catch (error) {
      printed = [`THROWS ${error instanceof Error ? error.message : String(error)}`];
    }
    for (const p of printed) out.push(`> ${p}`);
  }
  return out.join("\n");
}

/** Registers one node:test per file in `dir`; each file runs against `makeHandler()`. */
export function transcriptTests(area: string, dir: string, makeHandler: () => CommandHandler): void {
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".txt")).sort()) {
    const path = join(dir, name);
    const title = readFileSync(path, "utf8").split("\n")[0]!.replace(/^#\s*/, "");
    test(`${area} - ${title} (${name})`, () => {
      const text = readFileSync(path, "utf8");
      const actual = runTranscript(text, makeHandler());
      if (REWRITE) {
        if (actual !== text) writeFileSync(path, actual);
        return;
      }
      assert.equal(actual, text, `transcript ${path} differs; rerun with KEYLOCK_REWRITE=1 and review the diff`);
    });
  }
}

/** Transcripts name clients A..Z; their rids are 1..26. */
export function ridOf(client: string | undefined): bigint {
  if (client === undefined || !/^[A-Z]$/.test(client)) throw new Error(`client ${client} is not a capital letter`);
  return BigInt(client.charCodeAt(0) - 64);
}

/** The transcript name of a rid: A..Z for 1..26, else `rid=N`. */
export function clientOf(rid: bigint): string {
  return rid >= 1n && rid <= 26n ? String.fromCharCode(64 + Number(rid)) : `rid=${rid}`;
}

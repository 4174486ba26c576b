/**
 * Reading the cluster secret from `--secret-file F` (DESIGN §9: secrets at rest), for every command that
 * takes one (format, up, member, the admin commands).
 *
 * Guarantees: a file that group or others can read is refused before it is read, with a message naming
 * its mode and the fix (`chmod 600 F`); a missing or empty file is refused naming it. The secret is the
 * file's text (UTF-8) with surrounding whitespace (a trailing newline) trimmed.
 */
import { readFileSync, statSync } from "node:fs";
import { InvalidArgumentError } from "commander";

/** Reads a secret file, refusing one that group or others can read. */
export function readSecret(file: string): string {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (error) {
    throw new InvalidArgumentError(`--secret-file ${file}: ${(error as Error).message}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new InvalidArgumentError(
      `--secret-file ${file} can be read by group or others (mode ${(mode & 0o777).toString(8).padStart(4, "0")}); ` +
        `make it owner-only: chmod 600 ${file}`,
    );
  }
  const secret = readFileSync(file, "utf8").trim();
  if (secret.length === 0) throw new InvalidArgumentError(`--secret-file ${file} is empty`);
  return secret;
}

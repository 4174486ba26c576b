/**
 * TLS flags of the CLI (DESIGN §9): the member's `--tls-cert F --tls-key F [--tls-ca F] [--tls-client-auth]`
 * and the admin commands' `--tls-ca F [--tls-cert F --tls-key F]` (plus `--tls` for the system CAs and
 * `--tls-servername`). Files are read once at start.
 *
 * Guarantees: every refusal is an InvalidArgumentError naming the flag and the file: a missing or
 * unreadable file, a file that is not PEM, a private key that group or others can read (like secret
 * files: the message says how to fix it), a certificate without its key or the reverse, a key that does
 * not match its certificate, and `--tls-client-auth` without `--tls-ca`.
 * Relies on: node:tls to parse the PEM material (`createSecureContext` is built once here to check it).
 */
import { readFileSync, statSync } from "node:fs";
import tls from "node:tls";
import { InvalidArgumentError } from "commander";
import type { ClientTlsOptions } from "../io/tcp.js";
import type { MemberTls } from "../runtime/member.js";

export interface MemberTlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsClientAuth?: boolean;
}

export interface ClientTlsFlags {
  tls?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsServername?: string;
}

function readPem(flag: string, file: string, what: "CERTIFICATE" | "PRIVATE KEY"): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (error) {
    throw new InvalidArgumentError(`${flag} ${file}: ${(error as Error).message}`);
  }
  const text = data.toString("latin1");
  const ok = what === "CERTIFICATE" ? text.includes("-----BEGIN CERTIFICATE-----") : /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
  if (!ok) throw new InvalidArgumentError(`${flag} ${file} holds no PEM ${what.toLowerCase()} ("-----BEGIN ${what}-----")`);
  return data;
}

/** Reads a private key, refusing one that group or others can read (like `--secret-file`). */
function readKey(flag: string, file: string): Buffer {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (error) {
    throw new InvalidArgumentError(`${flag} ${file}: ${(error as Error).message}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new InvalidArgumentError(
      `${flag} ${file} can be read by group or others (mode ${(mode & 0o777).toString(8).padStart(4, "0")}); ` +
        `make the private key owner-only: chmod 600 ${file}`,
    );
  }
  return readPem(flag, file, "PRIVATE KEY");
}

/** Builds a secure context once so that a bad pair fails now, naming the flags, not at the first client. */
function checkPair(cert: Buffer, key: Buffer, ca: Buffer | undefined, flags: string): void {
  try {
    tls.createSecureContext({ cert, key, ...(ca === undefined ? {} : { ca }) });
  } catch (error) {
    throw new InvalidArgumentError(`${flags}: ${(error as Error).message}`);
  }
}

/** The member's TLS material, or undefined when no TLS flag was given. */
export function memberTlsFromFlags(flags: MemberTlsFlags): MemberTls | undefined {
  const any = flags.tlsCert !== undefined || flags.tlsKey !== undefined || flags.tlsCa !== undefined || flags.tlsClientAuth === true;
  if (!any) return undefined;
  if (flags.tlsCert === undefined || flags.tlsKey === undefined) {
    throw new InvalidArgumentError(
      flags.tlsCert === undefined
        ? "TLS needs the member's certificate: pass --tls-cert F with --tls-key F"
        : "--tls-cert needs the certificate's private key: pass --tls-key F",
    );
  }
  if (flags.tlsClientAuth === true && flags.tlsCa === undefined) {
    throw new InvalidArgumentError("--tls-client-auth needs --tls-ca F: the CA that signs the client certificates to accept");
  }
  const cert = readPem("--tls-cert", flags.tlsCert, "CERTIFICATE");
  const key = readKey("--tls-key", flags.tlsKey);
  const ca = flags.tlsCa === undefined ? undefined : readPem("--tls-ca", flags.tlsCa, "CERTIFICATE");
  checkPair(cert, key, ca, "--tls-cert/--tls-key/--tls-ca");
  return { cert, key, ...(ca === undefined ? {} : { ca }), clientAuth: flags.tlsClientAuth === true };
}

/** The admin client's TLS options, or undefined when no TLS flag was given (`--tls` alone: system CAs). */
export function clientTlsFromFlags(flags: ClientTlsFlags): ClientTlsOptions | undefined {
  const any =
    flags.tls === true || flags.tlsCert !== undefined || flags.tlsKey !== undefined || flags.tlsCa !== undefined || flags.tlsServername !== undefined;
  if (!any) return undefined;
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    throw new InvalidArgumentError(
      flags.tlsCert === undefined ? "--tls-key needs its certificate: pass --tls-cert F" : "--tls-cert needs its private key: pass --tls-key F",
    );
  }
  const out: ClientTlsOptions = {};
  if (flags.tlsCa !== undefined) out.ca = readPem("--tls-ca", flags.tlsCa, "CERTIFICATE");
  if (flags.tlsCert !== undefined && flags.tlsKey !== undefined) {
    out.cert = readPem("--tls-cert", flags.tlsCert, "CERTIFICATE");
    out.key = readKey("--tls-key", flags.tlsKey);
    checkPair(out.cert, out.key, undefined, "--tls-cert/--tls-key");
  }
  if (flags.tlsServername !== undefined) out.servername = flags.tlsServername;
  return out;
}

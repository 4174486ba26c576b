/**
 * Throwaway TLS material for tests, made at run time with the `openssl` command (nothing is committed):
 * a CA, a server certificate for 127.0.0.1 and localhost signed by it, a client certificate signed by it,
 * and a second, unrelated CA with its own client certificate. Every file is written owner-only.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./processes.js";

export interface TestPki {
  dir: string;
  /** PEM file paths. */
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherCaCert: string;
  /** A client certificate signed by the other CA (refused by a member trusting only `caCert`). */
  otherClientCert: string;
  otherClientKey: string;
  read(file: string): Buffer;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"], timeout: 30_000 });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`,
    "-out", `${name}.crt`, "-days", "2", "-subj", `/CN=keylock test ${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
}

function makeLeaf(dir: string, ca: string, name: string, ext: string): void {
  openssl(dir, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`,
    "-out", `${name}.csr`, "-subj", `/CN=keylock test ${name}`]);
  writeFileSync(join(dir, `${name}.ext`), ext, { mode: 0o600 });
  openssl(dir, ["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.crt`, "-CAkey", `${ca}.key`, "-CAcreateserial",
    "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`]);
}

export function makeTestPki(): TestPki {
  const tmp = tempDir("pki");
  const dir = tmp.path;
  chmodSync(dir, 0o700);
  makeCa(dir, "ca");
  makeCa(dir, "other-ca");
  makeLeaf(dir, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n");
  makeLeaf(dir, "ca", "client", "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n");
  makeLeaf(dir, "other-ca", "other-client", "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n");
  for (const file of readdirSync(dir)) chmodSync(join(dir, file), 0o600);
  const at = (file: string): string => join(dir, file);
  return {
    dir,
    caCert: at("ca.crt"),
    serverCert: at("server.crt"),
    serverKey: at("server.key"),
    clientCert: at("client.crt"),
    clientKey: at("client.key"),
    otherCaCert: at("other-ca.crt"),
    otherClientCert: at("other-client.crt"),
    otherClientKey: at("other-client.key"),
    read: (file) => readFileSync(file),
    remove: () => tmp.remove(),
  };
}

// npm test: type-check, lint, then every test file under node --test (Node 20 does not glob .ts).
// Usage: npm test [-- file.test.ts ...]   (with files: only those, no type-check or lint)
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function run(command, args) {
  console.log(`\n$ ${command} ${args.join(" ")}`);
  const result = spawnSync(command, args, { stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

function testFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...testFiles(path));
    else if (name.endsWith(".test.ts")) out.push(path);
  }
  return out;
}

const only = process.argv.slice(2);
if (only.length === 0) {
  run("node_modules/.bin/tsc", ["--noEmit"]);
  run("node_modules/.bin/eslint", ["."]);
}
const files = only.length > 0 ? only : testFiles("test");
run(process.execPath, ["--import", "tsx", "--test", "--test-reporter=spec", ...files]);

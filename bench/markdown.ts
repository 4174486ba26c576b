/**
 * Prints a bench record (the JSON `npm run bench` writes) as the Markdown table of README "Performance":
 *   npx tsx bench/markdown.ts bench/last-run.json
 */
import { readFileSync } from "node:fs";
import { fmtRatio, type BenchRecord } from "./run.js";

const record = JSON.parse(readFileSync(process.argv[2] ?? new URL("last-run.json", import.meta.url).pathname, "utf8")) as BenchRecord;
const cell = (text: string): string => text.replace(/\|/g, "\\|");
console.log(`Run of ${record.date.slice(0, 16).replace("T", " ")} UTC, ${record.machine.cores} cores (${record.machine.cpu}), node ${record.machine.node}${record.quick ? ", --quick" : ""}.\n`);
console.log("| workload | system | measured | ratio | target | met |");
console.log("|---|---|---|---|---|---|");
for (const row of record.rows) {
  row.cells.forEach((c, i) => {
    const measured = c.notMeasured === undefined ? c.value : `not measured: ${c.notMeasured}`;
    const ratio = i === 0 ? row.ratios.map((r) => `${r.name} ${fmtRatio(r)}×`).join("; ") : "";
    const target = i === 0 ? row.ratios.map((r) => r.target).join("; ") : "";
    const met = i === 0 ? row.ratios.map((r) => (r.target.startsWith("-") ? "—" : r.met ? "yes" : "no")).join("; ") : "";
    console.log(`| ${i === 0 ? cell(row.workload) : ""} | ${cell(c.system)} | ${cell(measured)} | ${cell(ratio)} | ${cell(target)} | ${met} |`);
  });
}

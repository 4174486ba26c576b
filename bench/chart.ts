/**
 * An SVG chart of the bench's multi-client rows (8 clients on one key, 64 clients on fresh keys): one
 * horizontal bar per system for throughput, with its p99 latency written beside it. Plain SVG text, no
 * dependencies; null when the record holds none of those rows.
 */
import type { BenchRecord } from "./run.js";

const COLORS: Record<string, string> = { keylock: "#2b6cb0", "echo floor": "#718096", "protocol floor (bare Node relay)": "#a0aec0" };
const PEER_COLOR = "#c05621";

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function multiClientSvg(record: BenchRecord): string | null {
  const rows = record.rows.filter((r) => r.id === "hot" || r.id === "fresh");
  if (rows.length === 0) return null;
  const width = 760;
  const label = 190;
  const barMax = 380;
  const barHeight = 18;
  let y = 44;
  const parts: string[] = [];
  for (const row of rows) {
    parts.push(`<text x="10" y="${y}" font-weight="bold">${escape(row.workload)}</text>`);
    y += 10;
    const measured = row.cells.filter((c) => c.rate !== undefined);
    const top = Math.max(...measured.map((c) => c.rate!));
    for (const cell of row.cells) {
      y += barHeight + 6;
      parts.push(`<text x="10" y="${y - 5}">${escape(cell.system)}</text>`);
      if (cell.rate === undefined) {
        parts.push(`<text x="${label}" y="${y - 5}" fill="#a0aec0">not measured</text>`);
        continue;
      }
      const w = Math.max(1, (cell.rate / top) * barMax);
      const color = COLORS[cell.system] ?? PEER_COLOR;
      parts.push(`<rect x="${label}" y="${y - barHeight}" width="${w.toFixed(1)}" height="${barHeight}" fill="${color}"/>`);
      const p99 = cell.p99Us === undefined ? "" : `, p99 ${cell.p99Us >= 1000 ? `${(cell.p99Us / 1000).toFixed(1)} ms` : `${cell.p99Us.toFixed(0)} µs`}`;
      const fair = cell.fairness === undefined ? "" : `, fair ${cell.fairness.toFixed(2)}`;
      parts.push(`<text x="${(label + w + 6).toFixed(1)}" y="${y - 5}">${cell.rate >= 1000 ? `${(cell.rate / 1000).toFixed(1)}k/s` : `${cell.rate.toFixed(0)}/s`}${p99}${fair}</text>`);
    }
    y += 30;
  }
  const title = `keylock bench ${record.date.slice(0, 10)}, ${record.machine.cores} cores, node ${record.machine.node}: acquire+release per second`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="13">${escape(title)}</text>`,
    ...parts,
    `</svg>`,
    "",
  ].join("\n");
}

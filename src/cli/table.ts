/** Plain-text tables for the CLI's human output. */
export function formatTable(headers: string[], rows: (string | number | boolean | null)[][]): string {
  const cells = [headers, ...rows.map((row) => row.map((c) => (c === null ? "-" : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return cells.map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

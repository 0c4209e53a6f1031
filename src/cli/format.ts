// Output formatting of the CLI: aligned tables and the human form of `rmr status`. Pure, so
// what an operator sees is unit-tested.

export type Cell = string | number | boolean | null | undefined;

/** Left-aligned columns, two spaces apart, upper-case headers; numbers right-aligned. */
export function formatTable(columns: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const text = rows.map((r) => columns.map((_, i) => cellText(r[i])));
  const numeric = columns.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || r[i] === null || r[i] === undefined));
  const width = columns.map((c, i) => Math.max(c.length, ...text.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (numeric[i] === true ? c.padStart(width[i] ?? 0) : i === cells.length - 1 ? c : c.padEnd(width[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...text.map(line)].map((l) => `${l}\n`).join('');
}

function cellText(c: Cell): string {
  if (c === null || c === undefined) return '-';
  if (typeof c === 'boolean') return c ? 'yes' : 'no';
  return String(c).replace(/[\r\n\t]+/g, ' ');
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${r}s`;
  return `${r}s`;
}

type J = unknown;
const obj = (v: J): Record<string, J> => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, J>) : {});
const arr = (v: J): J[] => (Array.isArray(v) ? (v as J[]) : []);
const cell = (v: J): Cell => (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || v === null ? v : undefined);

/** `rmr status` for people: the daemon line, its roles, and every pool leg the roles report. */
export function formatStatus(status: unknown): string {
  const s = obj(status);
  const d = obj(s.daemon);
  let out = `daemon ${String(cell(d.name) ?? '?')}  ${String(cell(d.state) ?? '?')}  pid ${String(cell(d.pid) ?? '?')}  up ${formatDuration(Number(d.uptime_seconds ?? 0))}  version ${String(cell(d.version) ?? '?')}\n`;
  out += `control ${String(cell(d.control_socket) ?? '?')}  events ${String(cell(d.last_event_seq) ?? 0)}\n`;
  const roles = arr(s.roles).map(obj);
  if (roles.length === 0) return `${out}\nno roles configured (add storage/client roles under roles: in the daemon config)\n`;
  out += `\n${formatTable(['role', 'state', 'detail'], roles.map((r) => [cell(r.name), cell(r.state), cell(obj(r.status).state)]))}`;
  const legs: Cell[][] = [];
  for (const r of roles) {
    for (const l of arr(obj(r.status).legs).map(obj)) {
      const dirty = typeof l.dirty_chunks === 'number' ? (typeof l.total_chunks === 'number' ? `${l.dirty_chunks}/${l.total_chunks}` : String(l.dirty_chunks)) : null;
      legs.push([cell(l.pool), cell(l.side), cell(l.member_id), cell(l.session), cell(l.state), dirty]);
    }
  }
  if (legs.length > 0) out += `\n${formatTable(['pool', 'side', 'member', 'session', 'state', 'dirty'], legs)}`;
  return out;
}

// The text of a dirty map in the control tree (the reference's map_summary line, §11.2):
// `member <id>: [<up to 50 dirty chunk numbers>[...]] <dirty>/<total> dirty`.

import type { DirtyMap } from '../rmr/protocol/dirty-map.js';

const LISTED = 50;

export function mapSummaryLine(member_id: number, m: DirtyMap<unknown>): string {
  const first: number[] = [];
  for (let c = m.nextDirty(0); c >= 0 && first.length < LISTED; c = m.nextDirty(c + 1)) first.push(c);
  const more = m.dirtyCount > first.length ? '...' : '';
  return `member ${member_id}: [${first.join(' ')}${more}] ${m.dirtyCount}/${m.no_of_chunks} dirty`;
}

/**
 * The reference's map_unsynced (§11.2): per member, the dirty chunks it holds no data for
 * (`member <id>: [<up to 50 chunk numbers>[...]] <n>/<total> unsynced`); members without
 * any are left out, and `(none)` when no member has any.
 */
export function mapUnsyncedText(maps: ReadonlyMap<number, DirtyMap<unknown>>): string {
  const lines: string[] = [];
  for (const [id, m] of [...maps.entries()].sort((a, b) => a[0] - b[0])) {
    if (m.unsyncedCount === 0) continue;
    const first: number[] = [];
    for (const [c, n] of m.unsyncedRuns()) {
      for (let k = c; k < c + n && first.length < LISTED; k++) first.push(k);
      if (first.length >= LISTED) break;
    }
    lines.push(`member ${id}: [${first.join(' ')}${m.unsyncedCount > first.length ? '...' : ''}] ${m.unsyncedCount}/${m.no_of_chunks} unsynced`);
  }
  return lines.length === 0 ? '(none)' : lines.join('\n');
}

/** Every member's line, lowest member first. */
export function mapSummaryText(maps: ReadonlyMap<number, DirtyMap<unknown>>): string {
  return [...maps.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([id, m]) => mapSummaryLine(id, m))
    .join('\n');
}

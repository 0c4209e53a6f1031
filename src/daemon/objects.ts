// The objects a daemon's operator created (pools, stores, sessions, devices), persisted so
// that a restarted daemon with the same configuration resumes its roles: stores are re-added
// (add_store), legs re-assembled, sync pools re-formed, devices re-mapped and re-exported.
// The kernel version keeps nothing of this across a reboot; the admin replays the steps.
//
// The book is the record of what *should* exist, written after each control write that
// succeeded and before the writer is answered. Pure: the file is a port (StateFile).

export type ObjectRecord =
  | { readonly kind: 'server_pool'; readonly pool: string; readonly member_id: number; readonly chunk_size: number }
  | { readonly kind: 'store'; readonly pool: string; readonly device: string; readonly mapped_size: number; readonly store_uuid: string }
  | { readonly kind: 'client_pool'; readonly pool: string; readonly chunk_size: number; readonly sync: boolean; readonly min_replicas: number }
  | { readonly kind: 'session'; readonly pool: string; readonly sessname: string; readonly paths: readonly string[]; readonly sync: boolean }
  | { readonly kind: 'clt'; readonly pool: string }
  | { readonly kind: 'sync_stopped'; readonly pool: string }
  | { readonly kind: 'device'; readonly pool: string; readonly name: string; readonly size_sectors: number; readonly export?: string };

export type ObjectKind = ObjectRecord['kind'];

/** The file behind the book: whole-file reads and atomic, durable replacements. */
export interface StateFile {
  /** The file's text, or null when there is none yet. */
  load(): string | null;
  /** Replaces the file atomically and durably; cb(null) once it is on disk. */
  save(text: string, cb: (err: Error | null) => void): void;
}

const FORMAT = 1;

function keyOf(r: ObjectRecord): string {
  switch (r.kind) {
    case 'session':
      return `session/${r.sync ? 'sync' : 'io'}/${r.pool}/${r.sessname}`;
    case 'client_pool':
      return `client_pool/${r.sync ? 'sync' : 'io'}/${r.pool}`;
    case 'device':
      return `device/${r.name}`;
    default:
      return `${r.kind}/${r.pool}`;
  }
}

const KINDS: readonly ObjectKind[] = ['server_pool', 'store', 'client_pool', 'session', 'clt', 'sync_stopped', 'device'];

/** Checks one record read back from the file (it may have been edited by hand). */
function checkRecord(v: unknown): ObjectRecord | string {
  if (v === null || typeof v !== 'object') return 'not an object';
  const o = v as Record<string, unknown>;
  const str = (k: string): boolean => {
    const x = o[k];
    return typeof x === 'string' && x.length > 0 && x.length <= 4096;
  };
  const int = (k: string): boolean => Number.isSafeInteger(o[k]) && (o[k] as number) >= 0;
  if (!KINDS.includes(o.kind as ObjectKind)) return `unknown kind ${JSON.stringify(o.kind)}`;
  if (!str('pool')) return 'pool missing';
  switch (o.kind as ObjectKind) {
    case 'server_pool':
      return int('member_id') && int('chunk_size') ? (o as unknown as ObjectRecord) : 'member_id/chunk_size missing';
    case 'store':
      return str('device') && int('mapped_size') && str('store_uuid') ? (o as unknown as ObjectRecord) : 'device/mapped_size missing';
    case 'client_pool':
      return int('chunk_size') && typeof o.sync === 'boolean' && int('min_replicas') ? (o as unknown as ObjectRecord) : 'chunk_size/sync/min_replicas missing';
    case 'session':
      return str('sessname') && typeof o.sync === 'boolean' && Array.isArray(o.paths) && o.paths.every((p) => typeof p === 'string') ? (o as unknown as ObjectRecord) : 'sessname/paths/sync missing';
    case 'device':
      return str('name') && int('size_sectors') ? (o as unknown as ObjectRecord) : 'name/size_sectors missing';
    default:
      return o as unknown as ObjectRecord;
  }
}

export class ObjectBook {
  private readonly file: StateFile;
  private readonly records = new Map<string, ObjectRecord>();
  private saving = false;
  private dirty = false;
  private waiters: ((err: Error | null) => void)[] = [];
  private next_waiters: ((err: Error | null) => void)[] = [];

  /** Loads the file; a damaged file is an error (the operator must look), never ignored. */
  constructor(file: StateFile) {
    this.file = file;
    const text = file.load();
    if (text === null) return;
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new Error(`the object file is not JSON (${(e as Error).message}); move it away to start without the objects it held`, { cause: e });
    }
    const d = doc as { format?: unknown; objects?: unknown };
    if (d === null || typeof d !== 'object' || d.format !== FORMAT || !Array.isArray(d.objects)) throw new Error(`the object file has no format ${FORMAT} object list`);
    for (const [i, raw] of (d.objects as unknown[]).entries()) {
      const r = checkRecord(raw);
      if (typeof r === 'string') throw new Error(`the object file's entry ${i}: ${r}`);
      this.records.set(keyOf(r), r);
    }
  }

  list<K extends ObjectKind>(kind: K): Extract<ObjectRecord, { kind: K }>[] {
    return [...this.records.values()].filter((r): r is Extract<ObjectRecord, { kind: K }> => r.kind === kind);
  }

  has(r: ObjectRecord): boolean {
    return this.records.has(keyOf(r));
  }

  /** Adds or replaces a record and persists; resolves once the file holds it. */
  put(r: ObjectRecord): Promise<void> {
    this.records.set(keyOf(r), r);
    return this.persist();
  }

  /** Removes the records `match` selects and persists. */
  remove(match: (r: ObjectRecord) => boolean): Promise<void> {
    let changed = false;
    for (const [k, r] of this.records) {
      if (match(r)) {
        this.records.delete(k);
        changed = true;
      }
    }
    return changed ? this.persist() : Promise.resolve();
  }

  /** One write at a time; changes made during a write share the next one. */
  private persist(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const w = (err: Error | null): void => (err === null ? resolve() : reject(err));
      if (this.saving) {
        this.dirty = true;
        this.next_waiters.push(w);
        return;
      }
      this.waiters.push(w);
      this.write();
    });
  }

  private write(): void {
    this.saving = true;
    const text = `${JSON.stringify({ format: FORMAT, objects: [...this.records.values()] }, null, 1)}\n`;
    this.file.save(text, (err) => {
      const ws = this.waiters;
      this.waiters = [];
      this.saving = false;
      for (const w of ws) w(err);
      if (this.dirty) {
        this.dirty = false;
        this.waiters = this.next_waiters;
        this.next_waiters = [];
        this.write();
      }
    });
  }
}

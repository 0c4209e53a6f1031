// Reading untrusted structured input (a parsed YAML/JSON config) into typed values. Every
// problem is recorded with the path of the field (`pools[0].members[1].member_id: ...`) and
// reading goes on, so one run of `rmr up --check` lists every mistake in a file, not the first.

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: readonly string[]) {
    super(problems.length === 1 ? (problems[0] ?? '') : `${problems[0] ?? ''} (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})`);
  }
}

export type Raw = unknown;
export type RawObject = Readonly<Record<string, unknown>>;

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4, P: 1024 ** 5 };

/** `131072`, `128K`, `128KiB`, `1G`, `64T` (binary units) → bytes; null if not a size. */
export function parseSize(text: string): number | null {
  const m = /^([0-9]+)\s*([KMGTP]?)(i?B)?$/i.exec(text.trim());
  if (m === null) return null;
  const unit = SIZE_UNITS[(m[2] ?? '').toUpperCase()];
  if (unit === undefined) return null;
  const n = Number(m[1]) * unit;
  return Number.isSafeInteger(n) ? n : null;
}

/** Bytes as the shortest exact binary-unit string: 131072 → `128K`, 1000 → `1000`. */
export function formatSize(bytes: number): string {
  for (const u of ['P', 'T', 'G', 'M', 'K']) {
    const f = SIZE_UNITS[u] as number;
    if (bytes >= f && bytes % f === 0) return `${bytes / f}${u}`;
  }
  return String(bytes);
}

export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `'${v.length > 40 ? `${v.slice(0, 40)}...` : v}'`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return typeof v;
}

/** Collects problems; each reader returns undefined for a bad value and records why. */
export class Reader {
  readonly problems: string[] = [];

  fail(at: string, msg: string): undefined {
    this.problems.push(`${at === '' ? '(top level)' : at}: ${msg}`);
    return undefined;
  }

  /** Throws a ConfigError listing every problem recorded, if any. */
  done(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
  }

  /** A mapping whose keys must all be among `known` (typos are the usual config bug). */
  object(at: string, v: Raw, known: readonly string[]): RawObject | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.fail(at, `must be a mapping, got ${describeValue(v)}`);
    const o = v as RawObject;
    for (const k of Object.keys(o)) {
      if (!known.includes(k)) {
        const hint = nearest(k, known);
        this.fail(join(at, k), `unknown setting${hint === undefined ? '' : ` (did you mean ${hint}?)`} (known: ${known.join(', ')})`);
      }
    }
    return o;
  }

  list(at: string, v: Raw, min: number, max: number): readonly unknown[] | undefined {
    if (!Array.isArray(v)) return this.fail(at, `must be a list, got ${describeValue(v)}`);
    if (v.length < min) return this.fail(at, min === 1 ? 'must not be empty' : `needs at least ${min} entries, has ${v.length}`);
    if (v.length > max) return this.fail(at, `has ${v.length} entries, at most ${max} are allowed`);
    return v as readonly unknown[];
  }

  string(at: string, v: Raw, opts: { pattern?: RegExp; hint?: string; max_len?: number } = {}): string | undefined {
    if (typeof v !== 'string') return this.fail(at, `must be a string, got ${describeValue(v)}`);
    if (v === '') return this.fail(at, 'must not be empty');
    const max = opts.max_len ?? 4096;
    if (v.length > max) return this.fail(at, `is longer than ${max} characters`);
    if (opts.pattern !== undefined && !opts.pattern.test(v)) return this.fail(at, `${describeValue(v)} is not ${opts.hint ?? 'valid'}`);
    return v;
  }

  /** Integers come as YAML numbers or, from env and flags, as decimal strings. */
  int(at: string, v: Raw, min: number, max: number): number | undefined {
    let n: number;
    if (typeof v === 'number') n = v;
    else if (typeof v === 'string' && /^-?[0-9]+$/.test(v.trim())) n = Number(v.trim());
    else return this.fail(at, `must be an integer ${min}..${max}, got ${describeValue(v)}`);
    if (!Number.isSafeInteger(n) || n < min || n > max) return this.fail(at, `must be an integer ${min}..${max}, got ${n}`);
    return n;
  }

  size(at: string, v: Raw, min: number, max: number): number | undefined {
    const n = typeof v === 'number' ? v : typeof v === 'string' ? parseSize(v) : null;
    if (n === null || !Number.isSafeInteger(n)) return this.fail(at, `must be a size in bytes (e.g. 131072, 128K, 1G), got ${describeValue(v)}`);
    if (n < min) return this.fail(at, `${formatSize(n)} is below the minimum ${formatSize(min)}`);
    if (n > max) return this.fail(at, `${formatSize(n)} is above the maximum ${formatSize(max)}`);
    return n;
  }

  bool(at: string, v: Raw): boolean | undefined {
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === '1' || v === 'yes') return true;
    if (v === 'false' || v === '0' || v === 'no') return false;
    return this.fail(at, `must be true or false, got ${describeValue(v)}`);
  }

  oneOf<const W extends string>(at: string, v: Raw, values: readonly W[]): W | undefined {
    for (const w of values) if (v === w) return w;
    return this.fail(at, `must be one of ${values.join(', ')}, got ${describeValue(v)}`);
  }

  /** `host:port` or `[v6]:port`; port 1..65535. */
  listen(at: string, v: Raw): ListenAddress | undefined {
    if (typeof v !== 'string') return this.fail(at, `must be host:port, got ${describeValue(v)}`);
    const a = parseListen(v);
    if (a === null) return this.fail(at, `'${v}' is not host:port (IPv6 as [addr]:port, port 1..65535)`);
    return a;
  }
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export function parseListen(text: string): ListenAddress | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/.exec(text);
  if (m === null) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: m[1] ?? m[2] ?? '', port };
}

export function formatListen(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export function join(at: string, key: string): string {
  return at === '' ? key : `${at}.${key}`;
}

/** The known key within edit distance 2 of a typo, if exactly one is that close. */
function nearest(k: string, known: readonly string[]): string | undefined {
  const close = known.filter((c) => editDistance(k, c) <= 2);
  return close.length === 1 ? close[0] : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] as number;
}

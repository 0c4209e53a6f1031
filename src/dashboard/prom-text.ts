// Reading a daemon's /metrics for the dashboard's charts: the samples of the Prometheus text
// format (0.0.4) as name + labels + value, and from two scrapes of a counter or a histogram
// the per-second rate and latency quantiles over the interval between them. Lenient: lines
// it does not understand are skipped (the charts lose a series, the page does not break).

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/y;

export function parseSamples(text: string, wanted?: (name: string) => boolean): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (m === null) continue;
    const name = m[1] as string;
    if (wanted !== undefined && !wanted(name)) continue;
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    LABEL.lastIndex = 0;
    let ok = true;
    while (LABEL.lastIndex < body.length) {
      const at = LABEL.lastIndex;
      const l = LABEL.exec(body);
      if (l === null || LABEL.lastIndex === at) {
        ok = false;
        break;
      }
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const v = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (ok && !Number.isNaN(v)) out.push({ name, labels, value: v });
  }
  return out;
}

/** Label values in the order of `names`, joined: the key of one series. */
export function seriesKey(labels: Readonly<Record<string, string>>, names: readonly string[]): string {
  return names.map((n) => labels[n] ?? '').join('/');
}

/** Sum of `name` per series key (labels `by`), e.g. IOs per device and op. */
export function sumBy(samples: readonly Sample[], name: string, by: readonly string[], filter?: (l: Readonly<Record<string, string>>) => boolean): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) {
    if (s.name !== name || (filter !== undefined && !filter(s.labels))) continue;
    const k = seriesKey(s.labels, by);
    out.set(k, (out.get(k) ?? 0) + s.value);
  }
  return out;
}

/** Per-second increase between two readings of counters; a counter that went down (a restart) has none. */
export function rates(prev: ReadonlyMap<string, number> | undefined, now: ReadonlyMap<string, number>, dt_s: number): Map<string, number | null> {
  const out = new Map<string, number | null>();
  for (const [k, v] of now) {
    const p = prev?.get(k);
    out.set(k, p === undefined || v < p || !(dt_s > 0) ? null : (v - p) / dt_s);
  }
  return out;
}

/** Cumulative bucket counts of a histogram per series key: upper bounds ascending. */
export type Buckets = Map<string, { le: number[]; counts: number[] }>;

export function histogramBuckets(samples: readonly Sample[], name: string, by: readonly string[]): Buckets {
  const acc = new Map<string, Map<number, number>>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    if (Number.isNaN(le)) continue;
    const k = seriesKey(s.labels, by);
    let m = acc.get(k);
    if (m === undefined) acc.set(k, (m = new Map<number, number>()));
    m.set(le, (m.get(le) ?? 0) + s.value);
  }
  const out: Buckets = new Map();
  for (const [k, m] of acc) {
    const le = [...m.keys()].sort((a, b) => a - b);
    out.set(k, { le, counts: le.map((x) => m.get(x) ?? 0) });
  }
  return out;
}

/**
 * The q-quantile of the observations made between two readings of a histogram, by linear
 * interpolation inside the bucket (as Prometheus's histogram_quantile); null without
 * observations, or when the bounds changed or the counts went down (a restart).
 */
export function intervalQuantile(prev: { le: number[]; counts: number[] } | undefined, now: { le: number[]; counts: number[] }, q: number): number | null {
  if (prev === undefined || prev.le.length !== now.le.length || prev.le.some((x, i) => x !== now.le[i])) return null;
  const d = now.counts.map((c, i) => c - (prev.counts[i] ?? 0));
  if (d.some((x) => x < 0)) return null;
  const total = d[d.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < d.length; i++) {
    if ((d[i] as number) >= rank) {
      const hi = now.le[i] as number;
      const lo = i === 0 ? 0 : (now.le[i - 1] as number);
      if (hi === Infinity) return lo;
      const below = i === 0 ? 0 : (d[i - 1] as number);
      const inBucket = (d[i] as number) - below;
      return inBucket <= 0 ? hi : lo + ((hi - lo) * (rank - below)) / inBucket;
    }
  }
  return null;
}

// Metrics: counters, gauges and histograms with labels, exposed in the Prometheus text
// format 0.0.4 (GET /metrics). Names follow Prometheus conventions: `rmr_` prefix, counters
// end in `_total`, units last (`_bytes`, `_seconds`). Label sets are bounded per metric: a
// role that leaks label values (a pool name per request) loses series, not memory, and the
// loss is itself counted. Pure: no IO; values that are cheaper to read than to track (dirty
// chunks per member) come from collect functions called at scrape time.

export type Labels = Readonly<Record<string, string>>;

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const DEFAULT_SERIES_MAX = 10_000;
/** Seconds, for request latencies from 100 µs to 10 s. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export type MetricType = 'counter' | 'gauge' | 'histogram';

interface Series {
  readonly values: readonly string[];
}
interface ScalarSeries extends Series {
  value: number;
}
interface HistSeries extends Series {
  readonly counts: number[];
  sum: number;
  count: number;
}

abstract class Metric<S extends Series> {
  protected readonly series = new Map<string, S>();
  constructor(
    readonly registry: MetricsRegistry,
    readonly name: string,
    readonly help: string,
    readonly label_names: readonly string[],
  ) {}
  abstract readonly type: MetricType;
  protected abstract create(values: string[]): S;

  /** The series for `labels`, created on first use; undefined if the metric is full. */
  protected at(labels: Labels | undefined): S | undefined {
    const values = this.labelValues(labels);
    const key = values.join('\u0000');
    let s = this.series.get(key);
    if (s === undefined) {
      if (this.series.size >= this.registry.series_max) {
        this.registry.series_dropped_total++;
        return undefined;
      }
      s = this.create(values);
      this.series.set(key, s);
    }
    return s;
  }

  private labelValues(labels: Labels | undefined): string[] {
    const given = labels === undefined ? [] : Object.keys(labels);
    if (given.length !== this.label_names.length || !this.label_names.every((n) => labels !== undefined && Object.hasOwn(labels, n))) {
      throw new Error(`metric ${this.name} takes labels {${this.label_names.join(',')}}, got {${given.join(',')}}`);
    }
    return this.label_names.map((n) => (labels as Labels)[n] as string);
  }

  /**
   * The series for `labels` resolved once, for per-IO callers: `get()` costs one map lookup
   * by the prepared key (to notice a `remove`), where `at(labels)` checks and joins the
   * labels on every call. Created on first use, as by `at`; undefined while the metric is full.
   */
  protected handle(labels: Labels | undefined): () => S | undefined {
    const key = this.labelValues(labels).join('\u0000');
    let s: S | undefined;
    return () => {
      if (s === undefined || this.series.get(key) !== s) s = this.at(labels);
      return s;
    };
  }

  /** Forget one label set (a pool left) or all. */
  remove(labels?: Labels): void {
    if (labels === undefined) this.series.clear();
    else this.series.delete(this.labelValues(labels).join('\u0000'));
  }

  abstract expose(out: string[]): void;

  protected header(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`);
    out.push(`# TYPE ${this.name} ${this.type}`);
  }

  protected sortedSeries(): S[] {
    return [...this.series.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([, s]) => s);
  }
}

/** A metric with one number per series (counter, gauge), optionally read at scrape time. */
abstract class ScalarMetric extends Metric<ScalarSeries> {
  private readonly collect: (() => Iterable<readonly [Labels, number]>) | undefined;
  constructor(registry: MetricsRegistry, name: string, help: string, label_names: readonly string[], collect?: () => Iterable<readonly [Labels, number]>) {
    super(registry, name, help, label_names);
    this.collect = collect;
  }
  protected create(values: string[]): ScalarSeries {
    return { values, value: 0 };
  }
  protected add(labels: Labels | undefined, n: number): void {
    const s = this.at(labels);
    if (s !== undefined) s.value += n;
  }
  protected put(labels: Labels | undefined, v: number): void {
    const s = this.at(labels);
    if (s !== undefined) s.value = v;
  }
  get(labels?: Labels): number {
    return this.at(labels)?.value ?? 0;
  }
  expose(out: string[]): void {
    if (this.collect !== undefined) {
      this.remove();
      for (const [labels, v] of this.collect()) this.put(labels, v);
    }
    this.header(out);
    for (const s of this.sortedSeries()) out.push(sample(this.name, this.label_names, s.values, s.value));
  }
}

/** One series of a counter, for callers that count on every IO. */
export interface CounterSeries {
  inc(n?: number): void;
}

export class Counter extends ScalarMetric {
  readonly type = 'counter';
  inc(labels?: Labels, n = 1): void {
    if (!(n >= 0)) throw new Error(`counter ${this.name} cannot go down (inc by ${n})`);
    this.add(labels, n);
  }
  /** The series of `labels`, resolved once (labels checked now, the series made on first use). */
  series_of(labels?: Labels): CounterSeries {
    const get = this.handle(labels);
    return {
      inc: (n = 1): void => {
        if (!(n >= 0)) throw new Error(`counter ${this.name} cannot go down (inc by ${n})`);
        const s = get();
        if (s !== undefined) s.value += n;
      },
    };
  }
}

export class Gauge extends ScalarMetric {
  readonly type = 'gauge';
  set(labels: Labels | undefined, v: number): void {
    this.put(labels, v);
  }
  inc(labels?: Labels, n = 1): void {
    this.add(labels, n);
  }
  dec(labels?: Labels, n = 1): void {
    this.add(labels, -n);
  }
}

/** One series of a histogram, for callers that observe every IO. */
export interface HistogramSeries {
  observe(v: number): void;
}

export class Histogram extends Metric<HistSeries> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  constructor(registry: MetricsRegistry, name: string, help: string, label_names: readonly string[], buckets: readonly number[]) {
    super(registry, name, help, label_names);
    if (label_names.includes('le')) throw new Error(`histogram ${name}: 'le' is reserved for buckets`);
    if (buckets.length === 0 || buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= (buckets[i - 1] as number)))) {
      throw new Error(`histogram ${name}: buckets must be finite and strictly increasing`);
    }
    this.buckets = [...buckets];
  }
  protected create(values: string[]): HistSeries {
    return { values, counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
  }
  observe(labels: Labels | undefined, v: number): void {
    this.record(this.at(labels), v);
  }
  /** The series of `labels`, resolved once (labels checked now, the series made on first use). */
  series_of(labels?: Labels): HistogramSeries {
    const get = this.handle(labels);
    return { observe: (v: number): void => this.record(get(), v) };
  }
  private record(s: HistSeries | undefined, v: number): void {
    if (s === undefined) return;
    // Per-bucket counts here; exposition makes them cumulative.
    let i = 0;
    while (i < this.buckets.length && v > (this.buckets[i] as number)) i++;
    if (i < this.buckets.length) s.counts[i] = (s.counts[i] as number) + 1;
    s.sum += v;
    s.count++;
  }
  expose(out: string[]): void {
    this.header(out);
    const names = [...this.label_names, 'le'];
    for (const s of this.sortedSeries()) {
      let cum = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cum += s.counts[i] as number;
        out.push(sample(`${this.name}_bucket`, names, [...s.values, formatValue(this.buckets[i] as number)], cum));
      }
      out.push(sample(`${this.name}_bucket`, names, [...s.values, '+Inf'], s.count));
      out.push(sample(`${this.name}_sum`, this.label_names, s.values, s.sum));
      out.push(sample(`${this.name}_count`, this.label_names, s.values, s.count));
    }
  }
}

export class MetricsRegistry {
  private readonly metrics = new Map<string, Counter | Gauge | Histogram>();
  readonly series_max: number;
  series_dropped_total = 0;

  constructor(opts: { series_max?: number } = {}) {
    this.series_max = opts.series_max ?? DEFAULT_SERIES_MAX;
  }

  /** With `collect`, the values are read at scrape time from a count kept elsewhere. */
  counter(name: string, help: string, label_names: readonly string[] = [], collect?: () => Iterable<readonly [Labels, number]>): Counter {
    if (!name.endsWith('_total')) throw new Error(`counter ${name}: counter names end in _total`);
    return this.add(new Counter(this, name, help, this.checkLabels(name, label_names), collect));
  }

  gauge(name: string, help: string, label_names: readonly string[] = [], collect?: () => Iterable<readonly [Labels, number]>): Gauge {
    return this.add(new Gauge(this, name, help, this.checkLabels(name, label_names), collect));
  }

  histogram(name: string, help: string, label_names: readonly string[] = [], buckets: readonly number[] = LATENCY_BUCKETS_SECONDS): Histogram {
    if (/_(total|bucket|sum|count)$/.test(name)) throw new Error(`histogram ${name}: the name must not end in a suffix the exposition adds`);
    return this.add(new Histogram(this, name, help, this.checkLabels(name, label_names), buckets));
  }

  unregister(name: string): boolean {
    return this.metrics.delete(name);
  }

  /** The whole registry in the text format (0.0.4), metrics sorted by name. */
  expose(): string {
    const out: string[] = [];
    const names = [...this.metrics.keys()].sort();
    for (const n of names) this.metrics.get(n)?.expose(out);
    out.push('# HELP rmr_metrics_series_dropped_total Label sets not recorded because a metric reached its series limit.');
    out.push('# TYPE rmr_metrics_series_dropped_total counter');
    out.push(`rmr_metrics_series_dropped_total ${this.series_dropped_total}`);
    return `${out.join('\n')}\n`;
  }

  private add<M extends Counter | Gauge | Histogram>(m: M): M {
    if (!NAME_RE.test(m.name)) throw new Error(`metric name '${m.name}' is not a valid Prometheus name`);
    if (!m.name.startsWith('rmr_')) throw new Error(`metric name '${m.name}' must start with rmr_`);
    if (this.metrics.has(m.name) || m.name === 'rmr_metrics_series_dropped_total') throw new Error(`metric ${m.name} is already registered`);
    this.metrics.set(m.name, m);
    return m;
  }

  private checkLabels(name: string, label_names: readonly string[]): readonly string[] {
    const seen = new Set<string>();
    for (const l of label_names) {
      if (!LABEL_RE.test(l) || l.startsWith('__')) throw new Error(`metric ${name}: '${l}' is not a valid label name`);
      if (seen.has(l)) throw new Error(`metric ${name}: label '${l}' given twice`);
      seen.add(l);
    }
    return [...label_names];
  }
}

/** HELP text: backslash and newline escaped. */
export function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** Label values: backslash, double quote and newline escaped. */
export function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function sample(name: string, label_names: readonly string[], values: readonly string[], v: number): string {
  if (label_names.length === 0) return `${name} ${formatValue(v)}`;
  const pairs = label_names.map((n, i) => `${n}="${escapeLabelValue(values[i] ?? '')}"`);
  return `${name}{${pairs.join(',')}} ${formatValue(v)}`;
}

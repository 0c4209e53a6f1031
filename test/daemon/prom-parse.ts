// A strict parser of the Prometheus text format 0.0.4, for tests: it rejects anything a
// Prometheus scraper would, so a test that parses our exposition back proves it is valid.

export interface PromSample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

export interface PromFamily {
  readonly name: string;
  help: string;
  type: string;
  readonly samples: PromSample[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';

export function parseProm(text: string): Map<string, PromFamily> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, PromFamily>();
  const lines = text.slice(0, -1).split('\n');
  let current: PromFamily | undefined;
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}: ${line}`;
    if (line.startsWith('# HELP ')) {
      const m = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line);
      if (m === null) throw new Error(`bad HELP ${where}`);
      const name = m[1] as string;
      if (families.has(name)) throw new Error(`family ${name} appears twice (${where})`);
      current = { name, help: unescapeHelp(m[2] as string, where), type: '', samples: [] };
      families.set(name, current);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const m = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
      if (m === null || current === undefined || current.name !== m[1] || current.samples.length > 0) throw new Error(`bad TYPE ${where}`);
      current.type = m[2] as string;
      continue;
    }
    if (line.startsWith('#') || line === '') throw new Error(`unexpected ${where}`);
    const m = new RegExp(`^(${NAME})(\\{(.*)\\})? (\\S+)$`).exec(line);
    if (m === null) throw new Error(`bad sample ${where}`);
    const name = m[1] as string;
    if (current === undefined) throw new Error(`sample before any HELP ${where}`);
    const suffixes = current.type === 'histogram' ? ['_bucket', '_sum', '_count'] : [''];
    if (!suffixes.some((s) => name === current?.name + s)) throw new Error(`sample ${name} outside its family ${current.name} (${where})`);
    current.samples.push({ name, labels: parseLabels(m[3] ?? '', where), value: parseValue(m[4] as string, where) });
  }
  return families;
}

function unescapeHelp(s: string, where: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new Error(`bad escape \\${c} in HELP ${where}`);
  });
}

function parseLabels(s: string, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (m === null) throw new Error(`bad label at ${i} in ${where}`);
    const key = m[1] as string;
    i += m[0].length;
    let v = '';
    for (;;) {
      const c = s[i];
      if (c === undefined) throw new Error(`unterminated label value in ${where}`);
      i++;
      if (c === '"') break;
      if (c === '\n') throw new Error(`raw newline in label value in ${where}`);
      if (c === '\\') {
        const e = s[i++];
        if (e === '\\') v += '\\';
        else if (e === '"') v += '"';
        else if (e === 'n') v += '\n';
        else throw new Error(`bad escape in label value in ${where}`);
      } else v += c;
    }
    if (Object.hasOwn(out, key)) throw new Error(`label ${key} twice in ${where}`);
    out[key] = v;
    if (i < s.length) {
      if (s[i] !== ',') throw new Error(`expected , after label in ${where}`);
      i++;
    }
  }
  return out;
}

function parseValue(s: string, where: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  if (!/^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/.test(s)) throw new Error(`bad value '${s}' in ${where}`);
  return Number(s);
}

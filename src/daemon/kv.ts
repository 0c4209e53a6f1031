// Parser of the reference's write format (rmr-reference-design.md §11): space-separated
// `key=value` tokens, unknown tokens are errors. A spec names each key, its type and bounds;
// the parser returns typed values or throws a ControlError(EINVAL) whose message names the
// token at fault, so `rmr ctl write` can tell the operator exactly what to fix.

import { ControlError } from './control-error.js';

export type KvField =
  | { readonly type: 'string'; readonly required?: boolean; readonly max_len?: number; readonly pattern?: RegExp; readonly pattern_hint?: string }
  /** A key that may be given up to `repeat` times (add_sess's `path=`); always an array. */
  | { readonly type: 'list'; readonly required?: boolean; readonly repeat: number; readonly max_len?: number }
  | { readonly type: 'int'; readonly required?: boolean; readonly min?: number; readonly max?: number }
  /** The reference's booleans: y|n|1|0. */
  | { readonly type: 'bool'; readonly required?: boolean }
  | { readonly type: 'enum'; readonly required?: boolean; readonly values: readonly string[] };

export type KvSpec = Readonly<Record<string, KvField>>;

type ValueOf<F> = F extends { type: 'int' }
  ? number
  : F extends { type: 'bool' }
    ? boolean
    : F extends { type: 'enum'; values: readonly (infer V)[] }
      ? V
      : F extends { type: 'list' }
        ? string[]
        : string;

/** Present in the result: required keys, and lists (empty when not given). */
type Present<F> = F extends { required: true } ? true : F extends { type: 'list' } ? true : false;

export type KvValues<S extends KvSpec> = {
  -readonly [K in keyof S as Present<S[K]> extends true ? K : never]: ValueOf<S[K]>;
} & {
  -readonly [K in keyof S as Present<S[K]> extends true ? never : K]?: ValueOf<S[K]>;
};

/** Longest value accepted (sysfs writes are one page). */
export const KV_MAX_INPUT = 4096;
const DEFAULT_MAX_LEN = 255;
const KEY_RE = /^[a-z][a-z0-9_]*$/;

function invalid(msg: string): never {
  throw new ControlError('EINVAL', msg);
}

/** Strict decimal integer within bounds; `what` names the field in the message. */
export function parseInteger(what: string, text: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^-?[0-9]+$/.test(text)) invalid(`${what}: '${text}' is not an integer`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) invalid(`${what}: '${text}' is too large`);
  if (n < min) invalid(`${what}: ${n} is below the minimum ${min}`);
  if (n > max) invalid(`${what}: ${n} is above the maximum ${max}`);
  return n;
}

function describe(name: string, f: KvField): string {
  switch (f.type) {
    case 'int':
      return `${name}=<${f.min ?? 0}..${f.max ?? 'n'}>`;
    case 'bool':
      return `${name}=y|n|1|0`;
    case 'enum':
      return `${name}=${f.values.join('|')}`;
    case 'list':
      return `${name}=<value> (up to ${f.repeat}x)`;
    case 'string':
      return `${name}=<${f.pattern_hint ?? 'text'}>`;
  }
}

/** One-line usage of a spec: `poolname=<text> [chunk_size=<4096..n>]`. */
export function kvUsage(spec: KvSpec): string {
  return Object.entries(spec)
    .map(([k, f]) => (f.required === true ? describe(k, f) : `[${describe(k, f)}]`))
    .join(' ');
}

/** Parses `text` against `spec`; throws ControlError(EINVAL) naming the first problem. */
export function parseKv<S extends KvSpec>(spec: S, text: string): KvValues<S> {
  if (text.length > KV_MAX_INPUT) invalid(`input is ${text.length} bytes, at most ${KV_MAX_INPUT} are accepted`);
  const known = Object.keys(spec);
  const out: Record<string, string | number | boolean | string[]> = {};
  const seen = new Set<string>();
  for (const token of text.split(/[ \t\r\n]+/)) {
    if (token === '') continue;
    const eq = token.indexOf('=');
    if (eq <= 0) invalid(`'${token}' is not a key=value token (expected: ${kvUsage(spec)})`);
    const key = token.slice(0, eq);
    const value = token.slice(eq + 1);
    const f = Object.hasOwn(spec, key) ? spec[key] : undefined;
    if (f === undefined || !KEY_RE.test(key)) invalid(`unknown key '${key}' (known keys: ${known.join(', ')})`);
    if (value === '') invalid(`${key}: empty value`);
    if (f.type === 'list') {
      const list = (out[key] as string[] | undefined) ?? [];
      if (list.length >= f.repeat) invalid(`${key}: given more than ${f.repeat} times`);
      if (value.length > (f.max_len ?? DEFAULT_MAX_LEN)) invalid(`${key}: value is longer than ${f.max_len ?? DEFAULT_MAX_LEN} characters`);
      list.push(value);
      out[key] = list;
      seen.add(key);
      continue;
    }
    if (seen.has(key)) invalid(`duplicate key '${key}'`);
    seen.add(key);
    out[key] = parseField(key, f, value);
  }
  for (const [key, f] of Object.entries(spec)) {
    if (f.required === true && !seen.has(key)) invalid(`missing required key '${key}' (expected: ${kvUsage(spec)})`);
    if (f.type === 'list' && out[key] === undefined) out[key] = [];
  }
  return out as KvValues<S>;
}

function parseField(key: string, f: Exclude<KvField, { type: 'list' }>, value: string): string | number | boolean {
  switch (f.type) {
    case 'int':
      return parseInteger(key, value, f.min ?? 0, f.max ?? Number.MAX_SAFE_INTEGER);
    case 'bool':
      if (value === 'y' || value === '1') return true;
      if (value === 'n' || value === '0') return false;
      return invalid(`${key}: '${value}' is not one of y, n, 1, 0`);
    case 'enum':
      if (!f.values.includes(value)) invalid(`${key}: '${value}' is not one of ${f.values.join(', ')}`);
      return value;
    case 'string': {
      const max = f.max_len ?? DEFAULT_MAX_LEN;
      if (value.length > max) invalid(`${key}: value is longer than ${max} characters`);
      if (f.pattern !== undefined && !f.pattern.test(value)) invalid(`${key}: '${value}' is not a valid ${f.pattern_hint ?? 'value'}`);
      return value;
    }
  }
}

/** Writes that take one word (`1`, `start`, a pool name): trims, checks it is one of `allowed`. */
export function parseWord<const W extends string>(text: string, allowed: readonly W[]): W {
  const w = text.trim();
  for (const a of allowed) if (a === w) return a;
  return invalid(`'${w}' is not accepted here (expected: ${allowed.join(' or ')})`);
}

/** Writes of a fixed number of integers (`<a> <b> <member_id>`); `names` name them in messages. */
export function parseIntegers(text: string, names: readonly string[], min = 0, max = Number.MAX_SAFE_INTEGER): number[] {
  const words = text.trim() === '' ? [] : text.trim().split(/[ \t\r\n]+/);
  if (words.length !== names.length) invalid(`expected ${names.length} integers (${names.map((n) => `<${n}>`).join(' ')}), got ${words.length}`);
  return words.map((w, i) => parseInteger(names[i] ?? `#${i}`, w, min, max));
}

/** `key=value` pairs for read-back text, in the given order. */
export function formatKv(fields: Readonly<Record<string, string | number | boolean>>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === 'boolean' ? (v ? 1 : 0) : v}`)
    .join(' ');
}

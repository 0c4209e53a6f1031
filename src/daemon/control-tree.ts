// The control tree: the daemon's sysfs. Every admin file of the reference (§11 there) lives
// at the same path (`rmr-client/pools/<pool>/sessions/<sess>/state`), reads back the same
// text and takes the same `key=value` writes. Directories are static (a fixed set of
// children) or dynamic (children produced on each lookup, e.g. one per pool); files carry
// read and/or write handlers, sync or async, and optionally a JSON view beside the text.
// Pure: no IO here, the control API (control-api.ts) serves it over HTTP.

import type { Clock } from '../util/ports.js';
import { ControlError, toControlError } from './control-error.js';
import { KV_MAX_INPUT, parseKv, kvUsage, type KvSpec, type KvValues } from './kv.js';

export type Awaitable<T> = T | Promise<T>;
export type JsonValue = string | number | boolean | null | readonly JsonValue[] | { readonly [k: string]: JsonValue };

export interface HandlerContext {
  /** The path the request named (links already followed). */
  readonly path: string;
}

export interface FileNode {
  readonly kind: 'file';
  readonly read?: (ctx: HandlerContext) => Awaitable<string>;
  /** Returns optional text for the writer (e.g. the name of a mapped device). */
  readonly write?: (value: string, ctx: HandlerContext) => Awaitable<string | undefined | void>;
  /** JSON view; without it the JSON view of a readable file is `{ value: <text> }`. */
  readonly json?: (ctx: HandlerContext) => Awaitable<JsonValue>;
  /** One line for `ls` and for errors: what the file is and what it takes. */
  readonly help?: string;
}

export interface DirNode {
  readonly kind: 'dir';
  list(): Awaitable<readonly string[]>;
  get(name: string): Awaitable<TreeNode | undefined>;
  readonly help?: string;
}

/** A symlink like the reference's `clt_sess`: target is an absolute tree path. */
export interface LinkNode {
  readonly kind: 'link';
  readonly target: string;
}

export type TreeNode = FileNode | DirNode | LinkNode;

export interface DirEntry {
  readonly name: string;
  readonly kind: 'file' | 'dir' | 'link';
  readonly readable: boolean;
  readonly writable: boolean;
  readonly target?: string;
  readonly help?: string;
}

// ---- node builders ----

export function file(n: Omit<FileNode, 'kind'>): FileNode {
  return { kind: 'file', ...n };
}

/** A read-only file from a text function. */
export function roFile(read: (ctx: HandlerContext) => Awaitable<string>, help?: string): FileNode {
  return help === undefined ? { kind: 'file', read } : { kind: 'file', read, help };
}

/** A write-only file taking `key=value` tokens per `spec`; the handler gets typed values. */
export function kvFile<S extends KvSpec>(
  spec: S,
  write: (v: KvValues<S>, ctx: HandlerContext) => Awaitable<string | undefined | void>,
  help?: string,
): FileNode {
  return {
    kind: 'file',
    write: (value, ctx) => write(parseKv(spec, value), ctx),
    help: help === undefined ? kvUsage(spec) : `${help}: ${kvUsage(spec)}`,
  };
}

/** A directory with a fixed set of children. */
export function dir(children: Readonly<Record<string, TreeNode>>, help?: string): DirNode {
  const names = Object.keys(children).sort();
  const node: DirNode = {
    kind: 'dir',
    list: () => names,
    get: (name) => (Object.hasOwn(children, name) ? children[name] : undefined),
  };
  return help === undefined ? node : { ...node, help };
}

/** A directory whose children are produced on each lookup (one per pool, session, device). */
export function dynamicDir(
  list: () => Awaitable<readonly string[]>,
  make: (name: string) => Awaitable<TreeNode | undefined>,
  help?: string,
): DirNode {
  const node: DirNode = { kind: 'dir', list, get: make };
  return help === undefined ? node : { ...node, help };
}

export function link(target: string): LinkNode {
  return { kind: 'link', target };
}

/** Adapts a callback-style handler (`done(err, value)`) to the promise the tree awaits. */
export function fromCallback<T>(fn: (done: (err: Error | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => (err !== null ? reject(err) : resolve(value as T)));
  });
}

/** A directory that roles mount subtrees into (the root and its intermediate directories). */
export class MountDir implements DirNode {
  readonly kind = 'dir';
  private readonly children = new Map<string, TreeNode>();
  list(): readonly string[] {
    return [...this.children.keys()].sort();
  }
  get(name: string): TreeNode | undefined {
    return this.children.get(name);
  }
  set(name: string, node: TreeNode): void {
    this.children.set(name, node);
  }
  delete(name: string): boolean {
    return this.children.delete(name);
  }
}

// ---- paths ----

/** One path component: what sysfs names of pools, sessions and devices may contain. */
const SEGMENT_RE = /^[A-Za-z0-9_.@:+,=-]+$/;
export const PATH_MAX = 1024;
const SEGMENT_MAX = 255;
const LINK_DEPTH_MAX = 8;

/** Splits a tree path into components; throws EINVAL for anything that could escape or confuse. */
export function splitPath(path: string): string[] {
  if (path.length > PATH_MAX) throw new ControlError('EINVAL', `path is longer than ${PATH_MAX} characters`);
  const parts: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '') continue; // leading, trailing and doubled slashes
    if (seg === '.' || seg === '..') throw new ControlError('EINVAL', `path component '${seg}' is not allowed`);
    if (seg.length > SEGMENT_MAX) throw new ControlError('EINVAL', `path component longer than ${SEGMENT_MAX} characters`);
    if (!SEGMENT_RE.test(seg)) throw new ControlError('EINVAL', `path component '${printable(seg)}' has characters outside [A-Za-z0-9_.@:+,=-]`);
    parts.push(seg);
  }
  return parts;
}

/** For messages: control characters and the like shown escaped, never echoed raw. */
export function printable(s: string): string {
  const short = s.length > 64 ? `${s.slice(0, 64)}...` : s;
  return JSON.stringify(short).slice(1, -1);
}

export interface ControlTreeOptions {
  /** Every handler must settle within this; a stuck pool fails the request with ETIMEDOUT. */
  readonly handler_timeout_ms?: number;
  /** Needed for the handler deadline; without it handlers are not timed. */
  readonly clock?: Clock;
}

/**
 * The tree and its three operations. Reads return text ending in a newline (as sysfs
 * does); writes get the value with surrounding whitespace trimmed (an `echo` adds "\n").
 */
export class ControlTree {
  readonly root = new MountDir();
  private readonly timeout_ms: number;
  private readonly clock: Clock | undefined;

  constructor(opts: ControlTreeOptions = {}) {
    this.timeout_ms = opts.handler_timeout_ms ?? 30_000;
    this.clock = opts.clock;
  }

  /** Places `node` at `path`, creating directories on the way; EEXIST if something is there. */
  mount(path: string, node: TreeNode): void {
    const parts = splitPath(path);
    const last = parts.pop();
    if (last === undefined) throw new ControlError('EINVAL', 'cannot mount at the root');
    let d = this.root;
    for (const p of parts) {
      const next = d.get(p);
      if (next === undefined) {
        const m = new MountDir();
        d.set(p, m);
        d = m;
      } else if (next instanceof MountDir) {
        d = next;
      } else {
        throw new ControlError('EEXIST', `cannot mount ${path}: ${p} is not a mount directory`);
      }
    }
    if (d.get(last) !== undefined) throw new ControlError('EEXIST', `${path} is already mounted`);
    d.set(last, node);
  }

  /** Removes what `mount` placed at `path`; returns false if nothing was there. */
  unmount(path: string): boolean {
    const parts = splitPath(path);
    const last = parts.pop();
    if (last === undefined) return false;
    let d = this.root;
    for (const p of parts) {
      const next = d.get(p);
      if (!(next instanceof MountDir)) return false;
      d = next;
    }
    return d.delete(last);
  }

  async ls(path: string): Promise<DirEntry[]> {
    const { node, canon } = await this.resolve(path);
    if (node.kind !== 'dir') throw new ControlError('ENOTDIR', `${canon} is a file, not a directory`);
    const names = await this.guard(canon, () => node.list());
    const out: DirEntry[] = [];
    for (const name of names) {
      const child = await this.guard(canon, () => node.get(name));
      if (child === undefined) continue; // vanished between list and get (a pool left)
      out.push(entryOf(name, child));
    }
    return out;
  }

  async read(path: string): Promise<string> {
    const { node, canon } = await this.resolve(path);
    const f = fileOrThrow(node, canon);
    if (f.read === undefined) throw new ControlError('EACCES', `${canon} is write-only${f.help === undefined ? '' : ` (${f.help})`}`);
    const read = f.read;
    const text = await this.guard(canon, () => read({ path: canon }));
    return text.endsWith('\n') ? text : `${text}\n`;
  }

  /** The JSON view: the file's own, or `{ value }` of its text; a directory gives its entries. */
  async readJson(path: string): Promise<JsonValue> {
    const { node, canon } = await this.resolve(path);
    if (node.kind === 'dir') return { path: `/${canon}`, entries: (await this.ls(canon)).map(entryJson) };
    const f = fileOrThrow(node, canon);
    if (f.json !== undefined) {
      const json = f.json;
      return this.guard(canon, () => json({ path: canon }));
    }
    if (f.read === undefined) throw new ControlError('EACCES', `${canon} is write-only`);
    const text = await this.read(canon);
    return { value: text.endsWith('\n') ? text.slice(0, -1) : text };
  }

  async write(path: string, value: string): Promise<string> {
    if (value.length > KV_MAX_INPUT) throw new ControlError('E2BIG', `value is ${value.length} bytes, at most ${KV_MAX_INPUT} are accepted`);
    const { node, canon } = await this.resolve(path);
    const f = fileOrThrow(node, canon);
    if (f.write === undefined) throw new ControlError('EACCES', `${canon} is read-only`);
    const write = f.write;
    const trimmed = value.trim();
    const r = await this.guard(canon, () => write(trimmed, { path: canon }));
    return typeof r === 'string' ? r : '';
  }

  /** Walks `path`, following links; returns the node and the canonical path. */
  private async resolve(path: string): Promise<{ node: TreeNode; canon: string }> {
    let parts = splitPath(path);
    let hops = 0;
    for (;;) {
      let node: TreeNode = this.root;
      let i = 0;
      let relinked = false;
      for (; i < parts.length; i++) {
        const name = parts[i] as string;
        if (node.kind !== 'dir') throw new ControlError('ENOTDIR', `${parts.slice(0, i).join('/')} is not a directory`);
        const parent: DirNode = node;
        const canonSoFar = parts.slice(0, i).join('/');
        const child: TreeNode | undefined = await this.guard(canonSoFar, () => parent.get(name));
        if (child === undefined) throw new ControlError('ENOENT', `no such file or directory: ${parts.slice(0, i + 1).join('/')}`);
        if (child.kind === 'link') {
          if (++hops > LINK_DEPTH_MAX) throw new ControlError('ELOOP', `too many links resolving ${path}`);
          parts = [...splitPath(child.target), ...parts.slice(i + 1)];
          relinked = true;
          break;
        }
        node = child;
      }
      if (!relinked) return { node, canon: parts.join('/') };
    }
  }

  /** Runs a handler: its errors become ControlErrors, and it must settle by the deadline. */
  private async guard<T>(path: string, fn: () => Awaitable<T>): Promise<T> {
    let p: Promise<T>;
    try {
      p = Promise.resolve(fn());
    } catch (e) {
      throw toControlError(e);
    }
    const clock = this.clock;
    if (clock === undefined) return p.catch((e: unknown) => Promise.reject(toControlError(e)));
    let timer = 0;
    const timeout = new Promise<never>((_, reject) => {
      timer = clock.setTimer(this.timeout_ms, () =>
        reject(new ControlError('ETIMEDOUT', `${path === '' ? '/' : path}: no answer within ${this.timeout_ms} ms`)),
      );
    });
    try {
      return await Promise.race([p, timeout]);
    } catch (e) {
      throw toControlError(e);
    } finally {
      clock.cancel(timer);
    }
  }
}

function fileOrThrow(node: TreeNode, canon: string): FileNode {
  if (node.kind === 'dir') throw new ControlError('EISDIR', `${canon === '' ? '/' : canon} is a directory (use ls)`);
  if (node.kind === 'link') throw new ControlError('ELOOP', `${canon} is an unresolved link`);
  return node;
}

function entryOf(name: string, n: TreeNode): DirEntry {
  switch (n.kind) {
    case 'dir':
      return { name, kind: 'dir', readable: true, writable: false, ...(n.help === undefined ? {} : { help: n.help }) };
    case 'link':
      return { name, kind: 'link', readable: true, writable: false, target: n.target };
    case 'file':
      return { name, kind: 'file', readable: n.read !== undefined, writable: n.write !== undefined, ...(n.help === undefined ? {} : { help: n.help }) };
  }
}

export function entryJson(e: DirEntry): JsonValue {
  const o: Record<string, JsonValue> = { name: e.name, kind: e.kind, readable: e.readable, writable: e.writable };
  if (e.target !== undefined) o.target = e.target;
  if (e.help !== undefined) o.help = e.help;
  return o;
}

/** `ls` as text: one entry a line, `name/` for directories, `name -> target` for links. */
export function formatLs(entries: readonly DirEntry[]): string {
  return entries
    .map((e) => (e.kind === 'dir' ? `${e.name}/` : e.kind === 'link' ? `${e.name} -> ${e.target ?? '?'}` : e.name))
    .map((l) => `${l}\n`)
    .join('');
}

// The key=value parser of control-tree writes: typed values for good input, and for bad
// input an EINVAL whose message names the token at fault.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKv, parseWord, parseIntegers, formatKv, kvUsage, parseInteger, type KvSpec } from '../../src/daemon/kv.js';
import { ControlError } from '../../src/daemon/control-error.js';

const joinPool = {
  poolname: { type: 'string', required: true, pattern: /^[A-Za-z0-9_.-]+$/, pattern_hint: 'pool name' },
  sync: { type: 'bool' },
  chunk_size: { type: 'int', min: 4096, max: 1 << 26 },
} as const satisfies KvSpec;

const addSess = {
  sessname: { type: 'string', required: true },
  path: { type: 'list', repeat: 3, required: true },
  mode: { type: 'enum', values: ['create', 'assemble'] },
} as const satisfies KvSpec;

function fails(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ControlError, `expected a ControlError, got ${String(e)}`);
    assert.equal(e.code, 'EINVAL');
    if (typeof message === 'string') assert.equal(e.message, message);
    else assert.match(e.message, message);
    return true;
  });
}

test('the reference examples parse into typed values', () => {
  const v = parseKv(joinPool, 'poolname=ionos_pool chunk_size=131072');
  assert.deepEqual(v, { poolname: 'ionos_pool', chunk_size: 131072 });
  const s: string = v.poolname; // typed: required keys are not optional
  assert.equal(s, 'ionos_pool');
  assert.deepEqual(parseKv(joinPool, 'poolname=p sync=y\n'), { poolname: 'p', sync: true });
  assert.deepEqual(parseKv(joinPool, '  sync=0\tpoolname=p  '), { poolname: 'p', sync: false });
  const a = parseKv(addSess, 'sessname=psrv0@stg-rmr0 path=ip:192.168.122.80 path=ip:10.0.0.1 mode=create');
  assert.deepEqual(a, { sessname: 'psrv0@stg-rmr0', path: ['ip:192.168.122.80', 'ip:10.0.0.1'], mode: 'create' });
});

test('a value may contain = (only the first one splits)', () => {
  assert.deepEqual(parseKv({ opt: { type: 'string', required: true } }, 'opt=a=b'), { opt: 'a=b' });
});

test('duplicate, unknown and missing keys are named', () => {
  fails(() => parseKv(joinPool, 'poolname=a poolname=b'), "duplicate key 'poolname'");
  fails(() => parseKv(joinPool, 'poolname=a colour=red'), "unknown key 'colour' (known keys: poolname, sync, chunk_size)");
  fails(() => parseKv(joinPool, 'chunk_size=4096'), /^missing required key 'poolname' \(expected: poolname=<pool name> \[sync=y\|n\|1\|0\] \[chunk_size=<4096\.\.67108864>\]\)$/);
  fails(() => parseKv(joinPool, ''), /^missing required key 'poolname'/);
  fails(() => parseKv(addSess, 'sessname=s'), /^missing required key 'path'/);
  fails(() => parseKv(addSess, 'sessname=s path=a path=b path=c path=d'), 'path: given more than 3 times');
});

test('tokens that are not key=value are rejected', () => {
  fails(() => parseKv(joinPool, 'poolname'), /^'poolname' is not a key=value token/);
  fails(() => parseKv(joinPool, '=x'), /^'=x' is not a key=value token/);
  fails(() => parseKv(joinPool, 'poolname='), 'poolname: empty value');
  fails(() => parseKv(joinPool, 'Poolname=a'), /^unknown key 'Poolname'/);
  fails(() => parseKv(joinPool, '__proto__=a'), /^unknown key '__proto__'/);
  fails(() => parseKv(joinPool, 'constructor=a'), /^unknown key 'constructor'/);
});

test('bad numbers, booleans, enums and patterns say what was wrong', () => {
  fails(() => parseKv(joinPool, 'poolname=p chunk_size=12x'), "chunk_size: '12x' is not an integer");
  fails(() => parseKv(joinPool, 'poolname=p chunk_size=0x1000'), "chunk_size: '0x1000' is not an integer");
  fails(() => parseKv(joinPool, 'poolname=p chunk_size=1.5'), "chunk_size: '1.5' is not an integer");
  fails(() => parseKv(joinPool, 'poolname=p chunk_size=-4096'), 'chunk_size: -4096 is below the minimum 4096');
  fails(() => parseKv(joinPool, 'poolname=p chunk_size=512'), 'chunk_size: 512 is below the minimum 4096');
  fails(() => parseKv(joinPool, 'poolname=p chunk_size=134217728'), 'chunk_size: 134217728 is above the maximum 67108864');
  fails(() => parseKv(joinPool, 'poolname=p chunk_size=99999999999999999999'), "chunk_size: '99999999999999999999' is too large");
  fails(() => parseKv(joinPool, 'poolname=p sync=yes'), "sync: 'yes' is not one of y, n, 1, 0");
  fails(() => parseKv(addSess, 'sessname=s path=a mode=force'), "mode: 'force' is not one of create, assemble");
  fails(() => parseKv(joinPool, 'poolname=a/b'), "poolname: 'a/b' is not a valid pool name");
  fails(() => parseKv(joinPool, `poolname=${'x'.repeat(256)}`), 'poolname: value is longer than 255 characters');
  fails(() => parseKv(joinPool, `poolname=${'x'.repeat(5000)}`), /^input is 5009 bytes, at most 4096 are accepted$/);
});

test('one-word and integer-list writes', () => {
  assert.equal(parseWord(' start\n', ['start', 'stop']), 'start');
  fails(() => parseWord('go', ['start', 'stop']), "'go' is not accepted here (expected: start or stop)");
  assert.deepEqual(parseIntegers('3 7 42\n', ['a', 'b', 'member_id']), [3, 7, 42]);
  fails(() => parseIntegers('3 7', ['a', 'b', 'member_id']), 'expected 3 integers (<a> <b> <member_id>), got 2');
  fails(() => parseIntegers('3 x 1', ['a', 'b', 'member_id']), "b: 'x' is not an integer");
  fails(() => parseInteger('member_id', '256', 1, 255), 'member_id: 256 is above the maximum 255');
});

test('formatKv and kvUsage render what parseKv reads', () => {
  const text = formatKv({ poolname: 'p', sync: true, chunk_size: 131072 });
  assert.equal(text, 'poolname=p sync=1 chunk_size=131072');
  assert.deepEqual(parseKv(joinPool, text), { poolname: 'p', sync: true, chunk_size: 131072 });
  assert.equal(kvUsage(addSess), 'sessname=<text> path=<value> (up to 3x) [mode=create|assemble]');
});

// jhash against Bob Jenkins' published driver values and against a C build of the same
// algorithm compiled here, for random keys of every tail length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { groupId, jhash } from '../../src/util/jhash.js';

test('published lookup3 driver values', () => {
  const four = Buffer.from('Four score and seven years ago');
  assert.equal(jhash(Buffer.alloc(0), 0), 0xdeadbeef);
  assert.equal(jhash(Buffer.alloc(0), 0xdeadbeef), 0xbd5b7dde);
  assert.equal(jhash(four, 0), 0x17770551);
  assert.equal(jhash(four, 1), 0xcd628161);
});

// The C side is the kernel's jhash() as specified by lookup3 (byte-wise, little-endian).
const C_SOURCE = String.raw`
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define rol32(x,k) (((x)<<(k)) | ((x)>>(32-(k))))
static uint32_t jh(const uint8_t *k, uint32_t length, uint32_t initval) {
  uint32_t a, b, c;
  a = b = c = 0xdeadbeef + length + initval;
  while (length > 12) {
    a += k[0] | k[1]<<8 | k[2]<<16 | (uint32_t)k[3]<<24;
    b += k[4] | k[5]<<8 | k[6]<<16 | (uint32_t)k[7]<<24;
    c += k[8] | k[9]<<8 | k[10]<<16 | (uint32_t)k[11]<<24;
    a -= c; a ^= rol32(c, 4); c += b;  b -= a; b ^= rol32(a, 6); a += c;
    c -= b; c ^= rol32(b, 8); b += a;  a -= c; a ^= rol32(c,16); c += b;
    b -= a; b ^= rol32(a,19); a += c;  c -= b; c ^= rol32(b, 4); b += a;
    length -= 12; k += 12;
  }
  switch (length) {
  case 12: c += (uint32_t)k[11]<<24;
  case 11: c += (uint32_t)k[10]<<16;
  case 10: c += (uint32_t)k[9]<<8;
  case 9:  c += k[8];
  case 8:  b += (uint32_t)k[7]<<24;
  case 7:  b += (uint32_t)k[6]<<16;
  case 6:  b += (uint32_t)k[5]<<8;
  case 5:  b += k[4];
  case 4:  a += (uint32_t)k[3]<<24;
  case 3:  a += (uint32_t)k[2]<<16;
  case 2:  a += (uint32_t)k[1]<<8;
  case 1:  a += k[0];
    c ^= b; c -= rol32(b,14); a ^= c; a -= rol32(c,11); b ^= a; b -= rol32(a,25);
    c ^= b; c -= rol32(b,16); a ^= c; a -= rol32(c,4);  b ^= a; b -= rol32(a,14);
    c ^= b; c -= rol32(b,24);
  case 0: break;
  }
  return c;
}
static int hexval(char ch) { return ch <= '9' ? ch - '0' : ch - 'a' + 10; }
int main(void) {
  char line[4096]; uint8_t buf[2048];
  while (fgets(line, sizeof line, stdin)) {
    char *sp = strchr(line, ' '); if (!sp) continue;
    uint32_t initval = (uint32_t)strtoul(line, NULL, 10);
    char *hex = sp + 1; size_t n = 0;
    while (hex[0] && hex[0] != '\n' && hex[1]) { buf[n++] = (uint8_t)(hexval(hex[0]) << 4 | hexval(hex[1])); hex += 2; }
    printf("%u\n", jh(buf, (uint32_t)n, initval));
  }
  return 0;
}
`;

test('agrees with a C build of lookup3 on random keys of every length', (t) => {
  const cc = spawnSync('gcc', ['--version']);
  if (cc.error !== undefined) {
    // No compiler on this machine: say so loudly rather than pass silently.
    t.diagnostic('gcc not found: C cross-check not run');
    assert.fail('gcc is required for the C cross-check (install build-essential)');
  }
  const dir = mkdtempSync(join(tmpdir(), 'jhash-'));
  try {
    writeFileSync(join(dir, 'jh.c'), C_SOURCE);
    const build = spawnSync('gcc', ['-O2', '-w', '-o', join(dir, 'jh'), join(dir, 'jh.c')], { encoding: 'utf8' });
    assert.equal(build.status, 0, build.stderr);
    const cases: { key: Buffer; initval: number }[] = [];
    for (let len = 0; len <= 64; len++) cases.push({ key: randomBytes(len), initval: 0 });
    for (let i = 0; i < 300; i++) cases.push({ key: randomBytes(i % 200), initval: randomBytes(4).readUInt32LE(0) });
    cases.push({ key: Buffer.from('pool1'), initval: 0 });
    const input = cases.map((c) => `${c.initval} ${c.key.toString('hex')}\n`).join('');
    const run = spawnSync(join(dir, 'jh'), { input, encoding: 'utf8' });
    assert.equal(run.status, 0);
    const got = run.stdout.trim().split('\n').map(Number);
    assert.equal(got.length, cases.length);
    cases.forEach((c, i) => assert.equal(jhash(c.key, c.initval), got[i], `key ${c.key.toString('hex')} initval ${c.initval}`));
    assert.equal(groupId('pool1'), got[got.length - 1]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

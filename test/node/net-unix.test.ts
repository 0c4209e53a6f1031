// NodeNet.listenUnix: streams over a Unix socket (the NBD exports' default), stale socket
// files from a killed process are replaced, other files are never removed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeNet } from '../../src/node/net.js';
import type { NetStream } from '../../src/transport/net.js';
import { within } from '../util/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'unix-listen-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('listenUnix: bytes travel both ways, remote names the socket, close removes the file', async () => {
  const path = join(dir, 'a.sock');
  let accepted: NetStream | null = null;
  const got: Buffer[] = [];
  const l = await new NodeNet().listenUnix(path, (s) => {
    accepted = s;
    s.attach({
      onData: (c) => {
        got.push(c);
        s.write([Buffer.from('pong')]);
      },
      onDrain: () => undefined,
      onClose: () => undefined,
    });
  });
  assert.deepEqual(l.address, { host: path, port: 0 });
  const sock = net.connect(path);
  sock.on('error', () => undefined);
  const reply = within('pong', new Promise<string>((resolve) => sock.once('data', (d: Buffer) => resolve(d.toString()))), 3000);
  sock.write('ping');
  try {
    assert.equal(await reply, 'pong');
  } finally {
    sock.destroy();
    await l.close();
  }
  assert.equal(Buffer.concat(got).toString(), 'ping');
  assert.equal((accepted as NetStream | null)?.remote, `unix:${path}`);
  assert.equal(existsSync(path), false);
});

test('listenUnix replaces a stale socket file but refuses to remove a regular file', async () => {
  const path = join(dir, 'stale.sock');
  const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  assert.equal(r.signal, 'SIGKILL');
  assert.ok(existsSync(path), 'the killed process left its socket file');
  const l = await new NodeNet().listenUnix(path, (s) => s.destroy());
  await l.close();

  const file = join(dir, 'regular');
  writeFileSync(file, 'keep me');
  await assert.rejects(new NodeNet().listenUnix(file, (s) => s.destroy()), /EADDRINUSE/);
  assert.ok(existsSync(file));
});

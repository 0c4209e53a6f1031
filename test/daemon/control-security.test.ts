// Access control of the control API on real sockets: the TCP listener answers nothing but
// 401 without the right bearer token (no other way to pass it), and changes nothing; the
// Unix socket is owner-only (0600) from the moment it is bound, whatever the umask, and
// another user cannot connect to it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { TOKEN, controlEnv, httpGet, rawExchange } from '../util/control-env.js';

test('TCP: without the right bearer token every request is 401 and changes nothing', async (t) => {
  const env = await controlEnv();
  t.after(() => env.close());
  const tcp = { port: env.port };
  const denied: Record<string, string>[] = [
    {},
    { authorization: `Bearer ${TOKEN}x` },
    { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
    { authorization: `bearer ${TOKEN}` },
    { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` },
    { authorization: `Bearer  ${TOKEN}` },
    { 'x-rmr-token': TOKEN },
    { cookie: `token=${TOKEN}` },
  ];
  for (const h of denied) {
    const r = await httpGet(tcp, '/v1/status', h);
    assert.equal(r.status, 401, JSON.stringify(h));
    assert.match(r.body, /"code":"EKEYREJECTED"/);
  }
  assert.equal((await httpGet(tcp, `/v1/status?token=${TOKEN}`)).status, 401, 'not in the query');
  for (const path of ['/metrics', '/v1/events?since=0', '/v1/tree/daemon/name', '/nope']) assert.equal((await httpGet(tcp, path)).status, 401, path);
  const put = await rawExchange(tcp, 'PUT /v1/tree/daemon/log_level HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\ndebug', 3000);
  assert.deepEqual(put.statuses, [401]);
  assert.equal((await httpGet({ path: env.sock }, '/v1/tree/daemon/log_level')).body, 'info\n', 'the write did not happen');
  const ok = await httpGet(tcp, '/v1/tree/daemon/name', { authorization: `Bearer ${TOKEN}` });
  assert.deepEqual(ok, { status: 200, body: 'fz\n' });
  assert.equal((await httpGet({ path: env.sock }, '/v1/tree/daemon/name')).status, 200, 'the Unix socket needs no token');
});

test('the Unix socket is 0600 from bind() on, even under umask 0', async (t) => {
  // Watch the mode at the instant of bind: listen() binds synchronously, so a stat right
  // after the call sees what a racing client would.
  const seen: number[] = [];
  // eslint-disable-next-line @typescript-eslint/unbound-method -- saved to be put back, called with apply()
  const listen = net.Server.prototype.listen;
  const patched = function (this: net.Server, ...args: unknown[]): net.Server {
    const r = (listen as (...a: unknown[]) => net.Server).apply(this, args);
    if (typeof args[0] === 'string') seen.push(statSync(args[0]).mode & 0o777);
    return r;
  };
  net.Server.prototype.listen = patched as typeof listen;
  const umask = process.umask(0);
  let env: Awaited<ReturnType<typeof controlEnv>>;
  try {
    env = await controlEnv();
  } finally {
    process.umask(umask);
    net.Server.prototype.listen = listen;
  }
  t.after(() => env.close());
  assert.deepEqual(seen, [0o600], 'mode at bind');
  assert.equal(statSync(env.sock).mode & 0o777, 0o600);
  assert.equal(process.umask(), umask, 'the process umask is back');
  assert.equal((await httpGet({ path: env.sock }, '/v1/status')).status, 200);
});

// Like the namespace scenarios, this one needs root (to run a probe as another user); CI runs
// as root. Without root it is reported as skipped with the reason, never passed.
const as_other_user = process.getuid?.() === 0 ? false : 'connecting as another user needs root (setpriv)';

test('another user cannot connect to the Unix socket, even with its directory open to all', { skip: as_other_user }, async (t) => {
  const env = await controlEnv();
  t.after(() => env.close());
  // The directory is open to everyone: only the socket's own mode keeps others out.
  chmodSync(env.dir, 0o755);
  const probe = `require('net').connect(${JSON.stringify(env.sock)}).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); })`;
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', probe], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'EACCES');
});

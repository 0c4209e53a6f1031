// The real ports of the storage and client roles: sockets (node:net / node:tls), store
// files and block devices, randomness, the cluster secret and TLS material read from the
// configured files, and the object file (written to a temporary file, fsynced, renamed).

import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { NodeNet } from '../node/net.js';
import type { ServerTls, TlsOptions } from '../transport/net.js';
import { NodeRandom } from '../node/ports.js';
import { nodeFileOpener } from '../node/file-backend.js';
import type { DaemonConfig } from './config.js';
import type { RolePorts } from './daemon.js';
import type { StateFile } from './objects.js';
import { StartError } from './start-error.js';
import { CERT_FILES, groupId, parsePskFile } from './nbd-tls.js';

export const SECRET_MIN_BYTES = 16;

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new StartError(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

/** The object file of a state directory: atomic replacement, durable before the callback. */
export function nodeStateFile(path: string): StateFile {
  return {
    load: () => {
      try {
        return readFileSync(path, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
    },
    save: (text, cb) => {
      // Small and rare (operator actions): synchronous IO keeps the order obvious.
      try {
        mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
        const tmp = `${path}.tmp`;
        const fd = openSync(tmp, 'w', 0o600);
        try {
          writeSync(fd, text);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        renameSync(tmp, path);
        const dfd = openSync(dirname(path), 'r');
        try {
          fsyncSync(dfd);
        } finally {
          closeSync(dfd);
        }
        queueMicrotask(() => cb(null));
      } catch (e) {
        queueMicrotask(() => cb(e as Error));
      }
    },
  };
}

/**
 * The NBD server's TLS from nbd.tls_certificates or nbd.tls_psk_file, parsed now so a bad
 * file stops the start with its name, not the first client.
 */
function nbdServerTls(c: DaemonConfig, net: NodeNet): ServerTls | null {
  const n = c.nbd;
  if (n.tls === 'off') return null;
  try {
    if (n.tls_psk_file !== null) {
      const keys = parsePskFile(readFile(n.tls_psk_file, 'nbd.tls_psk_file').toString('utf8'), n.tls_psk_file);
      return net.serverTls({ psk: (id) => keys.get(id) ?? null });
    }
    const d = n.tls_certificates as string;
    const f = (name: string): Buffer => readFile(join(d, name), 'nbd.tls_certificates file');
    return net.serverTls({ cert: f(CERT_FILES.cert), key: f(CERT_FILES.key), ...(n.tls_verify_peer ? { ca: f(CERT_FILES.ca), verifyPeer: true } : {}) });
  } catch (e) {
    if (e instanceof StartError) throw e;
    throw new StartError(`nbd TLS: ${(e as Error).message}`);
  }
}

function nbdSocketGid(c: DaemonConfig): number | undefined {
  const g = c.nbd.socket_group;
  if (g === null) return undefined;
  const gid = groupId(g, /^[0-9]+$/.test(g) ? '' : readFile('/etc/group', 'the group file').toString('utf8'));
  if (gid === null) throw new StartError(`nbd.socket_group: no group ${g} in /etc/group`);
  return gid;
}

export function nodeRolePorts(c: DaemonConfig): RolePorts {
  let secret: Buffer | null = null;
  if (c.secret_file !== null) {
    const raw = readFile(c.secret_file, 'secret_file');
    // A trailing newline (echo > file) is not part of the secret.
    secret = Buffer.from(raw.toString('latin1').replace(/\r?\n$/, ''), 'latin1');
    if (secret.length < SECRET_MIN_BYTES) throw new StartError(`secret_file ${c.secret_file}: the secret must have at least ${SECRET_MIN_BYTES} bytes`);
  }
  let tls: TlsOptions | null = null;
  if (c.data.tls_cert !== null && c.data.tls_key !== null) {
    tls = {
      cert: readFile(c.data.tls_cert, 'data.tls_cert'),
      key: readFile(c.data.tls_key, 'data.tls_key'),
      ...(c.data.tls_ca !== null ? { ca: readFile(c.data.tls_ca, 'data.tls_ca'), requestCert: true } : {}),
    };
  }
  const net = new NodeNet();
  const nbd_tls = nbdServerTls(c, net);
  const gid = nbdSocketGid(c);
  return {
    net,
    listenUnix: (path, on) => {
      mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
      return net.listenUnix(path, on, { mode: c.nbd.socket_mode, ...(gid !== undefined ? { gid } : {}) });
    },
    nbd_tls,
    random: new NodeRandom(),
    open: nodeFileOpener,
    secret,
    tls,
    objects: nodeStateFile(join(c.state_dir, 'objects.json')),
  };
}

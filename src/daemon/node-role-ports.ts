// The real ports of the storage and client roles: sockets (node:net / node:tls), store
// files and block devices, randomness, the cluster secret and TLS material read from the
// configured files, and the object file (written to a temporary file, fsynced, renamed).

import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { NodeNet } from '../transport/node-net.js';
import type { TlsOptions } from '../transport/net.js';
import { NodeRandom } from '../util/node-ports.js';
import { nodeFileOpener } from '../brmr/server/node-file-backend.js';
import type { DaemonConfig } from './config.js';
import type { RolePorts } from './daemon.js';
import type { StateFile } from './objects.js';
import { StartError } from './start-error.js';

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
  return {
    net,
    listenUnix: (path, on) => {
      mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
      return net.listenUnix(path, on);
    },
    random: new NodeRandom(),
    open: nodeFileOpener,
    secret,
    tls,
    objects: nodeStateFile(join(c.state_dir, 'objects.json')),
  };
}

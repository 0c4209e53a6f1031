// The real ports of the storage and client roles: sockets (node:net / node:tls), store
// files and block devices, randomness, the cluster secret and TLS material read from the
// configured files (secret ones refused when group or others may read them), and the
// object file (a new file created exclusively, fsynced, renamed over the old one).

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { NodeNet } from '../node/net.js';
import type { ServerTls } from '../transport/net.js';
import { MIN_SECRET_BYTES } from '../transport/handshake.js';
import { NodeRandom } from '../node/ports.js';
import { nodeFileOpener } from '../node/file-backend.js';
import { dataAuth, type DaemonConfig } from './config.js';
import type { RolePorts } from './daemon.js';
import type { StateFile } from './objects.js';
import { StartError } from './start-error.js';
import { CERT_FILES, groupId, parsePskFile } from './nbd-tls.js';
import { TLS_ONLY_SECRET, identifyByCertificate, identifyByPsk, parseDataPskFile, type DataPskEntry } from './data-tls.js';
import { ensurePrivateDir, readSecretFile, writeFileAtomic } from '../node/files.js';
import type { Logger } from '../util/ports.js';
import { storePathRefusal } from '../node/store-paths.js';

export const SECRET_MIN_BYTES = MIN_SECRET_BYTES;

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new StartError(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

/** A file holding a secret: refused (or warned about, secret_file_modes: warn) when group or others may read it. */
export function readSecret(c: DaemonConfig, log: Logger, path: string, what: string): Buffer {
  try {
    return readSecretFile(path, what, c.secret_file_modes, (msg) => log.log('warn', `${msg} (secret_file_modes: warn)`));
  } catch (e) {
    const m = (e as Error).message;
    throw new StartError((e as NodeJS.ErrnoException).code !== undefined ? `cannot read ${what} ${path}: ${m}` : m);
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
        ensurePrivateDir(dirname(path), 'the directory of');
        writeFileAtomic(path, text, 0o600, true);
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
function nbdServerTls(c: DaemonConfig, net: NodeNet, log: Logger): ServerTls | null {
  const n = c.nbd;
  if (n.tls === 'off') return null;
  try {
    if (n.tls_psk_file !== null) {
      const keys = parsePskFile(readSecret(c, log, n.tls_psk_file, 'nbd.tls_psk_file').toString('utf8'), n.tls_psk_file);
      return net.serverTls({ psk: (id) => keys.get(id) ?? null });
    }
    const d = n.tls_certificates as string;
    const f = (name: string): Buffer => readFile(join(d, name), 'nbd.tls_certificates file');
    return net.serverTls({ cert: f(CERT_FILES.cert), key: readSecret(c, log, join(d, CERT_FILES.key), 'nbd.tls_certificates key'), ...(n.tls_verify_peer ? { ca: f(CERT_FILES.ca), verifyPeer: true } : {}) });
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

/**
 * The data plane's TLS: for outgoing sessions (TlsOptions on every address) and for the
 * listener (a ServerTls every accepted connection is upgraded with, and how its peer is
 * named). See data-tls.ts for the two kinds of per-node identity.
 */
function dataTls(c: DaemonConfig, net: NodeNet, log: Logger): Pick<RolePorts, 'tls' | 'data_tls' | 'identify'> {
  const d = c.data;
  try {
    switch (dataAuth(d)) {
      case 'secret':
        return { tls: null, data_tls: null, identify: null };
      case 'psk': {
        const path = d.tls_psk_file as string;
        const ring = new KeyRing(path, () => parseDataPskFile(readSecret(c, log, path, 'data.tls_psk_file').toString('utf8'), path), log);
        const own = ring.keys.get(c.name);
        if (own === undefined) throw new StartError(`data.tls_psk_file ${path} has no line for this node (identity ${c.name}, the daemon's name)`);
        return { tls: { psk: { identity: c.name, key: own.key } }, data_tls: net.serverTls({ psk: (id) => ring.lookup(id)?.key ?? null }), identify: (p) => identifyByPsk(ring.keys)(p) };
      }
      case 'x509-secret':
      case 'x509': {
        const cert = readFile(d.tls_cert as string, 'data.tls_cert');
        const key = readSecret(c, log, d.tls_key as string, 'data.tls_key');
        const ca = d.tls_ca !== null ? readFile(d.tls_ca, 'data.tls_ca') : null;
        return {
          tls: { cert, key, ...(ca !== null ? { ca } : {}) },
          data_tls: net.serverTls(ca !== null ? { cert, key, ca, verifyPeer: true } : { cert, key }),
          identify: ca !== null ? identifyByCertificate : null,
        };
      }
    }
  } catch (e) {
    if (e instanceof StartError) throw e;
    throw new StartError(`data TLS: ${(e as Error).message}`);
  }
}

/**
 * The listener's PSK keys. A node added to the cluster later (rmr up extends the file) must
 * get in without restarting every daemon: an unknown identity makes the file be read again,
 * at most once a second (a flood of unknown identities costs one small read a second).
 */
class KeyRing {
  keys: Map<string, DataPskEntry>;
  private read_at = 0;
  constructor(
    private readonly path: string,
    private readonly read: () => Map<string, DataPskEntry>,
    private readonly log: Logger,
  ) {
    this.keys = read();
    this.read_at = Date.now();
  }

  lookup(identity: string): DataPskEntry | undefined {
    const e = this.keys.get(identity);
    if (e !== undefined || Date.now() - this.read_at < 1000) return e;
    this.read_at = Date.now();
    try {
      const next = this.read();
      if (next.size !== this.keys.size || [...next].some(([id, v]) => this.keys.get(id)?.roles.join() !== v.roles.join())) this.log.log('info', 'data.tls_psk_file read again', { path: this.path, identities: next.size });
      this.keys = next;
    } catch (err) {
      this.log.log('warn', 'data.tls_psk_file could not be read again; keeping the keys read before', { path: this.path, reason: (err as Error).message });
    }
    return this.keys.get(identity);
  }
}

export function nodeRolePorts(c: DaemonConfig, log: Logger): RolePorts {
  let secret: Buffer | null = null;
  if (c.secret_file !== null) {
    const raw = readSecret(c, log, c.secret_file, 'secret_file');
    // A trailing newline (echo > file) is not part of the secret.
    secret = Buffer.from(raw.toString('latin1').replace(/\r?\n$/, ''), 'latin1');
    if (secret.length < SECRET_MIN_BYTES) throw new StartError(`secret_file ${c.secret_file}: the secret has ${secret.length} bytes, it needs at least ${SECRET_MIN_BYTES} random bytes (e.g. head -c 32 /dev/urandom | base64 > ${c.secret_file})`);
  }
  const net = new NodeNet();
  const data = dataTls(c, net, log);
  // Nodes that prove who they are in TLS need no shared secret; the handshake then runs with
  // a well-known one (data-tls.ts).
  if (secret === null && data.identify !== null) secret = TLS_ONLY_SECRET;
  const nbd_tls = nbdServerTls(c, net, log);
  const gid = nbdSocketGid(c);
  return {
    net,
    listenUnix: (path, on) => {
      // Searchable by all (0755): who may connect is the sockets' own mode and group.
      ensurePrivateDir(dirname(path), 'nbd.socket_dir', 0o755);
      return net.listenUnix(path, on, { mode: c.nbd.socket_mode, ...(gid !== undefined ? { gid } : {}) });
    },
    nbd_tls,
    random: new NodeRandom(),
    open: nodeFileOpener,
    storePathRefusal,
    secret,
    ...data,
    objects: nodeStateFile(join(c.state_dir, 'objects.json')),
  };
}

// Per-node identities on the data plane (ARCHITECTURE.md §2.16). A node authenticates as
// itself in the TLS handshake, by one of:
//
//   certificates  its own certificate (CN = node name, OU = its roles: `client`, `storage`,
//                 or both) signed by the cluster CA (`data.tls_ca`), which every listener
//                 requires of its clients;
//   PSK           its own key in `data.tls_psk_file`, lines `identity:hexkey:roles` (the
//                 identity is the node name, roles `client`, `storage` or `client,storage`);
//                 a node uses the line of its own name to connect and accepts every line.
//
// The listener turns what the handshake proved into the session's peer (name and roles),
// and the RMR server accepts a message only from a peer holding the role that sends it
// (src/rmr/protocol/roles.ts). Pure: the files are read by node-role-ports.ts.

import { createHash } from 'node:crypto';
import type { TlsPeer } from '../transport/net.js';
import type { PeerIdentity } from '../transport/server.js';
import { ROLE_CLIENT, ROLE_STORAGE } from '../rmr/protocol/roles.js';

export { ROLE_CLIENT, ROLE_STORAGE };

export const DATA_ROLES: readonly string[] = [ROLE_CLIENT, ROLE_STORAGE];

/** At least 256 bits: a recorded handshake must not be searchable for the key. */
export const DATA_PSK_MIN_KEY_BYTES = 32;
const PSK_MAX_KEY_BYTES = 256;
const PSK_MAX_IDENTITY_BYTES = 128;
const IDENTITY_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export interface DataPskEntry {
  readonly key: Buffer;
  readonly roles: readonly string[];
}

function parseRoles(text: string, at: string, what: string): string[] {
  const roles = text.split(',').map((r) => r.trim());
  for (const r of roles) if (!DATA_ROLES.includes(r)) throw new Error(`${at}: ${what}: unknown role '${r}' (roles: ${DATA_ROLES.join(', ')})`);
  if (new Set(roles).size !== roles.length) throw new Error(`${at}: ${what}: a role appears twice`);
  return roles;
}

/**
 * Parses a data-plane PSK file: `identity:hexkey:roles` per line; blank lines and `#`
 * comments allowed. Throws with the line number of the first problem (never quoting a key).
 */
export function parseDataPskFile(text: string, where: string): Map<string, DataPskEntry> {
  const out = new Map<string, DataPskEntry>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    const at = `${where}:${i + 1}`;
    const f = line.split(':');
    if (f.length !== 3) throw new Error(`${at}: expected identity:hexkey:roles (roles: client, storage or client,storage)`);
    const [identity = '', hex = '', roles = ''] = f;
    if (!IDENTITY_RE.test(identity) || Buffer.byteLength(identity) > PSK_MAX_IDENTITY_BYTES) throw new Error(`${at}: identity '${identity.slice(0, 64)}' is not a node name [A-Za-z0-9_.-]`);
    if (!/^(?:[0-9A-Fa-f]{2})+$/.test(hex)) throw new Error(`${at}: the key of ${identity} is not an even number of hex digits`);
    const key = Buffer.from(hex, 'hex');
    if (key.length < DATA_PSK_MIN_KEY_BYTES || key.length > PSK_MAX_KEY_BYTES) {
      throw new Error(`${at}: the key of ${identity} has ${key.length} bytes; use ${DATA_PSK_MIN_KEY_BYTES}..${PSK_MAX_KEY_BYTES} random bytes (openssl rand -hex 32)`);
    }
    if (out.has(identity)) throw new Error(`${at}: identity ${identity} appears twice`);
    out.set(identity, { key, roles: parseRoles(roles, at, identity) });
  });
  if (out.size === 0) throw new Error(`${where}: no identity:hexkey:roles line`);
  return out;
}

/** One line of a data-plane PSK file. */
export function formatDataPskLine(identity: string, key: Buffer, roles: readonly string[]): string {
  return `${identity}:${key.toString('hex')}:${roles.join(',')}\n`;
}

/** The listener's view of a peer, from a PSK keyring: its identity and the roles its line gives. */
export function identifyByPsk(keys: ReadonlyMap<string, DataPskEntry>): (peer: TlsPeer | null) => PeerIdentity | string {
  return (peer) => {
    if (peer === null || peer.kind !== 'psk') return 'the peer did not authenticate with a PSK';
    const e = keys.get(peer.identity);
    return e === undefined ? `unknown PSK identity ${peer.identity}` : { name: peer.identity, roles: e.roles };
  };
}

/** The listener's view of a peer, from its verified certificate: CN is the name, OU values the roles. */
export function identifyByCertificate(peer: TlsPeer | null): PeerIdentity | string {
  if (peer === null || peer.kind !== 'x509') return 'the peer showed no certificate signed by data.tls_ca';
  const cn = peer.subject.CN ?? [];
  if (cn.length !== 1 || !IDENTITY_RE.test(cn[0] as string)) return `the certificate's CN (${cn.join(', ') || 'none'}) is not one node name`;
  const roles = (peer.subject.OU ?? []).filter((r) => DATA_ROLES.includes(r));
  if (roles.length === 0) return `the certificate of ${cn[0] as string} names no role (OU=client and/or OU=storage)`;
  return { name: cn[0] as string, roles: [...new Set(roles)] };
}

/**
 * The transport's HMAC secret when nodes authenticate by TLS and no secret_file is set: the
 * handshake still runs, and proves nothing beyond what TLS did. A constant, so both ends
 * agree without configuration.
 */
export const TLS_ONLY_SECRET = createHash('sha256').update('rmr: transport sessions are authenticated by TLS identities').digest();

// The NBD TLS material of the daemon, in the formats nbdkit, qemu and libnbd share: a
// certificate directory (server-cert.pem, server-key.pem, ca-cert.pem) and a PSK file of
// `identity:hexkey` lines (what `psktool -u alice -p keys.psk` writes). Pure: the files are
// read by node-role-ports.ts.

/** OpenSSL's limits on a PSK identity and key (src/node/net.ts checks the same). */
const PSK_MAX_IDENTITY_BYTES = 128;
const PSK_MAX_KEY_BYTES = 256;
/** Below 128 bits a key can be searched offline from one recorded handshake. */
export const PSK_MIN_KEY_BYTES = 16;

/**
 * Parses a PSK file: one `identity:hexkey` per line, blank lines allowed, nothing else (the
 * same file must work for libnbd and qemu, whose GnuTLS knows no comments). Throws with the
 * line number of the first problem; the key is never quoted back.
 */
export function parsePskFile(text: string, where: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return;
    const at = `${where}:${i + 1}`;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`${at}: expected identity:hexkey`);
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (Buffer.byteLength(identity, 'utf8') > PSK_MAX_IDENTITY_BYTES) throw new Error(`${at}: the identity is longer than ${PSK_MAX_IDENTITY_BYTES} bytes`);
    if (!/^(?:[0-9A-Fa-f]{2})+$/.test(hex)) throw new Error(`${at}: the key of ${identity} is not an even number of hex digits`);
    const key = Buffer.from(hex, 'hex');
    if (key.length < PSK_MIN_KEY_BYTES || key.length > PSK_MAX_KEY_BYTES) throw new Error(`${at}: the key of ${identity} has ${key.length} bytes; use ${PSK_MIN_KEY_BYTES}..${PSK_MAX_KEY_BYTES} random bytes (psktool makes 32)`);
    if (keys.has(identity)) throw new Error(`${at}: identity ${identity} appears twice`);
    keys.set(identity, key);
  });
  if (keys.size === 0) throw new Error(`${where}: no identity:hexkey line`);
  return keys;
}

/** The files of a certificate directory the server reads (nbdkit's --tls-certificates layout). */
export const CERT_FILES = { cert: 'server-cert.pem', key: 'server-key.pem', ca: 'ca-cert.pem' } as const;

/** `group` as a gid: a number as is, a name looked up in the text of /etc/group; null if unknown. */
export function groupId(group: string, etcGroup: string): number | null {
  if (/^[0-9]+$/.test(group)) return Number(group);
  for (const line of etcGroup.split('\n')) {
    const f = line.split(':');
    if (f[0] === group && f.length >= 3 && /^[0-9]+$/.test(f[2] ?? '')) return Number(f[2]);
  }
  return null;
}

// Self-signed test certificates made with the openssl CLI into a temporary directory.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';

export class TestCerts {
  readonly dir = mkdtempSync(join(tmpdir(), 'rmr-certs-'));

  private openssl(args: string[]): void {
    const r = spawnSync('openssl', args, { encoding: 'utf8' });
    if (r.error !== undefined) throw new Error(`openssl not runnable: ${r.error.message}`);
    assert.equal(r.status, 0, `openssl ${args.join(' ')} failed: ${r.stderr}`);
  }

  /** An EC P-256 self-signed certificate valid for two days. */
  selfSigned(name: string, cn: string, san: string): { cert: string; key: string } {
    const key = join(this.dir, `${name}.key`);
    const cert = join(this.dir, `${name}.crt`);
    this.openssl([
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`,
    ]);
    return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
  }

  /** A CA (EC P-256, two days) as files: `<name>-ca.crt` / `<name>-ca.key`. */
  ca(name: string): { cert: string; key: string } {
    const key = join(this.dir, `${name}-ca.key`);
    const cert = join(this.dir, `${name}-ca.crt`);
    this.openssl([
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
      '-subj', `/CN=${name} test CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    return { cert, key };
  }

  /** A certificate signed by `ca`, for a server (with `san`) or a client; paths of the files. */
  signed(ca: { cert: string; key: string }, name: string, cn: string, o: { server: boolean; san?: string; ou?: readonly string[] }): { cert: string; key: string } {
    const key = join(this.dir, `${name}.key`);
    const csr = join(this.dir, `${name}.csr`);
    const cert = join(this.dir, `${name}.crt`);
    const ext = join(this.dir, `${name}.ext`);
    this.openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}${(o.ou ?? []).map((u) => `/OU=${u}`).join('')}`]);
    writeFileSync(ext, `${o.san !== undefined ? `subjectAltName=${o.san}\n` : ''}extendedKeyUsage=${o.server ? 'serverAuth' : 'clientAuth'}\n`);
    this.openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
    return { cert, key };
  }

  /**
   * A certificate directory in the layout nbdkit, qemu and libnbd read: ca-cert.pem, and
   * <role>-cert.pem / <role>-key.pem when `own` is given. `name`: under this object's
   * directory, or an absolute path.
   */
  layout(name: string, ca: { cert: string }, role: 'server' | 'client', own?: { cert: string; key: string }): string {
    const d = isAbsolute(name) ? name : join(this.dir, name);
    mkdirSync(d, { mode: 0o700 });
    copyFileSync(ca.cert, join(d, 'ca-cert.pem'));
    if (own !== undefined) {
      copyFileSync(own.cert, join(d, `${role}-cert.pem`));
      copyFileSync(own.key, join(d, `${role}-key.pem`));
    }
    return d;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

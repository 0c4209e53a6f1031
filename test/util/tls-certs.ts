// Self-signed test certificates made with the openssl CLI into a temporary directory.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// `rmr dashboard`: the web dashboard of a cluster (src/dashboard/), wired to the daemons the
// way `rmr status` reaches them: each node's control socket, or its control URL with the
// cluster's token. Loopback by default; any other address needs TLS and a token.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { call, CliError, EXIT_FAILED, EXIT_USAGE } from './node-client.js';
import { nodeTarget, type LoadedCluster } from './node-cluster.js';
import { daemonLiveness } from '../node/liveness.js';
import { readSecretFile } from '../node/files.js';
import { parseListen } from '../daemon/validate.js';
import { TOKEN_MIN_CHARS } from '../daemon/control-api.js';
import type { ClusterLayout, DaemonPort } from '../dashboard/collector.js';
import { isLoopback, startDashboard, type RunningDashboard } from '../dashboard/node-dashboard.js';

export const DASHBOARD_DEFAULT_PORT = 7070;
/** A daemon that does not answer within this is shown as down for the tick. */
const REQUEST_TIMEOUT_MS = 3000;

export const DASHBOARD_HELP = `Usage: rmr dashboard [--cluster FILE | --data-dir DIR] [--listen ADDR:PORT]
                     [--tls-cert FILE --tls-key FILE] [--token-file FILE] [--interval MS]

Serves a live web page for the whole cluster: daemons, pools and members by state with the
reason for anything not normal, each member's dirty map as a picture, resync progress with
start/stop/rate controls, online verify, IO charts (client IO and resync apart), devices
with their NBD URIs and the event feed. It reads every daemon's control API, as rmr status
does, once per --interval (default 1000 ms, at least 250).

--listen defaults to 127.0.0.1:${DASHBOARD_DEFAULT_PORT}. On loopback no token is needed (the page answers only
to requests naming that address); on any other address the dashboard needs TLS (--tls-cert,
--tls-key: PEM files) and a token (--token-file, at least ${TOKEN_MIN_CHARS} characters): open
https://ADDR:PORT/?token=TOKEN once, the browser keeps it in a cookie.`;

export function clusterLayout(lc: LoadedCluster): ClusterLayout {
  const nodes: DaemonPort[] = lc.file.nodes.map((n) => {
    const t = nodeTarget(lc, n);
    const pid = n.control_url === null ? join(lc.state_dir, n.name, 'rmr.pid') : null;
    return {
      name: n.name,
      request: (method, path, body) => call(t, method, path, body, REQUEST_TIMEOUT_MS),
      local: () => {
        if (pid === null) return null;
        const l = daemonLiveness(pid);
        return l === null ? null : { running: l.running, pid: l.running ? l.pid : null, evidence: l.evidence };
      },
    };
  });
  return {
    cluster: lc.file.cluster,
    nodes,
    pools: lc.file.pools.map((p) => ({ name: p.name, chunk_size: p.chunk_size, members: p.members.map((m) => ({ node: m.node, member_id: m.member_id })) })),
    client_node: lc.file.client?.node ?? null,
  };
}

export interface DashboardFlags {
  listen?: string;
  tls_cert?: string;
  tls_key?: string;
  token_file?: string;
  interval?: string;
}

function readFile(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new CliError(`cannot read ${what} ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'}): check the path`, EXIT_USAGE);
  }
}

/** A key or token file: a warning when group or others may read it. */
function readSecret(what: string, path: string): Buffer {
  try {
    return readSecretFile(path, what, 'warn', (msg) => process.stderr.write(`rmr dashboard: warning: ${msg}\n`));
  } catch (e) {
    throw new CliError(`cannot read ${what} ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): check the path`, EXIT_USAGE);
  }
}

export async function runDashboard(lc: LoadedCluster, f: DashboardFlags, log: (line: string) => void): Promise<RunningDashboard> {
  const listen = parseListen(f.listen ?? `127.0.0.1:${DASHBOARD_DEFAULT_PORT}`);
  if (listen === null) throw new CliError(`rmr dashboard: --listen takes ADDR:PORT (e.g. 127.0.0.1:${DASHBOARD_DEFAULT_PORT}), got '${f.listen ?? ''}'`, EXIT_USAGE);
  const interval = f.interval === undefined ? 1000 : /^[0-9]{1,6}$/.test(f.interval) ? Number(f.interval) : NaN;
  if (!(interval >= 250 && interval <= 60_000)) throw new CliError(`rmr dashboard: --interval takes 250..60000 ms, got '${f.interval ?? ''}'`, EXIT_USAGE);
  if ((f.tls_cert === undefined) !== (f.tls_key === undefined)) throw new CliError('rmr dashboard: give both --tls-cert and --tls-key', EXIT_USAGE);
  const tls = f.tls_cert !== undefined && f.tls_key !== undefined ? { cert: readFile('--tls-cert', f.tls_cert), key: readSecret('--tls-key', f.tls_key) } : null;
  const token = f.token_file === undefined ? null : readSecret('--token-file', f.token_file).toString('utf8').trim();
  if (token !== null && token.length < TOKEN_MIN_CHARS) throw new CliError(`rmr dashboard: the token in ${f.token_file ?? ''} must have at least ${TOKEN_MIN_CHARS} characters`, EXIT_USAGE);
  if (!isLoopback(listen.host) && (tls === null || token === null)) {
    throw new CliError(`rmr dashboard: --listen ${listen.host} is not a loopback address: it needs TLS (--tls-cert, --tls-key) and a token (--token-file)`, EXIT_USAGE);
  }
  try {
    return await startDashboard({ layout: clusterLayout(lc), host: listen.host, port: listen.port, tls, token, interval_ms: interval, log });
  } catch (e) {
    throw new CliError(`rmr dashboard: ${e instanceof Error ? e.message : String(e)}`, EXIT_FAILED);
  }
}

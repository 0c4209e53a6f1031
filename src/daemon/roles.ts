// The roles this build can run, by the name used under `roles:` in the daemon config.
// Storage (rmr-server + brmr-server + sync pools) and client (rmr-client + brmr-client +
// NBD exports) plug in here once src/brmr and src/nbd land; see Role in daemon.ts.

import type { RoleFactory } from './daemon.js';

export const ROLE_FACTORIES: Readonly<Record<string, RoleFactory>> = {};

// The roles this build can run, by the name used under `roles:` in the daemon config:
// `storage` (rmr-server + brmr-server + sync pools) and `client` (rmr-client + brmr-client
// + NBD exports). A daemon may run both (storage first, so it stops last).

import type { RoleFactory } from './daemon.js';
import { storageRoleFactory } from './storage-role.js';
import { clientRoleFactory } from './client-role.js';

export const ROLE_FACTORIES: Readonly<Record<string, RoleFactory>> = { storage: storageRoleFactory, client: clientRoleFactory };

// The roles a peer identity may hold on the data plane (security review, finding 11): a
// compute client sends IO and the pool's commands; a storage node's sync pool sends sync IO,
// MAP_CLEAR and sync commands. A node may hold both roles.

import type { RmrMessage } from './msg.js';

export const ROLE_CLIENT = 'client';
export const ROLE_STORAGE = 'storage';
export type Role = typeof ROLE_CLIENT | typeof ROLE_STORAGE;

/** The role whose nodes send a message: a compute client, or a storage node's sync pool. */
export function senderRole(m: RmrMessage): Role {
  switch (m.type) {
    case 'IO':
      return m.body.sync === 1 ? ROLE_STORAGE : ROLE_CLIENT;
    case 'MAP_CLEAR':
      return ROLE_STORAGE;
    case 'CMD':
      return m.env.sync === 1 ? ROLE_STORAGE : ROLE_CLIENT;
    default:
      return ROLE_CLIENT;
  }
}

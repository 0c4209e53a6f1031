// State of a storage server pool (the reference's rmr_srv_pool_state, §4.3). The server-side
// state survives a compute-client crash, so a storage node itself refuses IO until recovery
// has happened. `change` is the one gatekeeper: it enforces the table below and emits one
// event per transition; nothing else writes the state.
//
//   to \ from     EMPTY  REGISTERED  CREATED  NORMAL  NO_IO
//   EMPTY           -        ok         .        .      ok     store gone, no client session
//   REGISTERED     ok        -          .        .      ok     store registered / last client left
//   CREATED         .        ok         -        .      .      first create-mode join (once)
//   NORMAL          .        .          ok       -      ok     ENABLE_POOL(1), MAP_DONE(enable)
//   NO_IO           .        ok         ok       ok     -      assemble/rejoin, any failure,
//                                                              maintenance on, MAP_DISABLE
// A request for the current state is a no-op that succeeds.
//
// `service_epoch` counts the exits from NORMAL: work begun in IO service (a chunk sync) is
// valid only if the node never left it meanwhile (see ServerIo.syncChunk).

import type { ServerPoolState } from '../protocol/pool-md.js';

const LEGAL: Readonly<Record<ServerPoolState, readonly ServerPoolState[]>> = {
  // to: [from...]
  EMPTY: ['REGISTERED', 'NO_IO'],
  REGISTERED: ['EMPTY', 'NO_IO'],
  CREATED: ['REGISTERED'],
  NORMAL: ['CREATED', 'NO_IO'],
  NO_IO: ['REGISTERED', 'CREATED', 'NORMAL'],
};

export function serverTransitionLegal(from: ServerPoolState, to: ServerPoolState): boolean {
  return from === to || LEGAL[to].includes(from);
}

export interface ServerPoolStateEvent {
  kind: 'server_pool_state';
  pool: string;
  from: ServerPoolState;
  to: ServerPoolState;
  reason: string;
}

export class ServerPoolStateMachine {
  private _state: ServerPoolState = 'EMPTY';
  readonly pool: string;
  private readonly emit: (ev: ServerPoolStateEvent) => void;

  /** Times the pool left NORMAL (IO service); never decreases. */
  private _service_epoch = 0;

  /** Told of every refused transition (the simulator treats one as a violation). */
  on_refused: ((reason: string) => void) | null = null;

  constructor(pool: string, emit: (ev: ServerPoolStateEvent) => void, initial: ServerPoolState = 'EMPTY') {
    this.pool = pool;
    this.emit = emit;
    this._state = initial;
  }

  get state(): ServerPoolState {
    return this._state;
  }

  get service_epoch(): number {
    return this._service_epoch;
  }

  /** Moves to `to` if the table allows it; returns the refusal reason otherwise. */
  change(to: ServerPoolState, reason: string): string | null {
    const from = this._state;
    if (from === to) return null;
    if (!serverTransitionLegal(from, to)) {
      const why = `illegal server pool transition ${from} -> ${to} (${reason})`;
      this.on_refused?.(why);
      return why;
    }
    this._state = to;
    if (from === 'NORMAL') this._service_epoch++;
    this.emit({ kind: 'server_pool_state', pool: this.pool, from, to, reason });
    return null;
  }

  /** IO is served only in NORMAL. */
  get ioAllowed(): boolean {
    return this._state === 'NORMAL';
  }
}

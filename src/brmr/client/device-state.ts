// State of a BRMR device (the reference's brmr_dev_state, §4.4). `DeviceStateMachine.change`
// is the only writer and emits one event per transition.
//
//   from \ to      ready      closing    closed
//   init           map ok     .          map failed
//   ready            -        unmap      .
//   closing          .          -        drained, UNMAP sent, pool closed
//   closed           .          .          -        (terminal)
//
// `disconnected` is not stored: a ready device whose pool has no NORMAL leg reports it (the
// pool's legs change under it; its IO fails with ENODEV until a leg is back), and `degraded`
// says fewer legs than members are NORMAL. Both are read from the pool when asked, so they
// can never be stale.

export const DEVICE_STATES = ['init', 'ready', 'closing', 'closed'] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];
/** What status views show: the stored state, or `disconnected` for a ready device without legs. */
export type DeviceStateView = DeviceState | 'disconnected';

const LEGAL: Readonly<Record<DeviceState, readonly DeviceState[]>> = {
  // to: [from...]
  init: [],
  ready: ['init'],
  closing: ['ready'],
  closed: ['init', 'closing'],
};

export interface DeviceStateEvent {
  kind: 'device_state';
  device: string;
  from: DeviceState;
  to: DeviceState;
  reason: string;
}

export class DeviceStateMachine {
  private _state: DeviceState = 'init';
  constructor(
    private readonly device: string,
    private readonly emit: (ev: DeviceStateEvent) => void,
  ) {}

  get state(): DeviceState {
    return this._state;
  }

  /** null on success, otherwise why the table refuses it. */
  change(to: DeviceState, reason: string): string | null {
    const from = this._state;
    if (from === to) return null;
    if (!LEGAL[to].includes(from)) return `device ${this.device}: ${from} -> ${to} not allowed`;
    this._state = to;
    this.emit({ kind: 'device_state', device: this.device, from, to, reason });
    return null;
  }
}

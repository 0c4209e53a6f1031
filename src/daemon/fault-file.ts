// The control file of a store's fault injection (`brmr-server/stores/<pool>/fault_injection`):
// reads show the active faults and their counters, writes take FaultController's `key=value`
// tokens. A bad token is EINVAL with the controller's message.

import { FaultSpecError, FAULT_USAGE, type FaultController } from '../brmr/server/fault-backend.js';
import { ControlError } from './control-error.js';
import { file, type FileNode } from './control-tree.js';

export function faultInjectionFile(c: FaultController): FileNode {
  return file({
    read: () => `${c.describe()}\n${c.describeStats()}`,
    write: (value) => {
      try {
        c.set(value);
      } catch (e) {
        if (e instanceof FaultSpecError) throw new ControlError('EINVAL', e.message);
        throw e;
      }
      return c.describe();
    },
    json: () => ({ settings: c.describe(), stats: { ...c.stats, ios: { ...c.stats.ios }, errors: { ...c.stats.errors } } }),
    help: `fault injection into this store's IO: ${FAULT_USAGE}`,
  });
}

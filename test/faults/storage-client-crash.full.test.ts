// Scenario 6: a storage node and the compute client both SIGKILLed mid-load, in either
// order, and both restarted: the client's legs are reassembled once every member is back
// (Cases 3/4), the one that missed writes while it was dead resyncs them. Same checks as
// scenario 5 (test/util/crash-scenario.ts). In test:faults only (*.full.test.ts).

import { test } from 'node:test';
import { crashScenario } from '../util/crash-scenario.js';

test('SIGKILL of a storage node, writes go on, then SIGKILL of the client; both restarted (client first): reassembled when every member is back', { timeout: 400_000 }, async (t) => {
  await crashScenario(t, 'scrash', 601, [{ kill: 'stg2' }, { io: 300 }, { kill: 'cli' }, { restart: 'cli' }, { restart: 'stg2' }]);
});

test('SIGKILL of the client, then of a storage node; both restarted (storage first)', { timeout: 400_000 }, async (t) => {
  await crashScenario(t, 'cscrash', 602, [{ kill: 'cli' }, { kill: 'stg3' }, { restart: 'stg3' }, { restart: 'cli' }]);
});

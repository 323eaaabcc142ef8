import { test } from 'node:test';
import * as assert from 'node:assert/strict';

import {
  IRun,
  LineBuffer,
  badgeClass,
  clustersOf,
  elapsed,
  filterRuns,
  formatDuration,
  launchesRuns,
  nextDelay,
  progressFraction,
  progressText,
  queryString,
  usageText
} from '../src/model';

function run(extra: Partial<IRun> = {}): IRun {
  return {
    run_id: 'r-1',
    cluster: 'local',
    phase: 'Running',
    kind: 'call',
    user: 'u',
    function: 'f',
    created: 100,
    finished: null,
    total: 1,
    succeeded: 0,
    failed: 0,
    running: 0,
    diagnosis: '',
    active: true,
    gpu_hours: null,
    cost: null,
    currency: null,
    unpriced: [],
    ...extra
  };
}

test('formatDuration', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(59.9), '59s');
  assert.equal(formatDuration(125), '2m 05s');
  assert.equal(formatDuration(3720), '1h 02m');
  assert.equal(formatDuration(-5), '0s');
});

test('elapsed runs to now while active, to finished after', () => {
  assert.equal(elapsed(run(), 160), 60);
  assert.equal(elapsed(run({ finished: 130 }), 999), 30);
  assert.equal(elapsed(run({ created: 0 }), 999), 0);
});

test('badgeClass', () => {
  assert.equal(badgeClass('Running'), 'kj-badge kj-badge-running');
  assert.equal(badgeClass('Cancelled'), 'kj-badge kj-badge-cancelled');
  assert.equal(badgeClass('Weird'), 'kj-badge kj-badge-unknown');
});

test('progress of a map, nothing for a call', () => {
  const m = run({ kind: 'map', total: 10, succeeded: 3, failed: 1, running: 2 });
  assert.equal(progressText(m), '3/10 done · 2 running · 1 failed');
  assert.equal(progressFraction(m), 0.4);
  assert.equal(progressText(run()), '');
  assert.equal(progressFraction(run({ total: 0 })), 0);
});

test('filterRuns and clustersOf', () => {
  const runs = [
    run({ run_id: 'a', cluster: 'x', phase: 'Running' }),
    run({ run_id: 'b', cluster: 'y', phase: 'Failed' }),
    run({ run_id: 'c', cluster: 'x', phase: 'Failed' })
  ];
  const ids = (rs: IRun[]) => rs.map(r => r.run_id);
  assert.deepEqual(ids(filterRuns(runs, { cluster: '', status: '' })), ['a', 'b', 'c']);
  assert.deepEqual(ids(filterRuns(runs, { cluster: 'x', status: '' })), ['a', 'c']);
  assert.deepEqual(ids(filterRuns(runs, { cluster: 'x', status: 'Failed' })), ['c']);
  assert.deepEqual(clustersOf(runs), ['x', 'y']);
});

test('nextDelay is quick while runs are active and backs off when idle', () => {
  assert.equal(nextDelay(true, 5, false), 1500);
  assert.equal(nextDelay(false, 0, false), 3000);
  assert.equal(nextDelay(false, 1, false), 6000);
  assert.equal(nextDelay(false, 10, false), 15000);
  assert.equal(nextDelay(true, 0, true), 30000);
});

test('launchesRuns: commands that run code, not the others', () => {
  for (const id of ['notebook:run-cell', 'notebook:run-cell-and-select-next', 'notebook:run-all-cells',
                    'notebook:restart-run-all', 'console:run-forced', 'runmenu:run', 'fileeditor:run-code']) {
    assert.equal(launchesRuns(id), true, id);
  }
  for (const id of ['kjupyter:refresh-runs', 'notebook:insert-cell-below', 'notebook:interrupt-kernel',
                    'apputils:change-theme', 'notebook:truncate-outputs', 'docmanager:save', 'notebook']) {
    assert.equal(launchesRuns(id), false, id);
  }
});

test('queryString skips empty values and escapes', () => {
  assert.equal(queryString({}), '');
  assert.equal(queryString({ cluster: '', follow: false }), '');
  assert.equal(queryString({ cluster: 'a b', follow: true, index: 0 }), '?cluster=a%20b&follow=true&index=0');
});

test('LineBuffer joins chunks into lines and keeps the last N', () => {
  const buf = new LineBuffer(3);
  assert.deepEqual(buf.push('one\ntw'), ['one']);
  assert.deepEqual(buf.push('o\nthree\nfour\n'), ['two', 'three', 'four']);
  assert.deepEqual(buf.lines, ['two', 'three', 'four']);
  assert.equal(buf.dropped, 1);
  assert.deepEqual(buf.push('five'), []);
  assert.deepEqual(buf.end(), ['five']);
  assert.deepEqual(buf.end(), []);
  assert.deepEqual(buf.lines, ['three', 'four', 'five']);
});

test('usageText shows GPU-hours and the estimated cost once recorded', () => {
  assert.equal(usageText(run()), '');
  assert.equal(usageText(run({ gpu_hours: 0 })), ''); // no GPU, no prices: nothing worth a word
  assert.equal(usageText(run({ gpu_hours: 0.5 })), 'GPU-h 0.50');
  assert.equal(usageText(run({ gpu_hours: 2, cost: 7.345, currency: 'USD' })), 'GPU-h 2.00 · est. 7.34 USD');
  assert.equal(usageText(run({ gpu_hours: 0, cost: 1, currency: 'EUR', unpriced: ['memory_gib'] })), 'GPU-h 0.00 · est. 1.00 EUR+');
});

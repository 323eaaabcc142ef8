import { test } from 'node:test';
import * as assert from 'node:assert/strict';

import {
  IRun,
  LineBuffer,
  badgeClass,
  clusterLabel,
  clustersOf,
  elapsed,
  failedItemsText,
  fallbackHtml,
  filterRuns,
  formatDuration,
  launchesRuns,
  nextDelay,
  progressSegments,
  progressText,
  queryString,
  runSentence,
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
  assert.equal(progressText(run()), '');
});

test('a map bar is split into done, failed, cancelled and running', () => {
  const going = run({ kind: 'map', total: 10, succeeded: 3, failed: 1, running: 2 });
  assert.deepEqual(progressSegments(going), [
    { kind: 'done', count: 3, percent: 30 },
    { kind: 'failed', count: 1, percent: 10 },
    { kind: 'running', count: 2, percent: 20 }
  ]);
  // A fail-fast map that stopped: its untouched items are cancelled, none is running any more.
  const stopped = run({ kind: 'map', total: 30, succeeded: 6, failed: 1, cancelled: 23, running: 4, active: false,
                        phase: 'Failed' });
  assert.deepEqual(progressSegments(stopped).map(s => [s.kind, s.count, s.percent]), [
    ['done', 6, 20],
    ['failed', 1, 3.3],
    ['cancelled', 23, 76.7]
  ]);
  assert.deepEqual(progressSegments(run({ kind: 'map', total: 0 })), []);
});

test('the sentence under a run is what it raised, else its diagnosis', () => {
  assert.equal(runSentence(run({ diagnosis: '  No node has a free A100 GPU.  ' })), 'No node has a free A100 GPU.');
  assert.equal(runSentence(run({ phase: 'Failed', diagnosis: '1 of 1 task(s) failed.', error: "KeyError: 'k'" })),
               "KeyError: 'k'");
  assert.equal(runSentence(run({ phase: 'Failed', diagnosis: 'Out of memory.', error: '' })), 'Out of memory.');
  assert.equal(runSentence(run()), '');
});

test('failedItemsText lists the first failed indexes of a map', () => {
  assert.equal(failedItemsText(run({ kind: 'map', total: 30, failed: 3, failed_items: [4, 9, 17] })),
               '3 failed items: 4, 9, 17');
  assert.equal(failedItemsText(run({ kind: 'map', total: 30, failed: 1, failed_items: [2] })), '1 failed item: 2');
  assert.equal(failedItemsText(run({ kind: 'map', total: 99, failed: 60, failed_items: [0, 1, 2, 3] }), 3),
               '60 failed items: 0, 1, 2, …');
  assert.equal(failedItemsText(run({ kind: 'map', total: 5, failed: 2 })), '2 failed items');
  assert.equal(failedItemsText(run({ kind: 'call', failed: 1, failed_items: [0] })), '');
  assert.equal(failedItemsText(run({ kind: 'map', total: 5 })), '');
});

test('clusterLabel shows the namespace and reachability, and the tooltip says why', () => {
  const base = { name: 'gpu', backend: 'kubernetes', where: 'ctx/team-a', gpus: [], default: false, current: false,
                 namespace: 'team-a' };
  assert.deepEqual(clusterLabel({ ...base, reachable: true, detail: 'Kubernetes v1.30, namespace team-a' }), {
    label: 'gpu · namespace team-a · reachable', title: 'gpu: Kubernetes v1.30, namespace team-a', state: 'reachable'
  });
  const down = clusterLabel({ ...base, reachable: false, detail: 'cannot reach the API server: connection refused' });
  assert.equal(down.label, 'gpu · namespace team-a · not reachable');
  assert.equal(down.title, 'gpu: cannot reach the API server: connection refused');
  assert.equal(down.state, 'unreachable');
  const local = clusterLabel({ ...base, name: 'local', backend: 'local', where: 'this machine', namespace: '',
                               reachable: null, detail: '' });
  assert.deepEqual(local, { label: 'local · local · not checked yet', title: 'local (this machine)', state: 'unknown' });
});

test('fallbackHtml: the saved HTML of kjupyter widget outputs only', () => {
  const view = { 'application/vnd.jupyter.widget-view+json': { model_id: 'abc' } };
  const html = "<pre class='kjupyter-report'><b>square: Succeeded</b>\nitem 0 done</pre>";
  assert.equal(fallbackHtml({ ...view, 'text/html': html, 'text/plain': 'x' }), html);
  assert.equal(fallbackHtml({ ...view, 'text/html': ['<pre class="a kjupyter-report">', 'x</pre>'] }),
               '<pre class="a kjupyter-report">x</pre>');
  assert.equal(fallbackHtml({ ...view, 'text/html': '<div class="other">x</div>' }), null); // another widget
  assert.equal(fallbackHtml({ ...view, 'text/html': '<div class="notkjupyter-x">x</div>' }), null);
  assert.equal(fallbackHtml({ ...view }), null);
  assert.equal(fallbackHtml({ 'text/html': html }), null); // not a widget output: JupyterLab shows its HTML itself
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

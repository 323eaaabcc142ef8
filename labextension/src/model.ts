/**
 * Pure helpers of the runs panel: no JupyterLab imports, unit-tested with node's test runner.
 */

export type Phase = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Cancelled';

export const PHASES: Phase[] = ['Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled'];

/** A run as GET /kjupyter/runs returns it (RunInfo.as_dict() plus `active`). */
export interface IRun {
  run_id: string;
  cluster: string;
  phase: Phase;
  kind: string;
  user: string;
  function: string;
  created: number;
  finished: number | null;
  total: number;
  succeeded: number;
  failed: number;
  running: number;
  diagnosis: string;
  active: boolean;
  gpu_hours: number | null; // GPU-hours of the run's pods, once it ended (null: not recorded)
  cost: number | null; // estimated from its cluster's declared prices (null: no prices)
  currency: string | null;
  unpriced: string[]; // resources it used that have no price
  cancelled?: number; // a finished run's tasks that neither succeeded nor failed
  failed_items?: number[]; // the failed tasks' indexes (the first 50): GET runs/ID/failures has their errors
  error?: string; // what its first failed task raised ("ValueError: bad 3"), '' when unknown
  warm?: string; // a run handed to a warm worker: "warm worker POD, started 0.07s after submit"
}

/** `GPU-h 0.52 · est. 1.93 USD` for a run that recorded its usage and used GPUs or has a cost; '' otherwise. */
export function usageText(run: IRun): string {
  const priced = run.cost !== null && run.cost !== undefined;
  if (run.gpu_hours === null || run.gpu_hours === undefined || (!run.gpu_hours && !priced)) {
    return '';
  }
  const parts = [`GPU-h ${run.gpu_hours.toFixed(2)}`];
  if (run.cost !== null && run.cost !== undefined) {
    const more = run.unpriced && run.unpriced.length ? '+' : '';
    parts.push(`est. ${run.cost.toFixed(2)} ${run.currency ?? ''}${more}`.trim());
  }
  return parts.join(' · ');
}

/** A failed item as GET /kjupyter/runs/ID/failures returns it. */
export interface IFailure {
  index: number;
  error: string;
}

export interface ICluster {
  name: string;
  backend: string;
  where: string;
  gpus: string[];
  default: boolean;
  current: boolean;
  reachable: boolean | null;
  detail: string;
  namespace?: string;
}

export interface IRunsFilter {
  cluster: string; // '' for every cluster
  status: string; // '' for every status, else a Phase
}

/** "4s", "2m 05s", "1h 02m": how long a run has been going (or went). */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  }
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, '0')}m`;
}

/** Seconds from the run's creation to its end, or to `now` (seconds since the epoch) while it runs. */
export function elapsed(run: IRun, now: number): number {
  if (!run.created) {
    return 0;
  }
  return (run.finished ?? now) - run.created;
}

/** The CSS class of a run's status badge. */
export function badgeClass(phase: string): string {
  const known = PHASES.includes(phase as Phase) ? phase.toLowerCase() : 'unknown';
  return `kj-badge kj-badge-${known}`;
}

/** "3/10 done · 1 failed" for a map, '' for a single call. */
export function progressText(run: IRun): string {
  if (run.kind !== 'map') {
    return '';
  }
  const parts = [`${run.succeeded}/${run.total} done`];
  if (run.running) {
    parts.push(`${run.running} running`);
  }
  if (run.failed) {
    parts.push(`${run.failed} failed`);
  }
  return parts.join(' · ');
}

export type SegmentKind = 'done' | 'failed' | 'cancelled' | 'running';

/** One part of a map's bar: its kind, how many tasks, and its width in percent (the widths sum to <= 100). */
export interface ISegment {
  kind: SegmentKind;
  count: number;
  percent: number;
}

/** A map's bar split into done / failed / cancelled / running, in that order; parts with no task are left out. */
export function progressSegments(run: IRun): ISegment[] {
  if (run.total <= 0) {
    return [];
  }
  const counts: [SegmentKind, number][] = [
    ['done', run.succeeded],
    ['failed', run.failed],
    ['cancelled', run.cancelled ?? 0],
    ['running', run.active ? run.running : 0]
  ];
  return counts
    .filter(([, n]) => n > 0)
    .map(([kind, count]) => ({ kind, count, percent: Math.round((Math.min(count, run.total) / run.total) * 1000) / 10 }));
}

/**
 * The one sentence under a run's name: what it raised (a failed call or map), else its diagnosis (why
 * it waits, why it was stopped), else ''.
 */
export function runSentence(run: IRun): string {
  return (run.error || run.diagnosis).trim();
}

/** "3 failed items: 1, 4, 7" (at most `shown` indexes, then "…"), '' when none failed. */
export function failedItemsText(run: IRun, shown = 8): string {
  const items = run.failed_items ?? [];
  if (!run.failed || run.kind !== 'map') {
    return '';
  }
  const listed = items.slice(0, shown).join(', ');
  const more = run.failed > Math.min(items.length, shown) ? ', …' : '';
  return `${run.failed} failed item${run.failed === 1 ? '' : 's'}` + (listed ? `: ${listed}${more}` : '');
}

/** A cluster in the picker: "gpu · team-a (kubernetes) · reachable" and the tooltip that says why not. */
export function clusterLabel(cluster: ICluster): { label: string; title: string; state: string } {
  const where = cluster.namespace ? `namespace ${cluster.namespace}` : cluster.backend;
  const state = cluster.reachable === true ? 'reachable' : cluster.reachable === false ? 'unreachable' : 'unknown';
  const shown = { reachable: 'reachable', unreachable: 'not reachable', unknown: 'not checked yet' }[state];
  const title = cluster.detail ? `${cluster.name}: ${cluster.detail}` : `${cluster.name} (${cluster.where})`;
  return { label: `${cluster.name} · ${where} · ${shown}`, title, state };
}

export const WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json';
export const FALLBACK_CLASS = 'kj-saved-run';

/**
 * The saved HTML of a kjupyter run widget's output (its `text/html`, which the kernel marks with a
 * `kjupyter-` class), or null for any other output: only kjupyter's widgets get the fallback.
 */
export function fallbackHtml(data: Record<string, unknown>): string | null {
  if (!(WIDGET_VIEW in data)) {
    return null;
  }
  const raw = data['text/html'];
  const html = Array.isArray(raw) ? raw.join('') : raw;
  if (typeof html !== 'string' || !/class=["'][^"']*\bkjupyter-/.test(html)) {
    return null;
  }
  return html;
}

/** Runs that pass the panel's cluster and status filters, in the order given. */
export function filterRuns(runs: IRun[], filter: IRunsFilter): IRun[] {
  return runs.filter(
    r =>
      (!filter.cluster || r.cluster === filter.cluster) &&
      (!filter.status || r.phase === filter.status)
  );
}

/** The clusters that appear in a list of runs, sorted, each once. */
export function clustersOf(runs: IRun[]): string[] {
  return Array.from(new Set(runs.map(r => r.cluster))).sort();
}

/**
 * How long to wait before the next conditional refresh of the runs list:
 * quick while something runs, slower as nothing changes, slowest when the tab is hidden.
 */
export function nextDelay(anyActive: boolean, unchanged: number, hidden: boolean): number {
  if (hidden) {
    return 30000;
  }
  if (anyActive) {
    return 1500;
  }
  return Math.min(15000, 3000 * 2 ** Math.min(unchanged, 3));
}

/**
 * Whether a JupyterLab command may launch runs (it runs code: a notebook cell, a console,
 * the Run menu), so the panel should look for new runs soon instead of at its idle pace.
 */
export function launchesRuns(commandId: string): boolean {
  const [scope, name = ''] = commandId.split(':', 2);
  return ['notebook', 'console', 'runmenu', 'fileeditor', 'kernelmenu'].includes(scope) && /(^|-)run(-|$)/.test(name);
}

/** A query string from the non-empty values of `params` ("" when none). */
export function queryString(params: Record<string, string | number | boolean | undefined>): string {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== '' && v !== false)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

/**
 * Turns the chunks of a streamed log into whole lines, keeping at most `limit` of them.
 * A chunk may end in the middle of a line: that part waits for the next chunk (or `end()`).
 */
export class LineBuffer {
  readonly limit: number;
  lines: string[] = [];
  dropped = 0;
  private _partial = '';

  constructor(limit = 5000) {
    this.limit = limit;
  }

  /** Adds a chunk; returns the lines it completed. */
  push(chunk: string): string[] {
    const text = this._partial + chunk;
    const pieces = text.split('\n');
    this._partial = pieces.pop() ?? '';
    this._keep(pieces);
    return pieces;
  }

  /** The stream ended: the unfinished line, if any, is a line too. */
  end(): string[] {
    if (!this._partial) {
      return [];
    }
    const last = [this._partial];
    this._partial = '';
    this._keep(last);
    return last;
  }

  private _keep(pieces: string[]): void {
    this.lines.push(...pieces);
    const extra = this.lines.length - this.limit;
    if (extra > 0) {
      this.lines.splice(0, extra);
      this.dropped += extra;
    }
  }
}

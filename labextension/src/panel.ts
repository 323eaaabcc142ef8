/**
 * The "Kubernetes runs" sidebar: the user's runs with live status badges, filters,
 * progress, the diagnosis of stuck runs, and per-run Log and Cancel buttons.
 *
 * It refreshes with conditional requests (If-None-Match -> 304): every 1.5 s while
 * a run is active or code that may start one was just run, backing off to 15 s when
 * nothing changes, 30 s when the tab is hidden; at once when the panel is shown.
 */
import { Widget } from '@lumino/widgets';

import { KjupyterAPI } from './api';
import {
  IRun,
  IRunsFilter,
  PHASES,
  badgeClass,
  clustersOf,
  elapsed,
  failedItemsText,
  filterRuns,
  formatDuration,
  nextDelay,
  progressSegments,
  progressText,
  runSentence,
  usageText
} from './model';

export interface IRunsPanelOptions {
  onLogs: (run: IRun) => void;
  onCancel: (run: IRun) => Promise<void>;
}

export class RunsPanel extends Widget {
  private _api: KjupyterAPI;
  private _options: IRunsPanelOptions;
  private _runs: IRun[] = [];
  private _errors: { cluster: string; message: string }[] = [];
  private _etag = '';
  private _unchanged = 0;
  private _timer = 0;
  private _ticker = 0;
  private _busyUntil = 0;
  private _filter: IRunsFilter = { cluster: '', status: '' };
  private _list: HTMLElement;
  private _clusterSelect: HTMLSelectElement;
  private _statusSelect: HTMLSelectElement;
  private _message: HTMLElement;
  private _openDetails = new Set<string>(); // rows whose failed items are shown stay open across refreshes

  constructor(api: KjupyterAPI, options: IRunsPanelOptions) {
    super();
    this._api = api;
    this._options = options;
    this.id = 'kjupyter-runs';
    this.title.caption = 'Kubernetes runs';
    this.addClass('kj-runs');

    const header = document.createElement('div');
    header.className = 'kj-runs-header';
    const heading = document.createElement('h2');
    heading.textContent = 'Kubernetes runs';
    const refresh = document.createElement('button');
    refresh.className = 'jp-Button jp-mod-minimal kj-refresh';
    refresh.title = 'Refresh';
    refresh.textContent = '↻';
    refresh.onclick = () => void this.refresh();
    header.append(heading, refresh);

    const filters = document.createElement('div');
    filters.className = 'kj-filters';
    this._clusterSelect = this._select('kj-filter-cluster', 'Cluster', [['', 'All clusters']], v => {
      this._filter.cluster = v;
      this._render();
    });
    this._statusSelect = this._select(
      'kj-filter-status',
      'Status',
      [['', 'All statuses'], ...PHASES.map(p => [p, p] as [string, string])],
      v => {
        this._filter.status = v;
        this._render();
      }
    );
    filters.append(this._clusterSelect, this._statusSelect);

    this._message = document.createElement('div');
    this._message.className = 'kj-message';
    this._list = document.createElement('ul');
    this._list.className = 'kj-run-list';
    this.node.append(header, filters, this._message, this._list);
    document.addEventListener('visibilitychange', this._onVisibility);
  }

  get runs(): IRun[] {
    return this._runs;
  }

  dispose(): void {
    window.clearTimeout(this._timer);
    window.clearInterval(this._ticker);
    document.removeEventListener('visibilitychange', this._onVisibility);
    super.dispose();
  }

  /**
   * Code that may start runs was just run: look soon, then keep the quick pace for a while
   * (the run may start some time after the cell began) instead of waiting out the idle back-off.
   */
  expectRuns(): void {
    this._busyUntil = Date.now() + 30000;
    this._unchanged = 0;
    window.clearTimeout(this._timer);
    this._timer = window.setTimeout(() => void this.refresh(), 300);
  }

  /** Fetches the runs now (conditionally) and schedules the next refresh. */
  async refresh(): Promise<void> {
    window.clearTimeout(this._timer);
    try {
      const result = await this._api.runs(this._etag);
      if (result === null) {
        this._unchanged += 1;
      } else {
        this._unchanged = 0;
        this._etag = result.etag;
        this._runs = result.listing.runs;
        this._errors = result.listing.errors;
        this._render();
      }
    } catch (error) {
      this._errors = [{ cluster: '', message: String(error) }];
      this._renderMessage();
    }
    if (!this.isDisposed) {
      const busy = this._runs.some(r => r.active) || Date.now() < this._busyUntil;
      const delay = nextDelay(busy, this._unchanged, document.hidden);
      this._timer = window.setTimeout(() => void this.refresh(), delay);
    }
  }

  protected onAfterAttach(): void {
    void this.refresh();
    this._ticker = window.setInterval(() => this._tick(), 1000);
  }

  protected onAfterShow(): void {
    void this.refresh(); // the user opened the panel: show what is there now
  }

  protected onBeforeDetach(): void {
    window.clearTimeout(this._timer);
    window.clearInterval(this._ticker);
  }

  private _onVisibility = (): void => {
    if (!document.hidden && this.isAttached) {
      void this.refresh();
    }
  };

  private _select(
    cls: string,
    label: string,
    options: [string, string][],
    onChange: (value: string) => void
  ): HTMLSelectElement {
    const select = document.createElement('select');
    select.className = `jp-mod-styled ${cls}`;
    select.setAttribute('aria-label', label);
    for (const [value, text] of options) {
      select.add(new Option(text, value));
    }
    select.onchange = () => onChange(select.value);
    return select;
  }

  private _renderMessage(): void {
    this._message.textContent = this._errors.map(e => e.message).join('\n');
    this._message.hidden = this._errors.length === 0;
  }

  private _render(): void {
    const clusters = clustersOf(this._runs);
    const current = this._clusterSelect.value;
    while (this._clusterSelect.options.length > 1) {
      this._clusterSelect.remove(1);
    }
    for (const name of clusters) {
      this._clusterSelect.add(new Option(name, name));
    }
    this._clusterSelect.value = clusters.includes(current) ? current : '';
    this._filter.cluster = this._clusterSelect.value;
    this._renderMessage();

    const shown = filterRuns(this._runs, this._filter);
    this._list.replaceChildren(...shown.map(run => this._item(run)));
    if (!shown.length) {
      const empty = document.createElement('li');
      empty.className = 'kj-empty';
      empty.textContent = this._runs.length
        ? 'No run matches these filters.'
        : 'No runs yet. Runs started with @remote or %%kube appear here.';
      this._list.appendChild(empty);
    }
  }

  /**
   * One compact row: badge, name and elapsed time on one line; the run id, cluster and buttons;
   * its diagnosis or error in one sentence; for a map, a bar split into done / failed / cancelled /
   * running with its counts, and the failed items (index and exception line) in its details.
   */
  private _item(run: IRun): HTMLElement {
    const li = document.createElement('li');
    li.className = 'kj-run';
    li.dataset.runId = run.run_id;
    li.dataset.phase = run.phase;

    const top = document.createElement('div');
    top.className = 'kj-run-top';
    const badge = document.createElement('span');
    badge.className = badgeClass(run.phase);
    badge.textContent = run.phase;
    const name = document.createElement('span');
    name.className = 'kj-run-name';
    name.textContent = run.function || run.run_id;
    name.title = `${run.run_id} on ${run.cluster}`;
    const time = document.createElement('span');
    time.className = 'kj-run-elapsed';
    time.dataset.created = String(run.created);
    time.dataset.finished = run.finished === null ? '' : String(run.finished);
    time.textContent = formatDuration(elapsed(run, Date.now() / 1000));
    top.append(badge, name, time);

    const second = document.createElement('div');
    second.className = 'kj-run-second';
    const meta = document.createElement('span');
    meta.className = 'kj-run-meta';
    const used = usageText(run);
    meta.textContent = `${run.run_id} · ${run.cluster}` + (used ? ` · ${used}` : '') + (run.warm ? ` · ${run.warm}` : '');
    meta.title = meta.textContent;
    second.append(meta, this._actions(run));
    li.append(top, second);

    const sentence = runSentence(run);
    if (sentence) {
      const diag = document.createElement('div');
      diag.className = 'kj-diagnosis';
      diag.dataset.phase = run.phase;
      diag.textContent = sentence;
      diag.title = sentence;
      li.appendChild(diag);
    }

    const progress = progressText(run);
    if (progress) {
      const bar = document.createElement('div');
      bar.className = 'kj-progress';
      for (const part of progressSegments(run)) {
        const seg = document.createElement('div');
        seg.className = `kj-progress-seg kj-seg-${part.kind}`;
        seg.dataset.kind = part.kind;
        seg.dataset.count = String(part.count);
        seg.style.width = `${part.percent}%`;
        seg.title = `${part.count} ${part.kind}`;
        bar.appendChild(seg);
      }
      const text = document.createElement('div');
      text.className = 'kj-progress-text';
      text.textContent = progress + (run.cancelled ? ` · ${run.cancelled} cancelled` : '');
      li.append(bar, text);
    }

    const failed = failedItemsText(run);
    if (failed) {
      li.appendChild(this._failures(run, failed));
    }
    return li;
  }

  private _actions(run: IRun): HTMLElement {
    const actions = document.createElement('span');
    actions.className = 'kj-run-actions';
    const logs = document.createElement('button');
    logs.className = 'jp-Button jp-mod-minimal kj-logs-button';
    logs.textContent = 'Log';
    logs.title = 'Open the log';
    logs.onclick = () => this._options.onLogs(run);
    actions.appendChild(logs);
    if (run.active) {
      const cancel = document.createElement('button');
      cancel.className = 'jp-Button jp-mod-minimal kj-cancel-button';
      cancel.textContent = 'Cancel';
      cancel.title = 'Cancel this run';
      cancel.onclick = async () => {
        cancel.disabled = true;
        try {
          await this._options.onCancel(run);
        } finally {
          cancel.disabled = false;
          void this.refresh();
        }
      };
      actions.appendChild(cancel);
    }
    return actions;
  }

  /** The failed items of a map, read from the server (their exception lines) when the details open. */
  private _failures(run: IRun, summaryText: string): HTMLElement {
    const details = document.createElement('details');
    details.className = 'kj-failures';
    const key = `${run.cluster}/${run.run_id}`;
    details.open = this._openDetails.has(key);
    const summary = document.createElement('summary');
    summary.textContent = summaryText;
    const list = document.createElement('ol');
    list.className = 'kj-failure-list';
    details.append(summary, list);
    const load = async () => {
      list.replaceChildren();
      list.dataset.state = 'loading';
      try {
        for (const f of await this._api.failures(run)) {
          const item = document.createElement('li');
          item.className = 'kj-failure';
          item.dataset.index = String(f.index);
          const index = document.createElement('span');
          index.className = 'kj-failure-index';
          index.textContent = `item ${f.index}`;
          const error = document.createElement('span');
          error.className = 'kj-failure-error';
          error.textContent = f.error;
          error.title = f.error;
          item.append(index, error);
          list.appendChild(item);
        }
        list.dataset.state = 'loaded';
      } catch (error) {
        const item = document.createElement('li');
        item.className = 'kj-failure kj-failure-unreadable';
        item.textContent = `The failed items cannot be read: ${error}`;
        list.appendChild(item);
        list.dataset.state = 'error';
      }
    };
    details.ontoggle = () => {
      if (details.open) {
        this._openDetails.add(key);
        void load();
      } else {
        this._openDetails.delete(key);
      }
    };
    return details;
  }

  private _tick(): void {
    const now = Date.now() / 1000;
    for (const el of Array.from(this._list.querySelectorAll<HTMLElement>('.kj-run-elapsed'))) {
      const created = Number(el.dataset.created);
      const finished = el.dataset.finished ? Number(el.dataset.finished) : null;
      if (finished === null && created) {
        el.textContent = formatDuration(now - created);
      }
    }
  }
}

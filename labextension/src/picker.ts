/**
 * The cluster picker: each configured cluster with its namespace (or backend) and whether it can
 * be reached. The list shows at once; reachability fills in when the server's probe answers (it
 * asks every cluster at once, waits a few seconds at most, and caches the answers), and a cluster
 * that cannot be reached says why, in a line under it and in its tooltip.
 */
import { Widget } from '@lumino/widgets';

import { IClusters } from './api';
import { ICluster, clusterLabel } from './model';

export class ClusterPicker extends Widget {
  private _rows = new Map<string, HTMLElement>();
  private _status: HTMLElement;

  constructor(data: IClusters) {
    super();
    this.addClass('kj-picker');
    const intro = document.createElement('p');
    intro.className = 'kj-picker-intro';
    intro.textContent =
      "Runs of this lab's kernels that name no cluster go here (cluster= and %kube use still win). " +
      `Now: ${data.current}${data.chosen_by ? `, ${data.chosen_by}` : ''}.`;
    const list = document.createElement('div');
    list.className = 'kj-picker-list';
    list.setAttribute('role', 'radiogroup');
    for (const cluster of data.clusters) {
      const row = this._row(cluster, cluster.name === data.current);
      this._rows.set(cluster.name, row);
      list.appendChild(row);
    }
    this._status = document.createElement('p');
    this._status.className = 'kj-picker-status';
    this._status.textContent = 'Checking which clusters can be reached…';
    this.node.append(intro, list, this._status);
  }

  /** The name of the chosen cluster (the dialog's value). */
  getValue(): string {
    const checked = this.node.querySelector<HTMLInputElement>('input[name="kj-cluster"]:checked');
    return checked ? checked.value : '';
  }

  /** The probe answered: fill in each row's reachability. */
  probed(data: IClusters): void {
    for (const cluster of data.clusters) {
      const row = this._rows.get(cluster.name);
      if (row) {
        this._fill(row, cluster);
      }
    }
    this._status.textContent = '';
    this._status.hidden = true;
  }

  /** The probe itself failed (the server could not be asked). */
  probeFailed(message: string): void {
    this._status.textContent = `Reachability unknown: ${message}`;
  }

  private _row(cluster: ICluster, checked: boolean): HTMLElement {
    const row = document.createElement('label');
    row.className = 'kj-picker-row';
    row.dataset.cluster = cluster.name;
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'kj-cluster';
    input.value = cluster.name;
    input.checked = checked;
    const text = document.createElement('span');
    text.className = 'kj-picker-text';
    const label = document.createElement('span');
    label.className = 'kj-picker-label';
    const why = document.createElement('span');
    why.className = 'kj-picker-why';
    text.append(label, why);
    row.append(input, text);
    this._fill(row, cluster);
    return row;
  }

  private _fill(row: HTMLElement, cluster: ICluster): void {
    const { label, title, state } = clusterLabel(cluster);
    row.dataset.reachable = state;
    row.title = title;
    row.querySelector('.kj-picker-label')!.textContent = label;
    const why = row.querySelector<HTMLElement>('.kj-picker-why')!;
    why.textContent = state === 'unreachable' || (state === 'unknown' && cluster.detail) ? cluster.detail : '';
    why.hidden = !why.textContent;
  }
}

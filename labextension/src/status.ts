/**
 * The status-bar item: the current cluster; a click switches it.
 */
import { Widget } from '@lumino/widgets';

export class ClusterStatus extends Widget {
  private _label: HTMLElement;

  constructor(onClick: () => void) {
    super();
    this.addClass('kj-status');
    this.node.title = "Cluster of this lab's kernels, for runs that name none (click to switch)";
    this._label = document.createElement('span');
    this._label.className = 'kj-status-label';
    this.node.append('☸ ', this._label);
    this.node.onclick = onClick;
    this.cluster = '…';
  }

  set cluster(name: string) {
    this._label.textContent = name;
    this.node.dataset.cluster = name;
  }

  /** What chose the cluster (the lab's status bar, KJUPYTER_CLUSTER, the configuration), in the tooltip. */
  set source(text: string) {
    this.node.title =
      "Cluster of this lab's kernels, for runs that name none" + (text ? `: ${text}` : '') + ' (click to switch)';
  }
}

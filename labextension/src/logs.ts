/**
 * A main-area view of one run's log that follows the run while it goes on.
 */
import { Widget } from '@lumino/widgets';

import { KjupyterAPI } from './api';
import { IRun, LineBuffer } from './model';

export class LogViewer extends Widget {
  readonly run: IRun;
  private _api: KjupyterAPI;
  private _abort = new AbortController();
  private _pre: HTMLPreElement;
  private _state: HTMLElement;
  private _buffer = new LineBuffer(5000);

  constructor(api: KjupyterAPI, run: IRun) {
    super();
    this._api = api;
    this.run = run;
    this.id = `kjupyter-logs-${run.run_id}`;
    this.title.label = `Log: ${run.run_id}`;
    this.title.caption = `Log of run ${run.run_id} on ${run.cluster}`;
    this.title.closable = true;
    this.addClass('kj-logs');
    const header = document.createElement('div');
    header.className = 'kj-logs-header';
    header.textContent = `${run.function || run.run_id} on ${run.cluster}`;
    this._state = document.createElement('span');
    this._state.className = 'kj-logs-state';
    header.appendChild(this._state);
    this._pre = document.createElement('pre');
    this._pre.className = 'kj-logs-text';
    this.node.append(header, this._pre);
    void this._follow();
  }

  dispose(): void {
    this._abort.abort();
    super.dispose();
  }

  private async _follow(): Promise<void> {
    const decoder = new TextDecoder();
    this._setState(this.run.active ? 'following' : 'loading');
    try {
      const reader = await this._api.logs(this.run, this.run.active, this._abort.signal);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        this._append(this._buffer.push(decoder.decode(value, { stream: true })));
      }
      this._append(this._buffer.end());
      this._setState('ended');
    } catch (error) {
      if (!this._abort.signal.aborted) {
        this._setState('error');
        this._append([`[kjupyter: ${error}]`]);
      }
    }
  }

  private _append(lines: string[]): void {
    if (!lines.length || this.isDisposed) {
      return;
    }
    const atBottom = this.node.scrollTop + this.node.clientHeight >= this.node.scrollHeight - 8;
    if (this._buffer.dropped && this._pre.childNodes.length > this._buffer.limit) {
      this._pre.textContent = this._buffer.lines.join('\n') + '\n';
    } else {
      this._pre.appendChild(document.createTextNode(lines.join('\n') + '\n'));
    }
    if (atBottom) {
      this.node.scrollTop = this.node.scrollHeight;
    }
  }

  private _setState(state: string): void {
    this._state.textContent = state;
    this._state.dataset.state = state;
    this.node.dataset.state = state;
  }
}

/**
 * The REST routes of kjupyter's server extension (/kjupyter/...), through Jupyter's
 * ServerConnection (token, XSRF and base URL handled there).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ICluster, IFailure, IRun, queryString } from './model';

export interface IClusters {
  clusters: ICluster[];
  current: string;
  default: string;
  chosen_by?: string;
}

export interface IRunsListing {
  runs: IRun[];
  errors: { cluster: string; message: string }[];
}

export class KjupyterError extends Error {}

export class KjupyterAPI {
  readonly settings = ServerConnection.makeSettings();

  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'kjupyter', ...parts.map(encodeURIComponent));
  }

  async fetch(path: string[], init: RequestInit = {}, query = ''): Promise<Response> {
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(this.url(...path) + query, init, this.settings);
    } catch (error) {
      throw new KjupyterError(`The Jupyter server cannot be reached: ${error}`);
    }
    if (!response.ok && response.status !== 304) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).message ?? message;
      } catch {
        // not JSON: keep the status line
      }
      throw new KjupyterError(message);
    }
    return response;
  }

  async clusters(probe = false): Promise<IClusters> {
    return (await this.fetch(['clusters'], {}, queryString({ probe: probe ? 1 : '' }))).json();
  }

  async setCluster(name: string): Promise<string> {
    const init = { method: 'PUT', body: JSON.stringify({ cluster: name }) };
    return (await (await this.fetch(['cluster'], init)).json()).current;
  }

  /** The runs, or null when they did not change since `etag` (304). */
  async runs(etag: string): Promise<{ listing: IRunsListing; etag: string } | null> {
    const headers: Record<string, string> = etag ? { 'If-None-Match': etag } : {};
    const response = await this.fetch(['runs'], { headers });
    if (response.status === 304) {
      return null;
    }
    return { listing: await response.json(), etag: response.headers.get('Etag') ?? '' };
  }

  /** A map's failed items with their exception lines (the first 20). */
  async failures(run: IRun): Promise<IFailure[]> {
    const query = queryString({ cluster: run.cluster });
    return (await (await this.fetch(['runs', run.run_id, 'failures'], {}, query)).json()).failures;
  }

  async cancel(run: IRun): Promise<{ cancelled: boolean; run: IRun }> {
    const query = queryString({ cluster: run.cluster });
    return (await this.fetch(['runs', run.run_id, 'cancel'], { method: 'POST' }, query)).json();
  }

  /** The log of a run as a stream of text chunks; it stays open while the run goes on if `follow`. */
  async logs(run: IRun, follow: boolean, signal: AbortSignal): Promise<ReadableStreamDefaultReader<Uint8Array>> {
    const query = queryString({ cluster: run.cluster, follow: follow ? 1 : '' });
    const response = await this.fetch(['runs', run.run_id, 'logs'], { signal }, query);
    if (!response.body) {
      throw new KjupyterError('This browser cannot stream responses.');
    }
    return response.body.getReader();
  }
}

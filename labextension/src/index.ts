/**
 * kjupyter's JupyterLab extension: the "Kubernetes runs" sidebar, a log viewer,
 * the current-cluster status-bar item, and their commands in the palette.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, MainAreaWidget, Notification, showDialog } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { KjupyterAPI } from './api';
import { registerFallback } from './fallback';
import { LogViewer } from './logs';
import { IRun, launchesRuns } from './model';
import { RunsPanel } from './panel';
import { ClusterPicker } from './picker';
import { ClusterStatus } from './status';

const runsIcon = new LabIcon({
  name: 'kjupyter:runs',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">' +
    '<g class="jp-icon3" fill="#616161"><path d="M12 2 3.5 6.5v11L12 22l8.5-4.5v-11L12 2zm0 2.3 6.5 3.4v8.6L12 19.7' +
    'l-6.5-3.4V7.7L12 4.3z"/><circle cx="12" cy="12" r="2.2"/><path d="M11.2 5.5h1.6v4h-1.6zM11.2 14.5h1.6v4h-1.6z' +
    'M5.9 8.6l.8-1.4 3.5 2-.8 1.4zM13.8 13.2l.8-1.4 3.5 2-.8 1.4zM5.9 15.4l3.5-2 .8 1.4-3.5 2zM13.8 10.8l3.5-2' +
    ' .8 1.4-3.5 2z"/></g></svg>'
});

namespace CommandIDs {
  export const openRuns = 'kjupyter:open-runs';
  export const refresh = 'kjupyter:refresh-runs';
  export const switchCluster = 'kjupyter:switch-cluster';
  export const openLogs = 'kjupyter:open-logs';
  export const cancelRun = 'kjupyter:cancel-run';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'kjupyter:plugin',
  description:
    "Kubernetes runs of kjupyter: status, logs, cancel, the cluster of this lab's kernels, and saved runs " +
    'shown when their widget is gone.',
  autoStart: true,
  optional: [ICommandPalette, IStatusBar, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    restorer: ILayoutRestorer | null
  ) => {
    const api = new KjupyterAPI();
    registerFallback(app);
    const logViews = new Map<string, MainAreaWidget<LogViewer>>();

    const openLogs = (run: IRun) => {
      let view = logViews.get(run.run_id);
      if (!view || view.isDisposed) {
        view = new MainAreaWidget({ content: new LogViewer(api, run) });
        view.id = `kjupyter-logs-area-${run.run_id}`;
        view.title.label = `Log: ${run.function || run.run_id}`;
        view.title.icon = runsIcon;
        view.title.closable = true;
        logViews.set(run.run_id, view);
        app.shell.add(view, 'main', { mode: 'split-right' });
      }
      app.shell.activateById(view.id);
    };

    const cancelRun = async (run: IRun) => {
      const answer = await showDialog({
        title: 'Cancel this run?',
        body: `${run.function || run.run_id} (${run.run_id}) on ${run.cluster} will be stopped and its Job deleted.`,
        buttons: [Dialog.cancelButton({ label: 'Keep running' }), Dialog.warnButton({ label: 'Cancel run' })]
      });
      if (!answer.button.accept) {
        return;
      }
      try {
        const result = await api.cancel(run);
        Notification.info(
          result.cancelled ? `Run ${run.run_id} cancelled.` : `Run ${run.run_id} had already finished.`,
          { autoClose: 3000 }
        );
      } catch (error) {
        Notification.error(`Cannot cancel ${run.run_id}: ${error}`);
      }
    };

    const panel = new RunsPanel(api, { onLogs: openLogs, onCancel: cancelRun });
    panel.title.icon = runsIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'kjupyter-runs');
    // A cell (or console, or Run menu item) that was just run may have started runs.
    app.commands.commandExecuted.connect((_, { id, result }) => {
      if (launchesRuns(id)) {
        panel.expectRuns();
        const again = () => panel.expectRuns();
        void Promise.resolve(result).then(again, again);
      }
    });

    const status = new ClusterStatus(() => void app.commands.execute(CommandIDs.switchCluster));
    const showCurrent = async () => {
      try {
        const data = await api.clusters();
        status.cluster = data.current;
        status.source = data.chosen_by ?? '';
      } catch (error) {
        status.cluster = '?';
        status.source = `the server cannot say (${error})`;
      }
    };
    void showCurrent();
    statusBar?.registerStatusItem('kjupyter:cluster', { item: status, align: 'left', rank: 50 });

    const findRun = (args: any): IRun | undefined => panel.runs.find(r => r.run_id === args.run_id);

    app.commands.addCommand(CommandIDs.openRuns, {
      label: 'Show Kubernetes Runs',
      icon: runsIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Kubernetes Runs',
      execute: () => panel.refresh()
    });
    app.commands.addCommand(CommandIDs.switchCluster, {
      label: 'Switch Kubernetes Cluster…',
      execute: async () => {
        let data;
        try {
          data = await api.clusters();
        } catch (error) {
          Notification.error(`Cannot list the clusters: ${error}`);
          return;
        }
        const picker = new ClusterPicker(data);
        api.clusters(true).then(
          probed => picker.probed(probed),
          error => picker.probeFailed(String(error))
        );
        const result = await showDialog({
          title: "Kubernetes cluster for this lab's kernels",
          body: picker,
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Use this cluster' })]
        });
        if (!result.button.accept || !result.value) {
          return;
        }
        try {
          status.cluster = await api.setCluster(result.value);
          status.source = "chosen in this lab's status bar";
          Notification.info(
            `Runs of this lab's kernels that name no cluster now go to ${result.value} (cluster= and %kube use still win).`,
            { autoClose: 3000 }
          );
        } catch (error) {
          Notification.error(String(error));
        }
      }
    });
    app.commands.addCommand(CommandIDs.openLogs, {
      label: 'Open Run Log',
      isEnabled: args => !!findRun(args),
      execute: args => {
        const run = findRun(args);
        if (run) {
          openLogs(run);
        }
      }
    });
    app.commands.addCommand(CommandIDs.cancelRun, {
      label: 'Cancel Run…',
      isEnabled: args => !!findRun(args)?.active,
      execute: args => {
        const run = findRun(args);
        return run ? cancelRun(run) : undefined;
      }
    });
    for (const command of [CommandIDs.openRuns, CommandIDs.refresh, CommandIDs.switchCluster]) {
      palette?.addItem({ command, category: 'Kubernetes' });
    }
  }
};

export default plugin;

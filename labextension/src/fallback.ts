/**
 * A kjupyter run widget whose model is gone shows the run as it was saved, not
 * "Error displaying widget: model not found".
 *
 * The run widget's output carries, beside the widget view, a `text/html` fallback that the
 * kernel keeps current (summary, failures, the last log lines: kjupyter/notebook/text_view.py,
 * `<pre class='kjupyter-report'>`). JupyterLab prefers the widget view (jupyterlab-manager's
 * renderer, rank -10). That renderer shows "Loading widget..." until the notebook's widget
 * manager is there, then the view, or "Error displaying widget: model not found" when the
 * manager has restored its models and this one is not among them (a reopened notebook after a
 * kernel restart); and it hides itself when its view is disposed (the kernel restarted while the
 * notebook was open).
 *
 * How: a document-widget extension for notebooks wraps each notebook's own rendermime registry
 * (`createRenderer`), so every widget-view renderer it makes, jupyterlab-manager's own, gets three
 * small hooks on that one instance, for kjupyter's outputs only: while no view is shown, the
 * saved HTML (sanitized) is shown in its place; when a view is added, it replaces it; when the view
 * goes away, the saved HTML comes back. Other widgets' outputs are left as they are. The renderer's
 * manager handling (set later by jupyterlab-manager) is untouched, so a live run still shows its
 * live widget.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';

import { FALLBACK_CLASS, WIDGET_VIEW, fallbackHtml } from './model';

interface IMimeModel {
  data: Record<string, unknown>;
}

interface IRenderer {
  node: HTMLElement;
  renderModel(model: IMimeModel): Promise<void>;
  hide(): void;
  show(): void;
  widgets?: ReadonlyArray<unknown>;
}

interface IRegistry {
  createRenderer(mimeType: string): IRenderer;
  sanitizer: { sanitize(html: string): string };
}

const PATCHED = Symbol('kjupyter-fallback');

/** Shows `html` in the renderer's node, in place of its text ("Loading widget...", "model not found"). */
function showFallback(renderer: IRenderer, html: string): void {
  if (renderer.widgets && renderer.widgets.length > 0) {
    return; // a live view is shown: it wins
  }
  const box = document.createElement('div');
  box.className = FALLBACK_CLASS;
  box.title = 'The run as it was saved: its widget is gone (the kernel restarted). Run the cell again for a live view.';
  box.innerHTML = html;
  renderer.node.replaceChildren(box);
  renderer.node.classList.remove('jupyter-widgets');
  renderer.show();
}

/** Hooks one widget-view renderer made for a kjupyter output (see the module comment). */
function hook(renderer: IRenderer, registry: IRegistry): void {
  const renderModel = renderer.renderModel.bind(renderer);
  const hide = renderer.hide.bind(renderer);
  let saved = '';
  renderer.renderModel = async (model: IMimeModel) => {
    const html = fallbackHtml(model.data);
    saved = html === null ? '' : registry.sanitizer.sanitize(html);
    const pending = renderModel(model); // (its text is set before its first await)
    if (saved) {
      showFallback(renderer, saved);
    }
    await pending;
    if (saved) {
      showFallback(renderer, saved); // no view came (no model, no manager yet, or an error)
    }
  };
  renderer.hide = () => {
    if (saved) {
      showFallback(renderer, saved); // its view was disposed (a kernel restart): the saved run instead
      return;
    }
    hide();
  };
}

/** Wraps a notebook's rendermime registry so that its widget-view renderers are hooked. */
export function wrapRegistry(registry: IRegistry): void {
  const target = registry as IRegistry & { [PATCHED]?: boolean };
  if (target[PATCHED]) {
    return;
  }
  target[PATCHED] = true;
  const createRenderer = registry.createRenderer.bind(registry);
  registry.createRenderer = (mimeType: string) => {
    const renderer = createRenderer(mimeType);
    if (mimeType === WIDGET_VIEW) {
      hook(renderer, registry);
    }
    return renderer;
  };
}

/** Registers the notebook extension that wraps each notebook's registry as the notebook is created. */
export function registerFallback(app: JupyterFrontEnd): void {
  app.docRegistry.addWidgetExtension('Notebook', {
    createNew: (panel: any) => {
      const registry = panel?.content?.rendermime;
      if (!registry || typeof registry.createRenderer !== 'function') {
        console.warn('kjupyter: this notebook has no rendermime registry; saved runs show as the widget manager says.');
        return;
      }
      wrapRegistry(registry as IRegistry);
    }
  });
}

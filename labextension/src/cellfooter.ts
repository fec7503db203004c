/**
 * The stats footer drawn under each sandboxed cell of one notebook (the way
 * jupyterlab-execute-time draws its line under a cell, from the cell's
 * metadata), in JupyterLab 4 and Notebook 7.
 *
 *   execute_request (sent)  ->  its msg_id is remembered with the cell's id
 *   execute_reply (recv)    ->  its metadata's "sandbox_kernel" entry goes into
 *                               that cell's metadata (the sandbox kernel)
 *   panel cell_end (magics) ->  the row's entry goes into the cell of its cell_id
 *   a reply with no entry   ->  when no cell_end came for the cell either, the
 *                               cell did not run in a container this time (a
 *                               %container line, plain Python): its last
 *                               footer is removed, it is no longer the last run's
 *   a cell's metadata       ->  the footer is drawn, or removed
 *
 * Drawing from the metadata alone is what makes a reopened notebook show
 * the last run's footer.  Only the place "beside" is drawn and kept; with
 * "output" or "off" the entry is removed from the cell's metadata.
 *
 * The footer is a node of its own inside the cell's node, before the cell's
 * (empty) footer widget: it wraps to the cell's width (style/base.css) and
 * uses only the theme's variables.
 */
import { Cell, ICellModel } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';

import { besideOfMetadata, footerParts, footerText, IBeside, METADATA_KEY, parseBeside } from './footer';

export const FOOTER_CLASS = 'jp-SandboxFooter';
/** execute_requests remembered while their replies are awaited. */
const PENDING_LIMIT = 1000;

/** The footer's node for one entry: a part per figure, each wrapping as a whole. */
export function renderFooter(beside: IBeside): HTMLElement {
  const node = document.createElement('div');
  node.className = FOOTER_CLASS;
  node.setAttribute('data-status', beside.stats.cell.status ?? 'unknown');
  node.title = footerText(beside);
  for (const [label, text] of footerParts(beside)) {
    const part = document.createElement('span');
    part.className = `${FOOTER_CLASS}-part`;
    part.setAttribute('data-label', label);
    const name = document.createElement('b');
    name.textContent = label;
    part.appendChild(name);
    part.appendChild(document.createTextNode(` ${text}`));
    node.appendChild(part);
  }
  return node;
}

export class CellFooters {
  constructor(readonly panel: NotebookPanel) {
    panel.sessionContext.kernelChanged.connect(this._onKernelChanged, this);
    this._watchKernel(panel.sessionContext.session?.kernel ?? null);
    void panel.context.ready.then(() => {
      if (this._disposed) {
        return;
      }
      const cells = panel.content.model?.cells;
      if (cells) {
        cells.changed.connect(this._onCellsChanged, this);
        for (let i = 0; i < cells.length; i++) {
          this._watchCell(cells.get(i));
        }
      }
    });
  }

  /** Keep a cell row of the panel's cell_end (the magics) in its cell. */
  keepRecord(cellId: string | null, beside: IBeside | null): void {
    if (cellId !== null && beside !== null) {
      this._kept.add(cellId);
      this._keep(cellId, beside);
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._watchKernel(null);
    this.panel.sessionContext.kernelChanged.disconnect(this._onKernelChanged, this);
    this.panel.content.model?.cells.changed.disconnect(this._onCellsChanged, this);
    this._watched.forEach(model => model.metadataChanged.disconnect(this._onMetadata, this));
    this._watched.clear();
  }

  private _onKernelChanged(
    _: unknown,
    change: { newValue: Kernel.IKernelConnection | null }
  ): void {
    this._watchKernel(change.newValue);
  }

  private _watchKernel(kernel: Kernel.IKernelConnection | null): void {
    if (this._kernel && !this._kernel.isDisposed) {
      this._kernel.anyMessage.disconnect(this._onMessage, this);
    }
    this._kernel = kernel;
    this._pending.clear();
    if (kernel) {
      kernel.anyMessage.connect(this._onMessage, this);
    }
  }

  private _onMessage(_: Kernel.IKernelConnection, args: Kernel.IAnyMessageArgs): void {
    const msg = args.msg;
    if (args.direction === 'send' && msg.header.msg_type === 'execute_request') {
      const cellId = (msg.metadata as { cellId?: unknown }).cellId;
      if (typeof cellId === 'string') {
        this._pending.set(msg.header.msg_id, cellId);
        this._kept.delete(cellId);
        this._forgetOldest();
      }
      return;
    }
    if (args.direction !== 'recv' || msg.header.msg_type !== 'execute_reply') {
      return;
    }
    const parentId = (msg.parent_header as KernelMessage.IHeader).msg_id;
    const cellId = this._pending.get(parentId);
    this._pending.delete(parentId);
    const beside = besideOfMetadata(msg.metadata);
    if (cellId === undefined) {
      return;
    }
    if (beside !== null) {
      this._keep(cellId, beside);
    } else if (!this._kept.has(cellId)) {
      this._forget(cellId);
    }
    this._kept.delete(cellId);
  }

  /** The cell's footer of an earlier run goes: this run had none. */
  private _forget(cellId: string): void {
    const model = this._modelOf(cellId);
    if (model && model.getMetadata(METADATA_KEY) !== undefined) {
      model.deleteMetadata(METADATA_KEY);
    }
  }

  private _forgetOldest(): void {
    while (this._pending.size > PENDING_LIMIT) {
      this._pending.delete(this._pending.keys().next().value as string);
    }
  }

  /** The entry into the cell's metadata (beside), or out of it (output, off). */
  private _keep(cellId: string, beside: IBeside): void {
    const model = this._modelOf(cellId);
    if (!model) {
      return;
    }
    if (beside.footer === 'beside') {
      model.setMetadata(METADATA_KEY, beside.raw);
    } else {
      this._forget(cellId);
    }
  }

  private _modelOf(cellId: string): ICellModel | null {
    const cells = this.panel.content.model?.cells;
    if (!cells) {
      return null;
    }
    for (let i = 0; i < cells.length; i++) {
      if (cells.get(i).id === cellId) {
        return cells.get(i);
      }
    }
    return null;
  }

  private _onCellsChanged(_: unknown, change: { newValues: ICellModel[]; oldValues: ICellModel[] }): void {
    change.oldValues.forEach(model => {
      model.metadataChanged.disconnect(this._onMetadata, this);
      this._watched.delete(model.id);
    });
    change.newValues.forEach(model => this._watchCell(model));
  }

  private _watchCell(model: ICellModel): void {
    if (model.type !== 'code') {
      return;
    }
    if (!this._watched.has(model.id)) {
      this._watched.set(model.id, model);
      model.metadataChanged.connect(this._onMetadata, this);
    }
    // the widget of a new model may come after this signal: draw on the next frame too
    this._draw(model);
    requestAnimationFrame(() => this._draw(model));
  }

  private _onMetadata(model: ICellModel): void {
    this._draw(model);
  }

  private _draw(model: ICellModel): void {
    const cell = this.panel.content.widgets.find((widget: Cell) => widget.model === model);
    if (!cell || this._disposed) {
      return;
    }
    const old = cell.node.querySelector(`:scope > .${FOOTER_CLASS}`);
    const beside = parseBeside(model.getMetadata(METADATA_KEY));
    if (beside === null || beside.footer !== 'beside') {
      old?.remove();
      return;
    }
    const node = renderFooter(beside);
    if (old) {
      old.replaceWith(node);
    } else {
      cell.node.insertBefore(node, cell.node.querySelector(':scope > .jp-CellFooter'));
    }
  }

  private _disposed = false;
  private _kernel: Kernel.IKernelConnection | null = null;
  private _pending = new Map<string, string>();
  /** Cells whose footer came by the panel's cell_end during their current run. */
  private _kept = new Set<string>();
  private _watched = new Map<string, ICellModel>();
}

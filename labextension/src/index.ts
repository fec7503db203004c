/**
 * sandbox-kernel-panel: the side panel of sandbox-kernel, in the right
 * sidebar of JupyterLab 4 and of Notebook 7.
 *
 * Every notebook gets a KernelStatsConnection (its kernel's comm and its
 * StatsModel) as it opens, so that a notebook in the background keeps its
 * cell rows; the panel shows the current notebook's.  The first time the
 * current notebook turns out to be sandboxed, the panel opens itself if the
 * right sidebar is closed (once per page).  Each notebook also gets its
 * CellFooters: the stats footer under each sandboxed cell (cellfooter.ts).
 * When a kernel the sandbox provisioner started dies (out of memory...), a
 * JupyterLab notification says so in the provisioner's plain words, besides
 * the panel: JupyterLab's own dialog only says that the kernel died.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { CellFooters } from './cellfooter';
import { KernelStatsConnection } from './connection';
import { besideOfRecord } from './footer';
import { ICellRecord } from './model';
import { sandboxIcon } from './icon';
import { PANEL_ID, SandboxStatsPanel } from './panel';

const COMMAND_SHOW = 'sandbox-kernel:show-panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'sandbox-kernel-panel:plugin',
  description: 'The sandbox session\'s live cgroup stats next to the notebook.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer, IMainMenu],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    mainMenu: IMainMenu | null
  ) => {
    const panel = new SandboxStatsPanel();
    panel.title.icon = sandboxIcon;
    app.shell.add(panel, 'right', { rank: 650 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    const connections = new Map<NotebookPanel, KernelStatsConnection>();
    let openedItself = false;

    const show = (notebook: NotebookPanel | null) => {
      const connection = notebook ? connections.get(notebook) : undefined;
      if (!notebook || !connection) {
        panel.setTarget(null);
        return;
      }
      panel.setTarget({
        title: notebook.title.label,
        connection,
        scrollToCell: record => scrollToCell(notebook, record)
      });
    };

    const openOnce = (notebook: NotebookPanel) => {
      const shell = app.shell as unknown as { rightCollapsed?: boolean };
      if (openedItself || tracker.currentWidget !== notebook || shell.rightCollapsed === false) {
        return;
      }
      openedItself = true;
      app.shell.activateById(PANEL_ID);
    };

    tracker.widgetAdded.connect((_, notebook) => {
      const connection = new KernelStatsConnection(notebook.sessionContext);
      connections.set(notebook, connection);
      connection.sandboxed.connect(() => openOnce(notebook));
      connection.died.connect((_, death) => {
        Notification.error(`${notebook.title.label}: ${death.message}`, {
          autoClose: false,
          actions: [
            {
              label: 'Show Sandbox Stats',
              callback: () => app.shell.activateById(PANEL_ID)
            }
          ]
        });
      });
      // the footer under each sandboxed cell: the sandbox kernel's from its
      // replies (CellFooters), the magics' from the panel's cell_end
      const footers = new CellFooters(notebook);
      connection.cellEnded.connect((_, ended) => {
        if (ended.kernel === 'magics') {
          const record = ended.record as { cell_id?: unknown } | null;
          const cellId = typeof record?.cell_id === 'string' ? record.cell_id : null;
          footers.keepRecord(cellId, besideOfRecord(record));
        }
      });
      notebook.title.changed.connect(() => {
        if (tracker.currentWidget === notebook) {
          show(notebook);
        }
      });
      notebook.disposed.connect(() => {
        footers.dispose();
        connection.dispose();
        connections.delete(notebook);
      });
      if (tracker.currentWidget === notebook) {
        show(notebook);
      }
    });
    tracker.currentChanged.connect((_, notebook) => show(notebook));
    show(tracker.currentWidget);

    app.commands.addCommand(COMMAND_SHOW, {
      label: 'Show Sandbox Stats',
      caption: 'The container\'s memory, CPU and processes, and what each cell cost',
      icon: sandboxIcon,
      execute: () => app.shell.activateById(PANEL_ID)
    });
    if (palette) {
      palette.addItem({ command: COMMAND_SHOW, category: 'Sandbox' });
    }
    if (mainMenu) {
      // View menu: in Notebook 7 the right sidebar is closed and has no tabs
      mainMenu.viewMenu.addGroup([{ command: COMMAND_SHOW }], 60);
    }
  }
};

/**
 * Make the row's cell the active one and scroll to it: by the cell id the
 * kernel saw in the execute request, else by the execution count.
 */
function scrollToCell(notebook: NotebookPanel, record: ICellRecord): boolean {
  const content = notebook.content;
  const cells = content.widgets;
  let index = record.cellId === null ? -1 : cells.findIndex(cell => cell.model.id === record.cellId);
  if (index < 0 && record.executionCount !== null) {
    index = cells.findIndex(
      cell =>
        cell.model.type === 'code' &&
        (cell.model as ICodeCellModel).executionCount === record.executionCount
    );
  }
  if (index < 0) {
    return false;
  }
  content.activeCellIndex = index;
  void content.scrollToCell(cells[index], 'center');
  return true;
}

export default plugin;

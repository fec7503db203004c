/**
 * The side panel: the active notebook's sandbox sessions against their
 * limits, live, and what each cell cost.
 *
 *   header      notebook name; "not sandboxed" for other kernels
 *   per session name, image, network, state, uptime, limits
 *               gauges: memory current and peak / limit, CPU / cpus, pids / limit
 *               sparklines of the last minutes (inline SVG)
 *   table       one row per cell, newest first; a click scrolls to the cell
 *               (a kernel the sandbox provisioner started, whose figures come
 *               from the server's endpoint: no table, and a note saying why)
 *   deaths      the provisioned kernel's deaths in plain words ("the R kernel
 *               ran out of memory at the 1 GiB limit (peak 1 GiB)")
 *
 * Plain DOM, redrawn on the model's `changed` (coalesced by Lumino's update
 * request) and once a second while shown, for the uptime and the running
 * cell's clock.  Elements carry data-* attributes with the raw figures
 * (bytes, seconds; "null" when unknown), for tests and for tooltips.
 */
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { KernelStatsConnection } from './connection';
import {
  cpuTotal,
  formatBytes,
  formatCores,
  formatCount,
  formatG,
  formatLimits,
  formatRefusals,
  formatSeconds,
  formatUptime,
  NA
} from './format';
import { ICellRecord, IDeath, IPolicy, IRunning, ISample, ISessionView, StatsModel } from './model';

export const PANEL_ID = 'sandbox-kernel-stats';
/** The sparklines' window. */
export const SPARKLINE_SECONDS = 300;

/** What the panel shows: a notebook and its connection, or nothing. */
export interface IPanelTarget {
  title: string;
  connection: KernelStatsConnection;
  /** Scroll the notebook to this row's cell; false when it is not there. */
  scrollToCell: (record: ICellRecord) => boolean;
}

export class SandboxStatsPanel extends Widget {
  constructor() {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-SandboxStats');
    this.title.caption = 'Sandbox: container stats of this notebook';
    this.title.label = 'Sandbox';
    this.node.tabIndex = -1;
  }

  get target(): IPanelTarget | null {
    return this._target;
  }

  setTarget(target: IPanelTarget | null): void {
    if (target && this._target && target.connection === this._target.connection) {
      // the same notebook (its title changed): keep the table as it is
      this._target = target;
      this.update();
      return;
    }
    if (this._target) {
      this._target.connection.model.changed.disconnect(this._onChanged, this);
      this._target.connection.probeEnded.disconnect(this._onChanged, this);
    }
    this._target = target;
    this._tableKey = '-';
    if (target) {
      target.connection.model.changed.connect(this._onChanged, this);
      target.connection.probeEnded.connect(this._onChanged, this);
      target.connection.request();
    }
    this.update();
  }

  dispose(): void {
    this.setTarget(null);
    this._stopClock();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    this._startClock();
    this.update();
  }

  protected onAfterHide(msg: Message): void {
    this._stopClock();
  }

  protected onBeforeDetach(msg: Message): void {
    this._stopClock();
  }

  protected onUpdateRequest(msg: Message): void {
    if (this.isVisible || !this.node.firstChild) {
      this._render();
    }
  }

  private _onChanged(): void {
    this.update();
  }

  private _startClock(): void {
    if (this._clock === 0) {
      this._clock = window.setInterval(() => {
        const model = this._target?.connection.model;
        if (model && model.connected && model.sessions.length > 0) {
          this.update();
        }
      }, 1000);
    }
  }

  private _stopClock(): void {
    if (this._clock !== 0) {
      window.clearInterval(this._clock);
      this._clock = 0;
    }
  }

  // -- drawing ------------------------------------------------------------------

  /**
   * Three boxes, made once: header, sessions (redrawn each time) and table
   * (redrawn only when its rows change, so that a click on a row is never
   * lost to a redraw under the pointer).
   */
  private _render(): void {
    if (!this._boxes) {
      this._boxes = [el('div', 'sbk-top'), el('div', 'sbk-body'), el('div', 'sbk-table-box')];
      this.node.replaceChildren(...this._boxes);
    }
    const [top, body, tableBox] = this._boxes;
    const target = this._target;
    top.replaceChildren(header(target ? target.title : 'No notebook'));
    if (!target) {
      body.replaceChildren(note('Open a notebook to see its container.'));
      this._setTable(tableBox, '', null);
      return;
    }
    const { connection } = target;
    const model = connection.model;
    if (!model.connected) {
      body.replaceChildren(
        !connection.hasKernel
          ? note('No kernel yet.', 'sbk-no-kernel')
          : connection.probing
            ? note('Asking the kernel…', 'sbk-probing')
            : notSandboxed(connection.kernelDisplayName)
      );
      this._setTable(tableBox, '', null);
      return;
    }
    const now = Date.now();
    const parts: HTMLElement[] = [];
    if (model.policy) {
      parts.push(policyNote(model.policy));
    }
    if (model.deaths.length > 0) {
      parts.push(deathsBox(model.deaths));
    }
    if (model.sessions.length === 0) {
      parts.push(
        note(
          'The sandbox is loaded; no container yet. A %%container cell starts one.',
          'sbk-no-session'
        )
      );
    }
    for (const view of model.sessions) {
      parts.push(sessionSection(view, model.running, now, !model.perCell));
    }
    body.replaceChildren(...parts);
    if (!model.perCell) {
      this._setTable(tableBox, 'whole-kernel', noPerCellTable(model.language));
      return;
    }
    const key = tableKey(model);
    if (key !== this._tableKey) {
      this._setTable(
        tableBox,
        key,
        cellTable(model.cells, model.running, record => this._onRowClick(record))
      );
    }
    const elapsed = tableBox.querySelector('.sbk-row-running .sbk-elapsed');
    if (elapsed && model.running) {
      elapsed.textContent = formatSeconds(liveElapsed(model, now));
    }
  }

  private _setTable(box: HTMLElement, key: string, table: HTMLElement | null): void {
    this._tableKey = key;
    box.replaceChildren(...(table ? [table] : []));
  }

  private _onRowClick(record: ICellRecord): void {
    if (this._target && !this._target.scrollToCell(record)) {
      this.node.querySelector('.sbk-cells')?.setAttribute('data-missing', String(record.cellId));
    }
  }

  private _target: IPanelTarget | null = null;
  private _clock = 0;
  private _tableKey = '';
  private _boxes: HTMLElement[] | null = null;
}

function header(title: string): HTMLElement {
  const node = el('div', 'sbk-header');
  node.append(el('span', 'sbk-title', 'Sandbox'), el('span', 'sbk-notebook', title));
  return node;
}

/** What the table shows: it is redrawn only when this changes. */
function tableKey(model: StatsModel): string {
  const cells = model.cells;
  const last = cells[cells.length - 1];
  const running = model.running;
  return [
    cells.length,
    last ? `${last.cellId}:${last.executionCount}:${last.stats.cell.status}` : '',
    running ? `${running.cellId}:${running.executionCount}` : '',
    new Set(cells.map(c => c.session)).size
  ].join('|');
}

// -- pieces (pure functions of the model's data) ----------------------------------

function el(tag: string, className?: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function raw(value: number | null): string {
  return value === null ? 'null' : String(value);
}

function note(text: string, className = ''): HTMLElement {
  return el('p', `sbk-note ${className}`.trim(), text);
}

/** What the notebook may ask of the host: the kernel's own words, its preset named. */
function policyNote(policy: IPolicy): HTMLElement {
  const node = el('p', 'sbk-note sbk-policy');
  node.dataset.policy = policy.name;
  node.append(
    el('strong', 'sbk-policy-label', 'policy: '),
    el('span', 'sbk-policy-text', policy.text)
  );
  return node;
}

function notSandboxed(kernelName: string): HTMLElement {
  const box = el('div', 'sbk-not-sandboxed');
  box.append(
    el('strong', 'sbk-not-sandboxed-label', 'not sandboxed'),
    el(
      'p',
      'sbk-note',
      `${kernelName || 'This kernel'} runs cells on this machine, without container limits. ` +
        'Choose the "Python 3 (sandbox)" kernel, or run %load_ext sandbox_kernel and ' +
        'start a cell with %%container; for other languages, an admin can wrap the kernel: ' +
        'sandbox-kernel install --wrap <kernelspec>.'
    )
  );
  return box;
}

function liveUptime(view: ISessionView, now: number): number | null {
  const uptime = view.entry.uptime;
  if (uptime === null || view.entry.state !== 'running') {
    return uptime;
  }
  return uptime + Math.max(0, now - view.receivedAt) / 1000;
}

/**
 * The kernel's deaths, newest first (the last few): the provisioner's words,
 * and when.  A restart follows each; the gauges show the new container.
 */
export const DEATHS_SHOWN = 5;

function deathsBox(deaths: IDeath[]): HTMLElement {
  const box = el('div', 'sbk-deaths');
  box.setAttribute('role', 'alert');
  box.style.color = 'var(--jp-error-color1)';
  for (const death of deaths.slice(-DEATHS_SHOWN).reverse()) {
    const line = el('p', 'sbk-death');
    line.dataset.reason = death.reason;
    line.dataset.at = String(death.at);
    const when = new Date(death.at * 1000).toLocaleTimeString();
    line.append(el('strong', 'sbk-death-when', `${when}: `), el('span', 'sbk-death-text', death.message));
    box.append(line);
  }
  return box;
}

/** Why a provisioned kernel has no per-cell table. */
function noPerCellTable(language: string | null): HTMLElement {
  const kernel = language ? `The ${language} kernel` : 'This kernel';
  return note(
    `${kernel} runs whole inside one container: the sandbox does not run its cells one by one, ` +
      'so what one cell cost cannot be told apart from the rest of the kernel. ' +
      'The gauges and sparklines above are the whole kernel\'s; ' +
      'the per-cell table needs the "Python 3 (sandbox)" kernel or %%container cells.',
    'sbk-no-per-cell'
  );
}

function sessionSection(
  view: ISessionView,
  running: IRunning | null,
  now: number,
  wholeKernel = false
): HTMLElement {
  const { stats, state, network } = view.entry;
  const section = el('section', 'sbk-session');
  section.dataset.session = stats.session;
  const facts = el('dl', 'sbk-facts');
  // a whole kernel in a container: its CPU rate is always worth showing
  const busy = wholeKernel || (running !== null && running.session === stats.session);
  const rows: [string, string, string][] = [
    ['session', stats.session, 'sbk-session-name'],
    ['image', stats.image, 'sbk-image'],
    ['network', network ?? NA, 'sbk-network'],
    ['state', busy && !wholeKernel ? `${state}, running a cell` : state, 'sbk-state'],
    ['uptime', formatUptime(liveUptime(view, now)), 'sbk-uptime'],
    ['limits', formatLimits(stats.limits), 'sbk-limits']
  ];
  for (const [label, value, className] of rows) {
    facts.append(el('dt', undefined, label), el('dd', className, value));
  }
  section.append(facts, memoryGauge(view), cpuGauge(view, busy), pidsGauge(view));
  section.append(sparklines(view, now));
  return section;
}

function gauge(
  name: string,
  label: string,
  text: string,
  fraction: number | null,
  peakFraction: number | null = null
): HTMLElement {
  const node = el('div', 'sbk-gauge');
  node.dataset.gauge = name;
  const top = el('div', 'sbk-gauge-top');
  top.append(el('span', 'sbk-gauge-label', label), el('span', 'sbk-gauge-text', text));
  const bar = el('div', 'sbk-bar');
  if (fraction === null) {
    bar.classList.add('sbk-bar-unscaled');
  } else {
    const fill = el('div', 'sbk-bar-fill');
    const f = Math.min(Math.max(fraction, 0), 1);
    fill.style.width = `${(f * 100).toFixed(1)}%`;
    if (f >= 0.9) {
      fill.classList.add('sbk-high');
    } else if (f >= 0.7) {
      fill.classList.add('sbk-warn');
    }
    bar.append(fill);
  }
  if (peakFraction !== null) {
    const mark = el('div', 'sbk-bar-peak');
    mark.style.left = `${(Math.min(Math.max(peakFraction, 0), 1) * 100).toFixed(1)}%`;
    mark.title = 'peak';
    bar.append(mark);
  }
  node.append(top, bar);
  return node;
}

function value(className: string, figure: number | null, text: string): HTMLElement {
  const span = el('span', className, text);
  span.dataset.value = raw(figure);
  return span;
}

function memoryGauge(view: ISessionView): HTMLElement {
  const cell = view.entry.stats.cell;
  const limit = cell.memory_limit ?? view.entry.stats.limits.memory;
  const fraction = (n: number | null) => (n === null || !limit ? null : n / limit);
  const node = gauge('memory', 'Memory', '', fraction(cell.memory_current), fraction(cell.memory_peak));
  const text = node.querySelector('.sbk-gauge-text') as HTMLElement;
  text.append(
    value('sbk-memory-current', cell.memory_current, formatBytes(cell.memory_current)),
    ' (peak ',
    value('sbk-memory-peak', cell.memory_peak, formatBytes(cell.memory_peak)),
    ') / ',
    value('sbk-memory-limit', limit, limit === null ? 'no limit' : formatBytes(limit))
  );
  return node;
}

function cpuGauge(view: ISessionView, busy: boolean): HTMLElement {
  const { cell, limits } = view.entry.stats;
  const total = cpuTotal(cell.cpu_user, cell.cpu_system);
  const rate = busy ? view.cpuRate : null;
  const node = gauge('cpu', 'CPU', '', rate === null || !limits.cpus ? null : rate / limits.cpus);
  const text = node.querySelector('.sbk-gauge-text') as HTMLElement;
  text.append(
    busy ? value('sbk-cpu-rate', rate, formatCores(rate)) : value('sbk-cpu-rate', null, 'idle'),
    ' / ',
    value('sbk-cpu-limit', limits.cpus, limits.cpus === null ? 'no limit' : `${formatG(limits.cpus)} cpus`),
    ' · total ',
    value('sbk-cpu-total', total, formatSeconds(total))
  );
  return node;
}

function pidsGauge(view: ISessionView): HTMLElement {
  const cell = view.entry.stats.cell;
  const limit = cell.pids_limit ?? view.entry.stats.limits.pids;
  const node = gauge('pids', 'Processes', '', cell.pids_current === null || !limit ? null : cell.pids_current / limit);
  const text = node.querySelector('.sbk-gauge-text') as HTMLElement;
  text.append(
    value('sbk-pids-current', cell.pids_current, formatCount(cell.pids_current)),
    ' / ',
    value('sbk-pids-limit', limit, limit === null ? 'no limit' : String(limit))
  );
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const SPARK_W = 200;
const SPARK_H = 28;

function sparklines(view: ISessionView, now: number): HTMLElement {
  const box = el('div', 'sbk-sparklines');
  const samples = view.samples.toArray().filter(s => now - s.t <= SPARKLINE_SECONDS * 1000);
  const { limits, cell } = view.entry.stats;
  const lines: [string, keyof ISample, number | null, (n: number | null) => string][] = [
    ['memory', 'memory', cell.memory_limit ?? limits.memory, formatBytes],
    ['cpu', 'cpu', limits.cpus, formatCores],
    ['pids', 'pids', cell.pids_limit ?? limits.pids, formatCount]
  ];
  for (const [name, key, limit, format] of lines) {
    const row = el('div', 'sbk-spark');
    row.dataset.spark = name;
    const values = samples.map(s => s[key] as number | null);
    const known = values.filter((v): v is number => v !== null);
    const top = limit ?? (known.length ? Math.max(...known) : null);
    row.append(el('span', 'sbk-spark-label', name), sparkline(samples, key, top, now));
    row.append(el('span', 'sbk-spark-max', known.length ? `max ${format(Math.max(...known))}` : NA));
    box.append(row);
  }
  box.title =
    `up to the last ${SPARKLINE_SECONDS / 60} minutes ` +
    '(figures come once a second while a cell runs)';
  return box;
}

/** An inline SVG: one polyline per run of known values (an unknown one breaks the line). */
function sparkline(samples: ISample[], key: keyof ISample, top: number | null, now: number): SVGElement {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'sbk-spark-svg');
  if (top === null || top <= 0) {
    return svg;
  }
  // the window: the last minutes, or less while there is less to show (at least one)
  const first = samples.length ? samples[0].t : now;
  const span = Math.max(now - Math.max(first, now - SPARKLINE_SECONDS * 1000), 60_000);
  const start = now - span;
  let points: string[] = [];
  const flush = () => {
    if (points.length > 0) {
      const line = document.createElementNS(SVG_NS, 'polyline');
      line.setAttribute('points', points.length === 1 ? `${points[0]} ${points[0]}` : points.join(' '));
      svg.append(line);
    }
    points = [];
  };
  for (const sample of samples) {
    const v = sample[key] as number | null;
    if (v === null) {
      flush();
      continue;
    }
    const x = ((sample.t - start) / span) * SPARK_W;
    const y = SPARK_H - 1 - Math.min(v / top, 1) * (SPARK_H - 2);
    points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  }
  flush();
  return svg;
}

const COLUMNS = ['#', 'status', 'wall', 'CPU', 'peak mem', 'io r/w', 'net rx/tx'];

function cellTable(
  cells: ICellRecord[],
  running: IRunning | null,
  onClick: (record: ICellRecord) => void
): HTMLElement {
  const wrap = el('div', 'sbk-cells');
  const several = new Set(cells.map(c => c.session)).size > 1;
  const table = el('table', 'sbk-table');
  const head = el('tr');
  for (const name of several ? ['session', ...COLUMNS] : COLUMNS) {
    head.append(el('th', undefined, name));
  }
  const thead = el('thead');
  thead.append(head);
  const body = el('tbody');
  if (running) {
    body.append(runningRow(running, several));
  }
  for (const record of cells.slice().reverse()) {
    body.append(cellRow(record, several, onClick));
  }
  table.append(thead, body);
  if (cells.length === 0 && !running) {
    wrap.append(note('No cells have run in a container yet.', 'sbk-no-cells'));
  } else {
    wrap.append(table);
  }
  return wrap;
}

function runningRow(running: IRunning, several: boolean): HTMLElement {
  const row = el('tr', 'sbk-row sbk-row-running');
  row.dataset.status = 'running';
  row.dataset.cellId = running.cellId ?? '';
  if (several) {
    row.append(el('td', undefined, running.session));
  }
  row.append(
    el('td', undefined, running.executionCount === null ? '*' : `${running.executionCount}`),
    el('td', undefined, 'running'),
    el('td', 'sbk-elapsed', NA),
    el('td'),
    el('td'),
    el('td'),
    el('td')
  );
  return row;
}

/** How long the running cell has run: the kernel's figure plus the time since it came. */
function liveElapsed(model: StatsModel, now: number): number | null {
  const running = model.running;
  if (!running || running.elapsed === null) {
    return null;
  }
  const view = model.session(running.session);
  return running.elapsed + (view ? Math.max(0, now - view.receivedAt) / 1000 : 0);
}

function cellRow(record: ICellRecord, several: boolean, onClick: (r: ICellRecord) => void): HTMLElement {
  const c = record.stats.cell;
  const row = el('tr', 'sbk-row');
  row.dataset.status = c.status ?? 'null';
  row.dataset.cellId = record.cellId ?? '';
  row.dataset.executionCount = raw(record.executionCount);
  row.dataset.memoryPeak = raw(c.memory_peak);
  row.title = `cpu ${formatSeconds(c.cpu_user)} user, ${formatSeconds(c.cpu_system)} sys; ` +
    `pids peak ${formatCount(c.pids_peak)}; oom kills ${formatCount(c.oom_kills)}; ` +
    (c.net_refused ? `refused ${formatRefusals(c.net_refused, c.net_refusals)}; ` : '') +
    'click: go to the cell';
  const status = el('td', `sbk-status sbk-status-${c.status ?? 'unknown'}`, c.status ?? NA);
  const texts = [
    record.executionCount === null ? NA : String(record.executionCount),
    null,
    formatSeconds(c.wall),
    formatSeconds(cpuTotal(c.cpu_user, c.cpu_system)),
    formatBytes(c.memory_peak),
    `${formatBytes(c.io_read)} / ${formatBytes(c.io_write)}`,
    `${formatBytes(c.net_rx)} / ${formatBytes(c.net_tx)}` +
      (c.net_refused ? `, ${c.net_refused} refused` : '')
  ];
  if (several) {
    row.append(el('td', 'sbk-row-session', record.session));
  }
  for (const text of texts) {
    row.append(text === null ? status : el('td', undefined, text));
  }
  row.addEventListener('click', () => onClick(record));
  return row;
}

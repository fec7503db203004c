/**
 * The stats contract as the panel holds it.
 *
 * What the kernel sends on comm `sandbox_kernel.stats` is parsed here
 * (sandbox_kernel/panel/messages.py has the shape).  Nothing here touches
 * JupyterLab: the model is plain data, tested on its own.
 *
 * Rules kept from the contract: a figure the host cannot give is null, and
 * stays null (shown as "n/a"), never 0; what is not a finite number is null.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { IRefusal, parseRefusals } from './format';

export const TARGET = 'sandbox_kernel.stats';
export const PROTOCOL_VERSION = 1;
export const STATUSES = ['ok', 'error', 'timeout', 'oom', 'killed'] as const;
export type CellStatus = (typeof STATUSES)[number];

/** Cell rows kept per notebook (the kernel keeps as many). */
export const HISTORY_SIZE = 100;
/** Samples kept per session for the sparklines: ten minutes at one a second. */
export const SAMPLE_CAPACITY = 600;

export interface ILimits {
  memory: number | null;
  cpus: number | null;
  pids: number | null;
  timeout: number | null;
}

export interface IFigures {
  execution_count: number | null;
  wall: number | null;
  cpu_user: number | null;
  cpu_system: number | null;
  memory_current: number | null;
  memory_peak: number | null;
  memory_limit: number | null;
  pids_current: number | null;
  pids_peak: number | null;
  pids_limit: number | null;
  io_read: number | null;
  io_write: number | null;
  net_rx: number | null;
  net_tx: number | null;
  /** --net bridge: what the allowlist refused in the cell (null: nothing filters). */
  net_refused: number | null;
  net_refusals: IRefusal[] | null;
  oom_kills: number | null;
  throttled_time: number | null;
  status: CellStatus | null;
}

/** The stats contract (docs/architecture.md, session/stats.py): one session, and one cell (or the session so far). */
export interface IStats {
  session: string;
  image: string;
  limits: ILimits;
  cell: IFigures;
}

export interface ISessionEntry {
  stats: IStats;
  state: string;
  uptime: number | null;
  network: string | null;
}

export interface ICellRecord {
  session: string;
  cellId: string | null;
  executionCount: number | null;
  stats: IStats;
}

export interface IRunning {
  session: string;
  cellId: string | null;
  executionCount: number | null;
  elapsed: number | null;
}

export type StatsEvent = 'snapshot' | 'cell_start' | 'tick' | 'cell_end';

/**
 * What the notebook's author may ask of the host (the sandbox kernel's
 * policy, session/policy.py): its preset, its caps (null: no cap) and the
 * kernel's own one-line description.
 */
export interface IPolicy {
  name: string;
  text: string;
  caps: Record<string, number | null>;
}

/**
 * A death of a kernel the sandbox provisioner started, as the stats
 * endpoint tells it (provisioner/registry.py Death.as_dict): its reason
 * ("oom", "killed", "signal", "exit", "timeout"), its plain words ("the R
 * kernel ran out of memory at the 1 GiB limit (peak 1 GiB)") and when
 * (unix seconds).
 */
export interface IDeath {
  reason: string;
  message: string;
  at: number;
  memoryPeak: number | null;
  memoryLimit: number | null;
}

export interface IStatsMessage {
  event: StatsEvent;
  kernel: string | null;
  sessions: ISessionEntry[];
  running: IRunning | null;
  cell: ICellRecord | null;
  /** Present on snapshots only: every row the kernel kept, oldest first. */
  history: ICellRecord[] | null;
  /** Snapshots of the sandbox kernel only; null otherwise. */
  policy: IPolicy | null;
  /** The stats endpoint's: the kernel's deaths, oldest first; null from the comm. */
  deaths: IDeath[] | null;
  /** False when no cell is measured alone (a provisioned kernel: the whole kernel is one container). */
  perCell: boolean;
  /** The kernel's language and display name (the stats endpoint's; null from the comm). */
  language: string | null;
  displayName: string | null;
}

const NUMBER_FIELDS: (keyof IFigures)[] = [
  'execution_count',
  'wall',
  'cpu_user',
  'cpu_system',
  'memory_current',
  'memory_peak',
  'memory_limit',
  'pids_current',
  'pids_peak',
  'pids_limit',
  'io_read',
  'io_write',
  'net_rx',
  'net_tx',
  'net_refused',
  'oom_kills',
  'throttled_time'
];

const EVENTS: StatsEvent[] = ['snapshot', 'cell_start', 'tick', 'cell_end'];

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A finite number, else null (missing, null, NaN, a string...). */
export function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

export function parseStatus(value: unknown): CellStatus | null {
  return (STATUSES as readonly unknown[]).includes(value)
    ? (value as CellStatus)
    : null;
}

export function parseLimits(raw: unknown): ILimits {
  const limits = isObject(raw) ? raw : {};
  return {
    memory: num(limits.memory),
    cpus: num(limits.cpus),
    pids: num(limits.pids),
    timeout: num(limits.timeout)
  };
}

export function parseFigures(raw: unknown): IFigures {
  const cell = isObject(raw) ? raw : {};
  const figures = { status: parseStatus(cell.status) } as IFigures;
  for (const key of NUMBER_FIELDS) {
    (figures as any)[key] = num(cell[key]);
  }
  figures.net_refusals = parseRefusals(cell.net_refusals);
  return figures;
}

/** The contract, or null when `raw` is not one (no session name). */
export function parseStats(raw: unknown): IStats | null {
  if (!isObject(raw) || typeof raw.session !== 'string') {
    return null;
  }
  return {
    session: raw.session,
    image: str(raw.image) ?? 'n/a',
    limits: parseLimits(raw.limits),
    cell: parseFigures(raw.cell)
  };
}

export function parseSessionEntry(raw: unknown): ISessionEntry | null {
  if (!isObject(raw)) {
    return null;
  }
  const stats = parseStats(raw.stats);
  if (stats === null) {
    return null;
  }
  return {
    stats,
    state: str(raw.state) ?? 'unknown',
    uptime: num(raw.uptime),
    network: str(raw.network)
  };
}

export function parseRecord(raw: unknown): ICellRecord | null {
  if (!isObject(raw)) {
    return null;
  }
  const stats = parseStats(raw.stats);
  if (stats === null) {
    return null;
  }
  return {
    session: str(raw.session) ?? stats.session,
    cellId: str(raw.cell_id),
    executionCount: num(raw.execution_count) ?? stats.cell.execution_count,
    stats
  };
}

function parseRunning(raw: unknown): IRunning | null {
  if (!isObject(raw) || typeof raw.session !== 'string') {
    return null;
  }
  return {
    session: raw.session,
    cellId: str(raw.cell_id),
    executionCount: num(raw.execution_count),
    elapsed: num(raw.elapsed)
  };
}

function parseList<T>(raw: unknown, parse: (item: unknown) => T | null): T[] {
  if (!Array.isArray(raw)) {
    return [];
  }
  return raw.map(parse).filter((item): item is T => item !== null);
}

/**
 * A comm message's data, or null when it is neither protocol 1 nor a bare
 * contract.  A bare contract (what a kernel without the envelope sends, with
 * the event in the message's metadata) is read as one session: a cell_end
 * contract is also its row.
 */
export function parseMessage(
  data: unknown,
  metadataEvent?: unknown
): IStatsMessage | null {
  if (!isObject(data)) {
    return null;
  }
  if (data.protocol === PROTOCOL_VERSION) {
    const event = EVENTS.find(e => e === data.event);
    if (event === undefined) {
      return null;
    }
    return {
      event,
      kernel: str(data.kernel),
      sessions: parseList(data.sessions, parseSessionEntry),
      running: parseRunning(data.running),
      cell: parseRecord(data.cell),
      history: Array.isArray(data.history)
        ? parseList(data.history, parseRecord)
        : null,
      policy: parsePolicy(data.policy),
      deaths: Array.isArray(data.deaths) ? parseList(data.deaths, parseDeath) : null,
      perCell: data.per_cell !== false,
      language: str(data.language),
      displayName: str(data.display_name)
    };
  }
  return parseBareContract(data, metadataEvent);
}

/** A death, or null when `raw` has no words or no time (nothing to say). */
export function parseDeath(raw: unknown): IDeath | null {
  if (!isObject(raw) || typeof raw.message !== 'string' || num(raw.at) === null) {
    return null;
  }
  return {
    reason: str(raw.reason) ?? 'unknown',
    message: raw.message,
    at: raw.at as number,
    memoryPeak: num(raw.memory_peak),
    memoryLimit: num(raw.memory_limit)
  };
}

/** The same death seen twice (a snapshot and the ticks after it): one key. */
export function deathKey(death: IDeath): string {
  return `${death.at}:${death.reason}`;
}

/** The policy of a snapshot, or null when it is not one. */
export function parsePolicy(raw: unknown): IPolicy | null {
  if (
    !isObject(raw) ||
    typeof raw.name !== 'string' ||
    typeof raw.text !== 'string'
  ) {
    return null;
  }
  const caps: Record<string, number | null> = {};
  if (isObject(raw.caps)) {
    for (const [key, value] of Object.entries(raw.caps)) {
      caps[key] = typeof value === 'number' && Number.isFinite(value) ? value : null;
    }
  }
  return { name: raw.name, text: raw.text, caps };
}

function parseBareContract(
  data: Record<string, unknown>,
  metadataEvent: unknown
): IStatsMessage | null {
  const stats = parseStats(data);
  if (stats === null) {
    return null;
  }
  const name = String(metadataEvent ?? '');
  const event: StatsEvent =
    name === 'cell_end' || name === 'cell_start' || name === 'tick'
      ? name
      : 'snapshot';
  const entry: ISessionEntry = {
    stats,
    state: 'running',
    uptime: event === 'cell_end' ? null : stats.cell.wall,
    network: null
  };
  const cell: ICellRecord | null =
    event === 'cell_end'
      ? {
          session: stats.session,
          cellId: null,
          executionCount: stats.cell.execution_count,
          stats
        }
      : null;
  return {
    event,
    kernel: null,
    sessions: event === 'cell_end' ? [] : [entry],
    running:
      event === 'cell_start' || event === 'tick'
        ? {
            session: stats.session,
            cellId: null,
            executionCount: null,
            elapsed: null
          }
        : null,
    cell,
    history: null,
    policy: null,
    deaths: null,
    perCell: true,
    language: null,
    displayName: null
  };
}

/** A fixed-size ring: the oldest item goes when a new one comes. */
export class Ring<T> {
  constructor(readonly capacity: number) {
    if (!(capacity >= 1)) {
      throw new Error(`a ring holds at least one item, not ${capacity}`);
    }
  }

  get length(): number {
    return this._items.length;
  }

  push(item: T): void {
    this._items.push(item);
    if (this._items.length > this.capacity) {
      this._items.splice(0, this._items.length - this.capacity);
    }
  }

  /** The items, oldest first (a copy). */
  toArray(): T[] {
    return this._items.slice();
  }

  last(): T | undefined {
    return this._items[this._items.length - 1];
  }

  clear(): void {
    this._items = [];
  }

  private _items: T[] = [];
}

/** One point of a sparkline: when it came (ms), and the session's figures. */
export interface ISample {
  t: number;
  memory: number | null;
  cpu: number | null;
  pids: number | null;
}

/** A session as the panel shows it: its last figures and their recent past. */
export interface ISessionView {
  entry: ISessionEntry;
  receivedAt: number;
  /** Cores in use over the last interval; null when not measured. */
  cpuRate: number | null;
  samples: Ring<ISample>;
}

/**
 * The stats of one kernel: its sessions now, their recent past, its cells.
 * `apply` takes a parsed message; `changed` fires after each.
 */
export class StatsModel {
  constructor(
    readonly historySize = HISTORY_SIZE,
    readonly sampleCapacity = SAMPLE_CAPACITY
  ) {
    this._cells = new Ring<ICellRecord>(historySize);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** True while a comm to a sandbox_kernel.stats target is open. */
  get connected(): boolean {
    return this._connected;
  }

  /** "sandbox" (the sandbox kernel) or "magics" (%%container in IPython). */
  get kernelKind(): string | null {
    return this._kernelKind;
  }

  get running(): IRunning | null {
    return this._running;
  }

  /** False when the kernel's cells cannot be measured one by one (a provisioned kernel). */
  get perCell(): boolean {
    return this._perCell;
  }

  /** The kernel's language, when the stats endpoint said it ("R", "bash"). */
  get language(): string | null {
    return this._language;
  }

  /** The kernel's deaths the stats endpoint reported, oldest first; kept across restarts. */
  get deaths(): IDeath[] {
    return this._deaths.slice();
  }

  /** The sandbox kernel's policy, from its last snapshot (null: none sent). */
  get policy(): IPolicy | null {
    return this._policy;
  }

  get sessions(): ISessionView[] {
    return Array.from(this._sessions.values());
  }

  session(name: string): ISessionView | undefined {
    return this._sessions.get(name);
  }

  /** The table's rows, oldest first. */
  get cells(): ICellRecord[] {
    return this._cells.toArray();
  }

  setConnected(connected: boolean): void {
    if (connected !== this._connected) {
      this._connected = connected;
      this._changed.emit();
    }
  }

  /** Forget the deaths too: another kernel (reset() keeps them: a restart follows a death). */
  forgetKernel(): void {
    this._deaths = [];
    this._language = null;
    this.reset();
  }

  /** Forget everything: the kernel restarted or changed. */
  reset(): void {
    this._sessions.clear();
    this._cells.clear();
    this._running = null;
    this._kernelKind = null;
    this._policy = null;
    this._perCell = true;
    this._connected = false;
    this._changed.emit();
  }

  apply(message: IStatsMessage, now: number = Date.now()): void {
    this._connected = true;
    this._kernelKind = message.kernel ?? this._kernelKind;
    this._perCell = message.perCell;
    this._language = message.language ?? this._language;
    if (message.deaths !== null) {
      this._deaths = message.deaths.slice();
    }
    if (message.kernel !== null) {
      // the envelope lists every session: the ones it leaves out are gone
      const names = new Set(message.sessions.map(e => e.stats.session));
      for (const name of Array.from(this._sessions.keys())) {
        if (!names.has(name)) {
          this._sessions.delete(name);
        }
      }
    }
    for (const entry of message.sessions) {
      this._updateSession(entry, now);
    }
    this._running = message.event === 'cell_end' ? null : message.running;
    if (message.event === 'snapshot' && message.kernel !== null) {
      this._policy = message.policy;
    }
    if (message.history !== null) {
      this._cells.clear();
      message.history.forEach(record => this._cells.push(record));
    } else if (message.cell !== null) {
      this._cells.push(message.cell);
    }
    this._changed.emit();
  }

  private _updateSession(entry: ISessionEntry, now: number): void {
    const name = entry.stats.session;
    const previous = this._sessions.get(name);
    const view: ISessionView = previous ?? {
      entry,
      receivedAt: now,
      cpuRate: null,
      samples: new Ring<ISample>(this.sampleCapacity)
    };
    view.cpuRate = previous
      ? cpuRate(previous.entry, entry, previous.cpuRate)
      : null;
    view.entry = entry;
    view.receivedAt = now;
    const figures = entry.stats.cell;
    view.samples.push({
      t: now,
      memory: figures.memory_current,
      cpu: view.cpuRate,
      pids: figures.pids_current
    });
    this._sessions.set(name, view);
  }

  private _changed = new Signal<this, void>(this);
  private _connected = false;
  private _kernelKind: string | null = null;
  private _running: IRunning | null = null;
  private _policy: IPolicy | null = null;
  private _perCell = true;
  private _language: string | null = null;
  private _deaths: IDeath[] = [];
  private _sessions = new Map<string, ISessionView>();
  private _cells: Ring<ICellRecord>;
}

/** Shortest interval (s) a CPU rate is measured over; closer samples keep the last rate. */
export const MIN_RATE_INTERVAL = 0.25;

/**
 * Cores used between two figures of one session: CPU seconds over its
 * uptime.  Null when a figure is unknown or the container was replaced
 * (its uptime or CPU time went back).
 */
export function cpuRate(
  before: ISessionEntry,
  after: ISessionEntry,
  lastRate: number | null = null
): number | null {
  const cpu = (e: ISessionEntry) =>
    e.stats.cell.cpu_user === null || e.stats.cell.cpu_system === null
      ? null
      : e.stats.cell.cpu_user + e.stats.cell.cpu_system;
  const c0 = cpu(before);
  const c1 = cpu(after);
  const t0 = before.stats.cell.wall;
  const t1 = after.stats.cell.wall;
  if (c0 === null || c1 === null || t0 === null || t1 === null) {
    return null;
  }
  if (t1 < t0 || c1 < c0) {
    return null;
  }
  if (t1 - t0 < MIN_RATE_INTERVAL) {
    return lastRate;
  }
  return (c1 - c0) / (t1 - t0);
}

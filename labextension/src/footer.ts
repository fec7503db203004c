/**
 * The stats footer under a sandboxed cell, as data: where it comes from and
 * what it says.  Nothing here touches JupyterLab (cellfooter.ts draws it).
 *
 * Where the stats come from (issue 17: the outputs stay what the code
 * produced):
 *
 *   the sandbox kernel   the execute_reply's metadata, under "sandbox_kernel":
 *                        {"stats": CONTRACT, "footer": "beside" | "output" | "off",
 *                         "notebook_dir": "/course ro+overlay"}   (session/stats.py `beside`)
 *   the magics           the side panel's cell_end: its cell row carries the
 *                        cell's id, the contract and "footer" (panel/messages.py)
 *
 * Either way the entry is kept in the cell's metadata under the same key,
 * so that a reopened notebook shows the last run's footer.  Only "beside"
 * is drawn: "output" means the footer is one of the outputs already, "off"
 * none at all.
 *
 * The parts and their words are the ones of session/stats.py
 * `footer_parts`, so the footer reads the same as the output one.
 */
import {
  formatBytes,
  formatG,
  formatRate,
  formatRefusals,
  formatSeconds,
  IRefusal,
  NA,
  parseRefusals
} from './format';
import { CellStatus, num, parseStats, IStats } from './model';

/** The key in an execute_reply's metadata and in a cell's. */
export const METADATA_KEY = 'sandbox_kernel';
export const PLACES = ['beside', 'output', 'off'] as const;
export type FooterPlace = (typeof PLACES)[number];

/** Figures of the contract the panel's model leaves out, read here. */
export interface IFooterExtras {
  disk_used: number | null;
  disk_limit: number | null;
  pids_refused: number | null;
  warnings: string[];
  trusted_output: boolean;
  /** Connections and lookups the allowlist refused in the cell; null: nothing filters. */
  net_refused: number | null;
  net_refusals: IRefusal[] | null;
  /** The bridge's bandwidth in bits/s (the contract's `network.rate`), null: none. */
  net_rate: number | null;
}

/** One cell's footer: the contract, where it goes, the notebook's directory. */
export interface IBeside {
  stats: IStats;
  extras: IFooterExtras;
  footer: FooterPlace;
  notebookDir: string | null;
  /** What goes into the cell's metadata (plain JSON, as the kernel sent it). */
  raw: { stats: unknown; footer: FooterPlace; notebook_dir?: string };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseExtras(raw: Record<string, unknown>): IFooterExtras {
  const cell = isObject(raw.cell) ? raw.cell : {};
  const warnings = Array.isArray(raw.warnings)
    ? raw.warnings.filter((w): w is string => typeof w === 'string')
    : [];
  return {
    disk_used: num(cell.disk_used),
    disk_limit: num(cell.disk_limit),
    pids_refused: num(cell.pids_refused),
    warnings,
    trusted_output: raw.trusted_output === true,
    net_refused: num(cell.net_refused),
    net_refusals: parseRefusals(cell.net_refusals),
    net_rate: isObject(raw.network) ? num(raw.network.rate) : null
  };
}

/**
 * The entry under METADATA_KEY (of a reply's metadata, of a cell's), or
 * null when it holds no contract.  A missing or unknown place is beside.
 */
export function parseBeside(raw: unknown): IBeside | null {
  if (!isObject(raw) || !isObject(raw.stats)) {
    return null;
  }
  const stats = parseStats(raw.stats);
  if (stats === null) {
    return null;
  }
  const footer = (PLACES as readonly unknown[]).includes(raw.footer)
    ? (raw.footer as FooterPlace)
    : 'beside';
  const notebookDir = typeof raw.notebook_dir === 'string' && raw.notebook_dir ? raw.notebook_dir : null;
  const kept: IBeside['raw'] = { stats: raw.stats, footer };
  if (notebookDir !== null) {
    kept.notebook_dir = notebookDir;
  }
  return { stats, extras: parseExtras(raw.stats), footer, notebookDir, raw: kept };
}

/** The entry of a message's metadata (an execute_reply's), or null. */
export function besideOfMetadata(metadata: unknown): IBeside | null {
  return isObject(metadata) ? parseBeside(metadata[METADATA_KEY]) : null;
}

/** The entry of a cell row of the panel's cell_end (the magics'), or null. */
export function besideOfRecord(record: unknown): IBeside | null {
  if (!isObject(record)) {
    return null;
  }
  return parseBeside({ stats: record.stats, footer: record.footer });
}

function of(value: string, limit: string | null): string {
  return limit === null ? value : `${value} / ${limit}`;
}

const DISK_FULL_MARGIN = 2 ** 20;

/** As session/stats.py `disk_full`: less than 1 MiB (or 1 %) left. */
export function diskFull(used: number | null, limit: number | null): boolean {
  if (used === null || limit === null) {
    return false;
  }
  return limit > 0 && limit - used < Math.max(DISK_FULL_MARGIN, Math.floor(limit / 100));
}

function cpuText(beside: IBeside): string {
  const { cell, limits } = beside.stats;
  let cpu = `${formatSeconds(cell.cpu_user)} user, ${formatSeconds(cell.cpu_system)} sys`;
  if (cell.throttled_time) {
    cpu += `, throttled ${formatSeconds(cell.throttled_time)}`;
  }
  return limits.cpus ? `${cpu} / ${formatG(limits.cpus)} cpus` : cpu;
}

function memoryText(beside: IBeside): string {
  const { cell, limits } = beside.stats;
  let mem = formatBytes(cell.memory_current);
  if (cell.memory_peak !== null) {
    mem += ` (peak ${formatBytes(cell.memory_peak)})`;
  }
  const limit = cell.memory_limit ?? limits.memory;
  return of(mem, limit === null ? null : formatBytes(limit));
}

function pidsText(beside: IBeside): string {
  const { cell, limits } = beside.stats;
  let pids = cell.pids_current === null ? NA : String(cell.pids_current);
  if (cell.pids_peak !== null) {
    pids += ` (peak ${cell.pids_peak})`;
  }
  if (beside.extras.pids_refused) {
    pids += `, ${beside.extras.pids_refused} refused at the limit`;
  }
  const limit = cell.pids_limit ?? limits.pids;
  return of(pids, limit === null ? null : String(limit));
}

function netText(beside: IBeside): string {
  const { cell } = beside.stats;
  const text = `rx ${formatBytes(cell.net_rx)} tx ${formatBytes(cell.net_tx)}`;
  const rate = beside.extras.net_rate;
  return rate !== null && rate > 0 ? `${text} at ${formatRate(rate)}` : text;
}

/** (label, text) pairs in order, as session/stats.py `footer_parts`. */
export function footerParts(beside: IBeside): [string, string][] {
  const { stats, extras } = beside;
  const cell = stats.cell;
  const parts: [string, string][] = [
    ['container', `${stats.session} [${stats.image}]`],
    ['status', cell.status ?? NA],
    ['wall', formatSeconds(cell.wall)],
    ['cpu', cpuText(beside)],
    ['mem', memoryText(beside)],
    ['pids', pidsText(beside)],
    ['io', `r ${formatBytes(cell.io_read)} w ${formatBytes(cell.io_write)}`],
    ['net', netText(beside)]
  ];
  if (extras.net_refused) {
    parts.push(['refused', formatRefusals(extras.net_refused, extras.net_refusals)]);
  }
  if (extras.disk_used !== null || extras.disk_limit !== null) {
    let disk = of(formatBytes(extras.disk_used), extras.disk_limit === null ? null : formatBytes(extras.disk_limit));
    if (diskFull(extras.disk_used, extras.disk_limit)) {
      disk += ' full (--disk)';
    }
    parts.push(['disk', disk]);
  }
  if (beside.notebookDir) {
    parts.push(['dir', beside.notebookDir]);
  }
  if (cell.oom_kills) {
    parts.push(['oom kills', String(cell.oom_kills)]);
  }
  if (extras.trusted_output) {
    parts.push(['output', 'trusted']);
  }
  extras.warnings.forEach(text => parts.push(['warning', text]));
  return parts;
}

/** One line of text, as session/stats.py `footer_text` (for titles and tests). */
export function footerText(beside: IBeside): string {
  return footerParts(beside)
    .map(([label, text]) => `${label} ${text}`)
    .join(' | ');
}

/** The status, for the footer's colour. */
export function footerStatus(beside: IBeside): CellStatus | null {
  return beside.stats.cell.status;
}

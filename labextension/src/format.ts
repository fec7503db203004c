/**
 * Figures as text, the same way as the stats footer under each cell
 * (sandbox_kernel/session/stats.py: format_bytes, format_seconds), so that
 * the panel and the footer show the same numbers.  null is "n/a", never 0.
 */

export const NA = 'n/a';

/**
 * x with `digits` decimals, rounded as Python's format() rounds: the exact
 * binary value, an exact tie to even (toFixed rounds a tie up: 1.25 -> "1.3",
 * Python "1.2").  Byte counts over powers of two are exact in binary, so
 * their ties are real; 12.345 is not a tie (it is 12.3450000000000006...).
 */
export function fixed(x: number, digits: number): string {
  const expansion = Math.abs(x).toFixed(Math.min(100, digits + 70));
  const tail = expansion.slice(expansion.indexOf('.') + 1 + digits);
  if (/^50*$/.test(tail)) {
    const scale = 10 ** digits;
    const floor = Math.floor(Math.abs(x) * scale);
    const even = floor % 2 === 0 ? floor : floor + 1;
    return `${x < 0 ? '-' : ''}${(even / scale).toFixed(digits)}`;
  }
  return x.toFixed(digits);
}

const BYTE_UNITS: [string, number][] = [
  ['GiB', 2 ** 30],
  ['MiB', 2 ** 20],
  ['KiB', 2 ** 10]
];

export function formatBytes(n: number | null): string {
  if (n === null) {
    return NA;
  }
  for (const [unit, scale] of BYTE_UNITS) {
    if (Math.abs(n) >= scale) {
      const value = n / scale;
      return Number.isInteger(value)
        ? `${value} ${unit}`
        : `${fixed(value, 1)} ${unit}`;
    }
  }
  return `${n} B`;
}

export function formatSeconds(s: number | null): string {
  if (s === null) {
    return NA;
  }
  if (s < 1) {
    return `${fixed(s * 1000, 0)} ms`;
  }
  if (s < 60) {
    return `${fixed(s, 2)} s`;
  }
  const minutes = Math.floor(s / 60);
  const seconds = s - minutes * 60;
  return `${minutes} min ${fixed(seconds, 0)} s`;
}

/** Python's "{:g}": at most six significant digits, no trailing zeros. */
export function formatG(x: number): string {
  return String(Number(x.toPrecision(6)));
}

export function formatCores(x: number | null): string {
  return x === null ? NA : `${fixed(x, 2)} cores`;
}

export function formatCount(n: number | null): string {
  return n === null ? NA : String(n);
}

/** user + system, null when either is unknown. */
export function cpuTotal(user: number | null, system: number | null): number | null {
  return user === null || system === null ? null : user + system;
}

/** "1 h 02 min", "3 min 05 s", "42 s": how long a session has run. */
export function formatUptime(s: number | null): string {
  if (s === null) {
    return NA;
  }
  const total = Math.floor(s);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  if (hours > 0) {
    return `${hours} h ${two(minutes)} min`;
  }
  if (minutes > 0) {
    return `${minutes} min ${two(seconds)} s`;
  }
  return `${seconds} s`;
}

/** The limits line: "memory 512 MiB, cpus 1, pids 64, timeout 30.00 s". */
export function formatLimits(limits: {
  memory: number | null;
  cpus: number | null;
  pids: number | null;
  timeout: number | null;
}): string {
  return [
    `memory ${limits.memory === null ? 'unlimited' : formatBytes(limits.memory)}`,
    `cpus ${limits.cpus === null ? 'unlimited' : formatG(limits.cpus)}`,
    `pids ${limits.pids === null ? 'unlimited' : limits.pids}`,
    limits.timeout === null ? 'no timeout' : `timeout ${formatSeconds(limits.timeout)}`
  ].join(', ');
}

/** Bits per second as session/stats.py `format_rate`: 10 Mbit/s, 1.5 Gbit/s, 800 kbit/s. */
export function formatRate(bits: number | null): string {
  if (bits === null) {
    return NA;
  }
  const units: [string, number][] = [
    ['Gbit/s', 1e9],
    ['Mbit/s', 1e6],
    ['kbit/s', 1e3]
  ];
  for (const [unit, scale] of units) {
    if (bits >= scale) {
      const value = bits / scale;
      return Number.isInteger(value) ? `${value} ${unit}` : `${fixed(value, 1)} ${unit}`;
    }
  }
  return `${bits} bit/s`;
}

/**
 * One destination the session's allowlist refused (the contract's
 * `net_refusals`, session/stats.py): an address, or a name the resolver
 * would not answer (protocol "dns"); the names looked up that led there.
 */
export interface IRefusal {
  destination: string;
  names: string[];
  protocol: string;
  port: number | null;
  count: number;
}

/** The destinations the footer names before it says how many more. */
export const REFUSALS_SHOWN = 4;

/** The contract's `net_refusals`, or null when it holds none (nothing filters). */
export function parseRefusals(raw: unknown): IRefusal[] | null {
  if (!Array.isArray(raw)) {
    return null;
  }
  const entries: IRefusal[] = [];
  for (const item of raw) {
    if (typeof item !== 'object' || item === null || typeof item.destination !== 'string') {
      continue;
    }
    const names = Array.isArray(item.names)
      ? item.names.filter((n: unknown): n is string => typeof n === 'string')
      : [];
    const port = typeof item.port === 'number' && Number.isFinite(item.port) ? item.port : null;
    const count = typeof item.count === 'number' && Number.isFinite(item.count) ? item.count : 0;
    entries.push({
      destination: item.destination,
      names,
      protocol: typeof item.protocol === 'string' ? item.protocol : '?',
      port,
      count
    });
  }
  return entries;
}

/** As session/stats.py `refusal_text`: "198.51.100.7 tcp/80 x3", "example.com (name not allowed)". */
export function formatRefusal(entry: IRefusal): string {
  let text: string;
  if (entry.protocol === 'dns') {
    text = `${entry.destination} (name not allowed)`;
  } else {
    text = entry.destination;
    text += entry.names.length ? ` (${entry.names.join(', ')})` : '';
    text += ` ${entry.protocol}` + (entry.port !== null ? `/${entry.port}` : '');
  }
  return entry.count > 1 ? `${text} x${entry.count}` : text;
}

/** As session/stats.py `refusals_text`: "3: example.com (name not allowed), 198.51.100.7 tcp/80 x2". */
export function formatRefusals(total: number, entries: IRefusal[] | null): string {
  const list = entries ?? [];
  const named = list.slice(0, REFUSALS_SHOWN).map(formatRefusal);
  if (list.length > REFUSALS_SHOWN) {
    named.push(`${list.length - REFUSALS_SHOWN} more`);
  }
  return named.length ? `${total}: ${named.join(', ')}` : String(total);
}

/**
 * The panel's text matches the footer's (session/stats.py format_bytes and
 * format_seconds): the expected strings below are what Python prints.
 */
import {
  fixed,
  formatBytes,
  formatCores,
  formatCount,
  formatG,
  formatLimits,
  formatRate,
  formatRefusals,
  formatSeconds,
  parseRefusals,
  formatUptime,
  NA
} from '../src/format';

describe('the footer formats', () => {
  it('formats bytes as format_bytes does', () => {
    const cases: [number, string][] = [
      [0, '0 B'],
      [1023, '1023 B'],
      [1024, '1 KiB'],
      [1536, '1.5 KiB'],
      [52428800, '50 MiB'],
      [61865984, '59 MiB'],
      [62000000, '59.1 MiB'],
      [104857600, '100 MiB'],
      [536870912, '512 MiB'],
      [1310720, '1.2 MiB'], // 1.25 MiB: Python rounds the tie to even
      [1441792, '1.4 MiB'], // 1.375 -> 1.4
      [3 * 2 ** 30, '3 GiB']
    ];
    for (const [n, text] of cases) {
      expect(formatBytes(n)).toBe(text);
    }
  });

  it('formats seconds as format_seconds does', () => {
    const cases: [number, string][] = [
      [0, '0 ms'],
      [0.21, '210 ms'],
      [1, '1.00 s'],
      [12.345, '12.35 s'],
      [59.5, '59.50 s'],
      [61, '1 min 1 s'],
      [3600, '60 min 0 s']
    ];
    for (const [s, text] of cases) {
      expect(formatSeconds(s)).toBe(text);
    }
  });

  it('rounds exact ties to even, as Python does', () => {
    expect(fixed(0.5, 0)).toBe('0');
    expect(fixed(1.5, 0)).toBe('2');
    expect(fixed(2.5, 0)).toBe('2');
    expect(fixed(0.125, 2)).toBe('0.12');
    expect(fixed(1.26, 1)).toBe('1.3');
    expect(fixed(12.345, 2)).toBe('12.35'); // not a tie in binary
    expect(fixed(2.675, 2)).toBe('2.67'); // 2.67499999... in binary
  });

  it('says n/a for null, never 0', () => {
    expect(formatBytes(null)).toBe(NA);
    expect(formatSeconds(null)).toBe(NA);
    expect(formatCores(null)).toBe(NA);
    expect(formatCount(null)).toBe(NA);
    expect(formatUptime(null)).toBe(NA);
  });

  it('formats cpus as Python\'s {:g}', () => {
    expect(formatG(1)).toBe('1');
    expect(formatG(0.5)).toBe('0.5');
    expect(formatG(1.25)).toBe('1.25');
  });

  it('formats limits, null as unlimited', () => {
    expect(formatLimits({ memory: 536870912, cpus: 1, pids: 64, timeout: 30 })).toBe(
      'memory 512 MiB, cpus 1, pids 64, timeout 30.00 s'
    );
    expect(formatLimits({ memory: null, cpus: null, pids: null, timeout: null })).toBe(
      'memory unlimited, cpus unlimited, pids unlimited, no timeout'
    );
  });

  it('formats uptimes', () => {
    expect(formatUptime(42.9)).toBe('42 s');
    expect(formatUptime(185)).toBe('3 min 05 s');
    expect(formatUptime(3720)).toBe('1 h 02 min');
  });

  it('formats a rate and refusals as format_rate and refusals_text do', () => {
    const cases: [number | null, string][] = [
      [null, NA], [500, '500 bit/s'], [8000, '8 kbit/s'], [1500000, '1.5 Mbit/s'],
      [10000000, '10 Mbit/s'], [2500000000, '2.5 Gbit/s'], [999999, '1000.0 kbit/s']
    ];
    for (const [bits, text] of cases) {
      expect(formatRate(bits)).toBe(text);
    }
    const entries = parseRefusals([
      { destination: '198.18.1.9', names: [], protocol: 'icmp', port: null, count: 3 },
      'not an entry',
      { destination: 7 }
    ]);
    expect(formatRefusals(3, entries)).toBe('3: 198.18.1.9 icmp x3');
    expect(parseRefusals(null)).toBeNull();
    expect(formatRefusals(2, [])).toBe('2');
  });
});

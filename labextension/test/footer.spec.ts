/**
 * The footer under a sandboxed cell, as data (src/footer.ts): the entry of
 * an execute_reply's metadata or of the panel's cell row, and its words,
 * which are session/stats.py footer_text's for the same contract.
 */
import {
  besideOfMetadata,
  besideOfRecord,
  diskFull,
  footerText,
  METADATA_KEY,
  parseBeside
} from '../src/footer';
import { renderFooter } from '../src/cellfooter';

function contract(): any {
  return {
    session: 'default',
    image: 'host',
    limits: { memory: 268435456, cpus: 1.0, pids: 64, timeout: 30.0 },
    cell: {
      execution_count: 3, wall: 0.21, cpu_user: 0.18, cpu_system: 0.02,
      memory_current: 52428800, memory_peak: 61865984, memory_limit: 268435456,
      pids_current: 2, pids_peak: 3, pids_limit: 64, pids_refused: 2,
      io_read: 0, io_write: 4096, net_rx: 0, net_tx: 0, oom_kills: 1,
      throttled_time: 0.5, disk_used: 536000000, disk_limit: 536870912, status: 'oom'
    },
    warnings: ['limits not enforced'],
    trusted_output: true
  };
}

// what session/stats.py footer_text says for the same contract and directory
const PYTHON_TEXT =
  'container default [host] | status oom | wall 210 ms | cpu 180 ms user, 20 ms sys, ' +
  'throttled 500 ms / 1 cpus | mem 50 MiB (peak 59 MiB) / 256 MiB | pids 2 (peak 3), ' +
  '2 refused at the limit / 64 | io r 0 B w 4 KiB | net rx 0 B tx 0 B | disk 511.2 MiB / ' +
  '512 MiB full (--disk) | dir /course ro+overlay | oom kills 1 | output trusted | ' +
  'warning limits not enforced';

describe('the footer beside the cell', () => {
  it('reads an execute_reply metadata entry and says what Python says', () => {
    const metadata = {
      started: '2026-12-04T22:17:07Z',
      [METADATA_KEY]: { stats: contract(), footer: 'beside', notebook_dir: '/course ro+overlay' }
    };
    const beside = besideOfMetadata(metadata)!;
    expect(beside.footer).toBe('beside');
    expect(footerText(beside)).toBe(PYTHON_TEXT);
    expect(beside.raw).toEqual(metadata[METADATA_KEY]);
  });

  it('keeps unknown figures as n/a, never 0', () => {
    const beside = parseBeside({
      stats: { session: 's', image: 'host', limits: {}, cell: {} }
    })!;
    expect(footerText(beside)).toBe(
      'container s [host] | status n/a | wall n/a | cpu n/a user, n/a sys | mem n/a | ' +
        'pids n/a | io r n/a w n/a | net rx n/a tx n/a'
    );
  });

  it('takes a missing or unknown place as beside, and knows output and off', () => {
    expect(parseBeside({ stats: contract() })!.footer).toBe('beside');
    expect(parseBeside({ stats: contract(), footer: 'sideways' })!.footer).toBe('beside');
    expect(parseBeside({ stats: contract(), footer: 'output' })!.footer).toBe('output');
    expect(besideOfRecord({ cell_id: 'c', stats: contract(), footer: 'off' })!.footer).toBe('off');
  });

  it('is null where there is no contract', () => {
    expect(besideOfMetadata({ started: 'x' })).toBeNull();
    expect(besideOfMetadata(null)).toBeNull();
    expect(parseBeside({ stats: { image: 'host' } })).toBeNull();
    expect(besideOfRecord('nope')).toBeNull();
  });

  it('calls a layer full as Python does', () => {
    expect(diskFull(536000000, 536870912)).toBe(true);
    expect(diskFull(1 << 20, 536870912)).toBe(false);
    expect(diskFull(null, 536870912)).toBe(false);
  });

  it('draws one part per figure, the status for the theme to colour', () => {
    const node = renderFooter(besideOfMetadata({ [METADATA_KEY]: { stats: contract() } })!);
    expect(node.className).toBe('jp-SandboxFooter');
    expect(node.getAttribute('data-status')).toBe('oom');
    const labels = Array.from(node.children).map(c => c.getAttribute('data-label'));
    expect(labels.slice(0, 3)).toEqual(['container', 'status', 'wall']);
    expect(node.textContent).toContain('mem 50 MiB (peak 59 MiB) / 256 MiB');
  });

  it('names the refusals of --net bridge as Python does', () => {
    // session/stats.py footer_text of tests/unit/test_net_session_units.py contract_with_refusals
    const stats = {
      session: 's', image: 'host', limits: { memory: null, cpus: null, pids: null, timeout: null },
      cell: {
        execution_count: 2, wall: 0.5, net_rx: 2097152, net_tx: 3072, net_refused: 4, status: 'ok',
        net_refusals: [
          { destination: '198.18.1.13', names: [], protocol: 'tcp', port: 80, count: 2 },
          { destination: '198.18.1.12', names: ['example.com'], protocol: 'tcp', port: 443, count: 1 },
          { destination: 'example.com', names: ['example.com'], protocol: 'dns', port: 53, count: 1 }
        ]
      },
      network: { mode: 'bridge', allow: ['pypi.org'], rate: 10000000 }
    };
    expect(footerText(parseBeside({ stats })!)).toBe(
      'container s [host] | status ok | wall 500 ms | cpu n/a user, n/a sys | mem n/a | ' +
        'pids n/a | io r n/a w n/a | net rx 2 MiB tx 3 KiB at 10 Mbit/s | refused 4: ' +
        '198.18.1.13 tcp/80 x2, 198.18.1.12 (example.com) tcp/443, example.com (name not allowed)'
    );
    const node = renderFooter(parseBeside({ stats })!);
    expect(node.querySelector('[data-label="refused"]')).not.toBeNull();
  });

  it('says no refusal where nothing filters, and keeps a long list short', () => {
    const beside = parseBeside({ stats: contract() })!;
    expect(beside.extras.net_refused).toBeNull();
    expect(footerText(beside)).not.toContain('refused 0');
    const many = Array.from({ length: 10 }, (_, n) => ({
      destination: `198.18.1.${n}`, names: [], protocol: 'tcp', port: 80, count: 1
    }));
    const long = parseBeside({
      stats: { ...contract(), cell: { ...contract().cell, net_refused: 10, net_refusals: many } }
    })!;
    expect(footerText(long)).toContain('refused 10: 198.18.1.0 tcp/80, ');
    expect(footerText(long)).toContain('198.18.1.3 tcp/80, 6 more');
  });

  it('escapes nothing by hand: the session name is text, never markup', () => {
    const stats = { ...contract(), session: '<img src=x onerror=alert(1)>' };
    const node = renderFooter(parseBeside({ stats })!);
    expect(node.querySelector('img')).toBeNull();
    expect(node.textContent).toContain('<img src=x onerror=alert(1)>');
  });
});

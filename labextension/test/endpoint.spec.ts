/**
 * A kernel the sandbox provisioner started, as the stats endpoint tells it
 * (sandbox_kernel/server): the same message as the comm's, with its deaths
 * and no per-cell table; the panel says why there is no table and shows the
 * deaths in plain words; the websocket's URL carries the token only when the
 * settings say so.
 */
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { socketUrl, statsPath } from '../src/endpoint';
import { deathKey, parseMessage, StatsModel } from '../src/model';
import { SandboxStatsPanel } from '../src/panel';

const OOM = {
  reason: 'oom',
  message: 'the R kernel ran out of memory at the 256 MiB limit (peak 256 MiB)',
  at: 1_800_000_000.5,
  exit_code: null,
  signal: 9,
  memory_peak: 268435456,
  memory_limit: 268435456
};

function endpointMessage(extra: Record<string, unknown> = {}): any {
  return {
    protocol: 1,
    event: 'snapshot',
    kernel: 'provisioned',
    reason: 'request',
    time: 1,
    sessions: [
      {
        stats: {
          session: 'R (sandbox)',
          image: 'host',
          limits: { memory: 268435456, cpus: 1, pids: 64, timeout: null },
          cell: { wall: 12, cpu_user: 1, cpu_system: 0.5, memory_current: 50 * 2 ** 20,
                  memory_limit: 268435456, pids_current: 3, pids_limit: 64, status: null }
        },
        state: 'running',
        uptime: 12,
        network: 'none'
      }
    ],
    running: null,
    cell: null,
    history: [],
    policy: null,
    kernel_id: 'k1',
    language: 'R',
    display_name: 'R (sandbox)',
    deaths: [OOM],
    per_cell: false,
    ...extra
  };
}

class FakeConnection {
  model = new StatsModel();
  probing = false;
  hasKernel = true;
  kernelDisplayName = 'R (sandbox)';
  probeEnded = new Signal<this, void>(this);
  request(): void {}
}

describe('the stats endpoint', () => {
  afterEach(() => document.body.replaceChildren());

  it('parses its deaths and says no cell is measured alone', () => {
    const message = parseMessage(endpointMessage())!;
    expect(message.perCell).toBe(false);
    expect(message.language).toBe('R');
    expect(message.deaths).toEqual([
      { reason: 'oom', message: OOM.message, at: OOM.at, memoryPeak: 268435456, memoryLimit: 268435456 }
    ]);
    expect(deathKey(message.deaths![0])).toBe(`${OOM.at}:oom`);
  });

  it('drops a death without words or time, and the comm has none', () => {
    const message = parseMessage(endpointMessage({ deaths: [{ reason: 'oom' }, { message: 'x' }] }))!;
    expect(message.deaths).toEqual([]);
    const comm = parseMessage({ ...endpointMessage(), deaths: undefined, per_cell: undefined })!;
    expect(comm.deaths).toBeNull();
    expect(comm.perCell).toBe(true);
  });

  it('keeps the deaths through a restart, forgets them with the kernel', () => {
    const model = new StatsModel();
    model.apply(parseMessage(endpointMessage())!);
    model.reset();
    expect(model.deaths.map(d => d.reason)).toEqual(['oom']);
    model.forgetKernel();
    expect(model.deaths).toEqual([]);
  });

  it('draws the gauges, the death and why there is no table', () => {
    const connection = new FakeConnection();
    connection.model.apply(parseMessage(endpointMessage())!);
    const panel = new SandboxStatsPanel();
    Widget.attach(panel, document.body);
    panel.setTarget({ title: 'r.ipynb', connection: connection as any, scrollToCell: () => true });
    (panel as any).onUpdateRequest();
    const node = panel.node;
    expect(node.querySelector('.sbk-memory-current')!.getAttribute('data-value')).toBe(String(50 * 2 ** 20));
    expect(node.querySelector('.sbk-death-text')!.textContent).toBe(OOM.message);
    expect(node.querySelector('.sbk-no-per-cell')!.textContent).toContain('The R kernel runs whole inside one container');
    expect(node.querySelector('.sbk-table')).toBeNull();
    expect(node.querySelector('.sbk-cpu-rate')!.textContent).not.toBe('idle');
    panel.dispose();
  });

  it('puts the token in the socket URL only when the settings append it', () => {
    const settings: any = { wsUrl: 'ws://h/base/', token: 't k', appendToken: true };
    expect(socketUrl(settings, 'a/b')).toBe('ws://h/base/sandbox-kernel/api/kernels/a%2Fb/stats/ws?token=t%20k');
    expect(socketUrl({ ...settings, appendToken: false }, 'k')).toBe('ws://h/base/' + statsPath('k') + '/ws');
  });
});

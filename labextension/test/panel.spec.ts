/**
 * The panel drawn from a model: "n/a" for unknown figures, the limit, the
 * rows with their status, "not sandboxed", a click on a row.
 */
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { parseMessage, StatsModel } from '../src/model';
import { SandboxStatsPanel } from '../src/panel';

function contract(cell: Record<string, unknown>): any {
  return {
    session: 'default',
    image: 'host',
    limits: { memory: 536870912, cpus: 1, pids: 64, timeout: null },
    cell: {
      execution_count: 1,
      wall: 3.5,
      cpu_user: 1,
      cpu_system: 0.5,
      memory_current: 150 * 2 ** 20,
      memory_peak: 160 * 2 ** 20,
      memory_limit: 536870912,
      pids_current: 1,
      pids_peak: null,
      pids_limit: 64,
      io_read: null,
      io_write: null,
      net_rx: null,
      net_tx: null,
      oom_kills: 0,
      throttled_time: null,
      status: null,
      ...cell
    }
  };
}

class FakeConnection {
  model = new StatsModel();
  probing = false;
  hasKernel = true;
  kernelDisplayName = 'Python 3 (ipykernel)';
  probeEnded = new Signal<this, void>(this);
  requests = 0;
  request(): void {
    this.requests++;
  }
}

function mount(connection: FakeConnection, clicked: any[] = []): SandboxStatsPanel {
  const panel = new SandboxStatsPanel();
  Widget.attach(panel, document.body);
  panel.setTarget({
    title: 'demo.ipynb',
    connection: connection as any,
    scrollToCell: record => {
      clicked.push(record);
      return true;
    }
  });
  panel.update();
  return panel;
}

function flush(panel: SandboxStatsPanel): void {
  // Lumino posts update requests; deliver them now
  (panel as any).onUpdateRequest();
}

describe('SandboxStatsPanel', () => {
  afterEach(() => {
    document.body.replaceChildren();
  });

  it('says "not sandboxed" for another kernel', () => {
    const connection = new FakeConnection();
    const panel = mount(connection);
    flush(panel);
    expect(panel.node.querySelector('.sbk-not-sandboxed-label')!.textContent).toBe('not sandboxed');
    expect(panel.node.textContent).toContain('Python 3 (ipykernel)');
    expect(connection.requests).toBe(1);
    panel.dispose();
  });

  it('waits for a kernel before saying anything about it', () => {
    const connection = new FakeConnection();
    connection.hasKernel = false;
    const panel = mount(connection);
    flush(panel);
    expect(panel.node.querySelector('.sbk-not-sandboxed-label')).toBeNull();
    expect(panel.node.querySelector('.sbk-no-kernel')).not.toBeNull();
    panel.dispose();
  });

  it('shows the limit, the peak and n/a for unknown figures, never 0', () => {
    const connection = new FakeConnection();
    const panel = mount(connection);
    const session = { stats: contract({}), state: 'running', uptime: 3.5, network: 'none' };
    const row = {
      session: 'default',
      cell_id: 'cell-a',
      execution_count: 1,
      stats: contract({ status: 'oom', memory_peak: null })
    };
    connection.model.apply(
      parseMessage({
        protocol: 1,
        event: 'snapshot',
        kernel: 'sandbox',
        sessions: [session],
        running: null,
        cell: null,
        history: [row]
      })!
    );
    flush(panel);
    const node = panel.node;
    expect(node.querySelector('.sbk-memory-limit')!.textContent).toBe('512 MiB');
    expect(node.querySelector('.sbk-memory-peak')!.textContent).toBe('160 MiB');
    expect(node.querySelector('.sbk-memory-peak')!.getAttribute('data-value')).toBe(
      String(160 * 2 ** 20)
    );
    expect(node.querySelector('.sbk-cpu-rate')!.textContent).toBe('idle');
    const tr = node.querySelector('tr.sbk-row') as HTMLElement;
    expect(tr.dataset.status).toBe('oom');
    expect(tr.dataset.memoryPeak).toBe('null');
    const texts = Array.from(tr.querySelectorAll('td')).map(td => td.textContent);
    expect(texts).toEqual(['1', 'oom', '3.50 s', '1.50 s', 'n/a', 'n/a / n/a', 'n/a / n/a']);
    panel.dispose();
  });

  it('shows the sandbox kernel\'s policy', () => {
    const connection = new FakeConnection();
    const panel = mount(connection);
    const session = { stats: contract({}), state: 'running', uptime: 3.5, network: 'none' };
    connection.model.apply(
      parseMessage({
        protocol: 1,
        event: 'snapshot',
        kernel: 'sandbox',
        sessions: [session],
        running: null,
        cell: null,
        history: [],
        policy: {
          name: 'classroom',
          text: 'classroom (caps: memory 1 GiB)',
          caps: { memory: 1 }
        }
      })!
    );
    flush(panel);
    const policy = panel.node.querySelector('.sbk-policy') as HTMLElement;
    expect(policy.dataset.policy).toBe('classroom');
    expect(policy.textContent).toBe('policy: classroom (caps: memory 1 GiB)');
    panel.dispose();
  });

  it('scrolls to the cell of a clicked row', () => {
    const connection = new FakeConnection();
    const clicked: any[] = [];
    const panel = mount(connection, clicked);
    connection.model.apply(
      parseMessage({
        protocol: 1,
        event: 'cell_end',
        kernel: 'magics',
        sessions: [],
        running: null,
        cell: { session: 'default', cell_id: 'cell-b', execution_count: 4, stats: contract({ status: 'ok' }) }
      })!
    );
    flush(panel);
    (panel.node.querySelector('tr.sbk-row') as HTMLElement).click();
    expect(clicked.map(r => r.cellId)).toEqual(['cell-b']);
    panel.dispose();
  });
});

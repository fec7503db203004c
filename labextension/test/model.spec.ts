/**
 * The panel's model: the stats contract parsed (nulls stay null, never 0),
 * the comm's envelope, the bounded rings, CPU rates.
 */
import {
  cpuRate,
  HISTORY_SIZE,
  ICellRecord,
  IStatsMessage,
  parseMessage,
  parseStats,
  Ring,
  SAMPLE_CAPACITY,
  StatsModel
} from '../src/model';

/** A contract as session/stats.py builds it (its docstring's example). */
function contract(cell: Record<string, unknown> = {}, session = 'default'): any {
  return {
    session,
    image: 'host',
    limits: { memory: 268435456, cpus: 1.0, pids: 64, timeout: 30.0 },
    cell: {
      execution_count: 3,
      wall: 0.21,
      cpu_user: 0.18,
      cpu_system: 0.02,
      memory_current: 52428800,
      memory_peak: 61865984,
      memory_limit: 268435456,
      pids_current: 2,
      pids_peak: 3,
      pids_limit: 64,
      io_read: 0,
      io_write: 4096,
      net_rx: 0,
      net_tx: 0,
      oom_kills: 0,
      throttled_time: 0.0,
      status: 'ok',
      ...cell
    }
  };
}

function envelope(event: string, extra: Record<string, unknown> = {}): any {
  return {
    protocol: 1,
    event,
    kernel: 'sandbox',
    time: 1732750000.5,
    sessions: [
      {
        stats: contract({ status: null, wall: 12.5 }),
        state: 'running',
        uptime: 12.5,
        network: 'none'
      }
    ],
    running: null,
    cell: null,
    ...extra
  };
}

function record(count: number, status = 'ok', session = 'default'): any {
  return {
    session,
    cell_id: `cell-${count}`,
    execution_count: count,
    stats: contract({ execution_count: count, status }, session)
  };
}

describe('parseStats: the contract', () => {
  it('reads every field of the contract', () => {
    const stats = parseStats(contract())!;
    expect(stats.session).toBe('default');
    expect(stats.image).toBe('host');
    expect(stats.limits).toEqual({ memory: 268435456, cpus: 1, pids: 64, timeout: 30 });
    expect(stats.cell.memory_peak).toBe(61865984);
    expect(stats.cell.io_write).toBe(4096);
    expect(stats.cell.status).toBe('ok');
  });

  it('keeps a measured 0 as 0', () => {
    const stats = parseStats(contract())!;
    expect(stats.cell.io_read).toBe(0);
    expect(stats.cell.oom_kills).toBe(0);
  });

  it('keeps nulls null, never 0', () => {
    const stats = parseStats(
      contract({ memory_peak: null, pids_peak: null, net_rx: null, net_tx: null, io_read: null })
    )!;
    expect(stats.cell.memory_peak).toBeNull();
    expect(stats.cell.pids_peak).toBeNull();
    expect(stats.cell.net_rx).toBeNull();
    expect(stats.cell.net_tx).toBeNull();
    expect(stats.cell.io_read).toBeNull();
  });

  it('makes missing fields, strings and non-finite numbers null', () => {
    const raw = contract({ wall: 'fast', cpu_user: Infinity, cpu_system: NaN });
    delete raw.cell.memory_current;
    const stats = parseStats(raw)!;
    expect(stats.cell.wall).toBeNull();
    expect(stats.cell.cpu_user).toBeNull();
    expect(stats.cell.cpu_system).toBeNull();
    expect(stats.cell.memory_current).toBeNull();
  });

  it('reads unlimited limits as null', () => {
    const raw = contract();
    raw.limits = { memory: null, cpus: null, pids: null, timeout: null };
    expect(parseStats(raw)!.limits).toEqual({ memory: null, cpus: null, pids: null, timeout: null });
  });

  it('accepts only the five statuses', () => {
    for (const status of ['ok', 'error', 'timeout', 'oom', 'killed']) {
      expect(parseStats(contract({ status }))!.cell.status).toBe(status);
    }
    expect(parseStats(contract({ status: 'exploded' }))!.cell.status).toBeNull();
    expect(parseStats(contract({ status: null }))!.cell.status).toBeNull();
  });

  it('is null for what is not a contract', () => {
    expect(parseStats(null)).toBeNull();
    expect(parseStats([])).toBeNull();
    expect(parseStats({ image: 'host' })).toBeNull();
  });
});

describe('parseMessage: the comm envelope', () => {
  it('reads a snapshot with its history', () => {
    const message = parseMessage(
      envelope('snapshot', { reason: 'open', history: [record(1), record(2, 'oom')] })
    )!;
    expect(message.event).toBe('snapshot');
    expect(message.kernel).toBe('sandbox');
    expect(message.sessions).toHaveLength(1);
    expect(message.sessions[0].uptime).toBe(12.5);
    expect(message.sessions[0].stats.cell.status).toBeNull();
    expect(message.history!.map(r => r.executionCount)).toEqual([1, 2]);
    expect(message.history![1].stats.cell.status).toBe('oom');
    expect(message.history![0].cellId).toBe('cell-1');
  });

  it('reads the policy of a snapshot, caps null when there is none', () => {
    const text = 'classroom (caps: memory 1 GiB, cpus 1, pids 256, timeout no cap)';
    const message = parseMessage(
      envelope('snapshot', {
        history: [],
        policy: {
          name: 'classroom',
          text,
          caps: { memory: 1073741824, timeout: null, cpus: 'x' }
        }
      })
    )!;
    expect(message.policy).toEqual({
      name: 'classroom',
      text,
      caps: { memory: 1073741824, timeout: null, cpus: null }
    });
    expect(parseMessage(envelope('snapshot', { history: [], policy: null }))!.policy).toBeNull();
    expect(parseMessage(envelope('tick'))!.policy).toBeNull();
    const model = new StatsModel();
    model.apply(message);
    expect(model.policy!.name).toBe('classroom');
    model.apply(parseMessage(envelope('tick'))!);
    expect(model.policy!.name).toBe('classroom');      // ticks carry none: kept
    model.reset();
    expect(model.policy).toBeNull();
  });

  it('reads a cell_end row; history is null outside snapshots', () => {
    const message = parseMessage(envelope('cell_end', { cell: record(7, 'error') }))!;
    expect(message.cell!.executionCount).toBe(7);
    expect(message.cell!.stats.cell.status).toBe('error');
    expect(message.history).toBeNull();
  });

  it('reads the running cell of a tick', () => {
    const running = { session: 'default', cell_id: 'abc', execution_count: 4, elapsed: 2.5 };
    const message = parseMessage(envelope('tick', { running }))!;
    expect(message.running).toEqual({
      session: 'default',
      cellId: 'abc',
      executionCount: 4,
      elapsed: 2.5
    });
  });

  it('takes the notebook count of a row over the container count', () => {
    const row = record(2);
    row.execution_count = 9;
    expect(parseMessage(envelope('cell_end', { cell: row }))!.cell!.executionCount).toBe(9);
    row.execution_count = null;
    expect(parseMessage(envelope('cell_end', { cell: row }))!.cell!.executionCount).toBe(2);
  });

  it('drops rows and sessions that are not contracts', () => {
    const message = parseMessage(
      envelope('snapshot', { history: [record(1), { stats: 'nope' }, 5], sessions: [{}, null] })
    )!;
    expect(message.history).toHaveLength(1);
    expect(message.sessions).toHaveLength(0);
  });

  it('refuses unknown events and other protocols', () => {
    expect(parseMessage(envelope('explode'))).toBeNull();
    expect(parseMessage({ ...envelope('tick'), protocol: 2 })).toBeNull();
    expect(parseMessage('tick')).toBeNull();
  });

  it('reads a bare contract, the event in metadata', () => {
    const end = parseMessage(contract({ status: 'oom' }), 'cell_end')!;
    expect(end.event).toBe('cell_end');
    expect(end.cell!.stats.cell.status).toBe('oom');
    const tick = parseMessage(contract({ status: null }), 'tick')!;
    expect(tick.sessions).toHaveLength(1);
    expect(tick.running!.session).toBe('default');
    expect(parseMessage(contract(), 'open')!.event).toBe('snapshot');
  });
});

describe('Ring', () => {
  it('keeps at most its capacity, the newest', () => {
    const ring = new Ring<number>(3);
    for (let i = 1; i <= 10; i++) {
      ring.push(i);
      expect(ring.length).toBeLessThanOrEqual(3);
    }
    expect(ring.toArray()).toEqual([8, 9, 10]);
    expect(ring.last()).toBe(10);
  });

  it('gives copies, and can be emptied', () => {
    const ring = new Ring<number>(2);
    ring.push(1);
    ring.toArray().push(99);
    expect(ring.toArray()).toEqual([1]);
    ring.clear();
    expect(ring.length).toBe(0);
  });

  it('refuses a capacity below one', () => {
    expect(() => new Ring<number>(0)).toThrow();
  });
});

function apply(model: StatsModel, data: any, now: number, metadataEvent?: string): void {
  const message = parseMessage(data, metadataEvent) as IStatsMessage;
  expect(message).not.toBeNull();
  model.apply(message, now);
}

function sessionEntry(wall: number, cpu: number, memory: number | null, session = 'default'): any {
  return {
    stats: contract(
      { status: null, wall, cpu_user: cpu, cpu_system: 0, memory_current: memory },
      session
    ),
    state: 'running',
    uptime: wall,
    network: 'none'
  };
}

describe('StatsModel', () => {
  it('is disconnected and empty until a message comes', () => {
    const model = new StatsModel();
    expect(model.connected).toBe(false);
    expect(model.sessions).toEqual([]);
    expect(model.cells).toEqual([]);
  });

  it('takes a snapshot: sessions, rows, connected', () => {
    const model = new StatsModel();
    let changes = 0;
    model.changed.connect(() => changes++);
    apply(model, envelope('snapshot', { history: [record(1), record(2)] }), 1000);
    expect(model.connected).toBe(true);
    expect(model.kernelKind).toBe('sandbox');
    expect(model.sessions.map(s => s.entry.stats.session)).toEqual(['default']);
    expect(model.cells.map(c => c.executionCount)).toEqual([1, 2]);
    expect(changes).toBe(1);
  });

  it('adds a row per cell_end and replaces all rows on a snapshot', () => {
    const model = new StatsModel();
    apply(model, envelope('cell_end', { cell: record(1) }), 1000);
    apply(model, envelope('cell_end', { cell: record(2, 'oom') }), 2000);
    expect(model.cells.map(c => c.stats.cell.status)).toEqual(['ok', 'oom']);
    apply(model, envelope('snapshot', { history: [record(5)] }), 3000);
    expect(model.cells.map(c => c.executionCount)).toEqual([5]);
  });

  it('keeps at most historySize rows, the newest', () => {
    const model = new StatsModel(5);
    for (let i = 1; i <= 12; i++) {
      apply(model, envelope('cell_end', { cell: record(i) }), i * 1000);
    }
    expect(model.cells.map(c => c.executionCount)).toEqual([8, 9, 10, 11, 12]);
    const big = Array.from({ length: 40 }, (_, i) => record(i));
    apply(model, envelope('snapshot', { history: big }), 20000);
    expect(model.cells).toHaveLength(5);
    expect(model.cells[4].executionCount).toBe(39);
  });

  it('keeps the default history as large as the kernel keeps (100)', () => {
    const model = new StatsModel();
    for (let i = 1; i <= HISTORY_SIZE + 20; i++) {
      apply(model, envelope('cell_end', { cell: record(i) }), i);
    }
    expect(model.cells).toHaveLength(HISTORY_SIZE);
  });

  it('bounds the samples of a session', () => {
    const model = new StatsModel(HISTORY_SIZE, 4);
    for (let i = 1; i <= 10; i++) {
      apply(model, envelope('tick', { sessions: [sessionEntry(i, i * 0.5, i * 1000)] }), i * 1000);
    }
    const samples = model.session('default')!.samples;
    expect(samples.length).toBe(4);
    expect(samples.toArray().map(s => s.memory)).toEqual([7000, 8000, 9000, 10000]);
    expect(SAMPLE_CAPACITY).toBeGreaterThanOrEqual(300);
  });

  it('tracks the running cell until cell_end', () => {
    const model = new StatsModel();
    const running = { session: 'default', cell_id: 'c', execution_count: 3, elapsed: 0 };
    apply(model, envelope('cell_start', { running }), 1000);
    expect(model.running!.executionCount).toBe(3);
    apply(model, envelope('tick', { running: { ...running, elapsed: 1.0 } }), 2000);
    expect(model.running!.elapsed).toBe(1.0);
    apply(model, envelope('cell_end', { cell: record(3) }), 3000);
    expect(model.running).toBeNull();
  });

  it('measures cores from successive figures, null samples stay null', () => {
    const model = new StatsModel();
    apply(model, envelope('tick', { sessions: [sessionEntry(10, 1.0, null)] }), 1000);
    expect(model.session('default')!.cpuRate).toBeNull();
    apply(model, envelope('tick', { sessions: [sessionEntry(11, 1.5, 2048)] }), 2000);
    const view = model.session('default')!;
    expect(view.cpuRate).toBeCloseTo(0.5);
    expect(view.samples.toArray().map(s => s.memory)).toEqual([null, 2048]);
  });

  it('forgets sessions the kernel no longer lists', () => {
    const model = new StatsModel();
    apply(
      model,
      envelope('snapshot', { sessions: [sessionEntry(1, 0, 1), sessionEntry(1, 0, 1, 'grader')] }),
      1000
    );
    expect(model.sessions).toHaveLength(2);
    apply(model, envelope('tick', { sessions: [sessionEntry(2, 0, 1, 'grader')] }), 2000);
    expect(model.sessions.map(s => s.entry.stats.session)).toEqual(['grader']);
  });

  it('resets on a restart', () => {
    const model = new StatsModel();
    apply(model, envelope('snapshot', { history: [record(1)] }), 1000);
    model.reset();
    expect(model.connected).toBe(false);
    expect(model.cells).toEqual([]);
    expect(model.sessions).toEqual([]);
  });

  it('adds the row of a bare cell_end contract', () => {
    const model = new StatsModel();
    apply(model, contract({ status: 'timeout' }), 1000, 'cell_end');
    const cells: ICellRecord[] = model.cells;
    expect(cells).toHaveLength(1);
    expect(cells[0].stats.cell.status).toBe('timeout');
  });
});

describe('cpuRate', () => {
  const at = (wall: number | null, user: number | null, system: number | null = 0): any => ({
    stats: parseStats(contract({ wall, cpu_user: user, cpu_system: system })),
    state: 'running',
    uptime: wall,
    network: null
  });

  it('is cpu seconds over wall seconds', () => {
    expect(cpuRate(at(10, 2), at(12, 3.5))).toBeCloseTo(0.75);
  });

  it('is null when a figure is unknown', () => {
    expect(cpuRate(at(10, null), at(12, 3))).toBeNull();
    expect(cpuRate(at(10, 1, null), at(12, 3))).toBeNull();
    expect(cpuRate(at(null, 1), at(12, 3))).toBeNull();
  });

  it('is null when the container was replaced', () => {
    expect(cpuRate(at(50, 20), at(1, 0.5))).toBeNull();
  });

  it('keeps the last rate over a too short interval', () => {
    expect(cpuRate(at(10, 2), at(10.1, 2.05), 0.4)).toBe(0.4);
  });
});

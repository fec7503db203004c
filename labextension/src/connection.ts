/**
 * One notebook's link to its kernel's `sandbox_kernel.stats` comm.
 *
 *   kernel ready  --  kernel_info says "sandbox-kernel"      -> open a comm
 *                 \-  another kernel: comm_info lists comms  -> open a comm
 *                     of the target (the magics were loaded     (the magics
 *                     by an earlier page)                        are there)
 *                 \-  neither: ask the server's stats endpoint (endpoint.ts):
 *                     a kernel the sandbox provisioner started (R, bash...)
 *                     streams its container's stats over a websocket
 *                 \-  none of these: wait; `%load_ext sandbox_kernel` opens one
 *                     from the kernel, accepted by the target registered here
 *   restart       -> forget everything, then the same again; but the
 *                    endpoint's socket stays (it names the kernel, not its
 *                    process) and so does the death that caused the restart
 *
 * Every message feeds the notebook's StatsModel.  `request()` asks for a
 * snapshot (the panel shows this notebook again).
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { EndpointStats } from './endpoint';
import { deathKey, IDeath, IStatsMessage, parseMessage, StatsModel, TARGET } from './model';

/** Deaths older than this when first seen are shown in the panel but not notified. */
export const NOTIFY_WITHIN_SECONDS = 600;

export const SANDBOX_IMPLEMENTATION = 'sandbox-kernel';
/** The stats endpoint's kind for a kernel the sandbox provisioner started (sandbox_kernel/server). */
export const KIND_PROVISIONED = 'provisioned';

export class KernelStatsConnection {
  constructor(readonly sessionContext: ISessionContext) {
    sessionContext.kernelChanged.connect(this._onKernelChanged, this);
    sessionContext.statusChanged.connect(this._onStatusChanged, this);
    this._attach(sessionContext.session?.kernel ?? null);
  }

  readonly model = new StatsModel();

  /** Fires when this notebook's kernel turns out to be sandboxed (once per kernel). */
  get sandboxed(): ISignal<this, void> {
    return this._sandboxed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** The kernel's display name, for "not sandboxed: <name>". */
  get kernelDisplayName(): string {
    return this.sessionContext.kernelDisplayName;
  }

  /** True until the kernel has answered whether it is sandboxed. */
  get probing(): boolean {
    return this._probing;
  }

  /** False while the notebook has no kernel (none chosen, or still starting). */
  get hasKernel(): boolean {
    return this._kernel !== null;
  }

  /** Fires once per death of the kernel the stats endpoint reports (for a notification). */
  get died(): ISignal<this, IDeath> {
    return this._died;
  }

  /** True when the stats come from the server's endpoint, not a comm. */
  get viaEndpoint(): boolean {
    return this._endpoint !== null;
  }

  /** Ask for a snapshot (sessions and every cell row). */
  request(): void {
    if (this._comm && !this._comm.isDisposed) {
      this._comm.send({ request: 'stats' });
    } else if (this._endpoint) {
      this._endpoint.request();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this.sessionContext.kernelChanged.disconnect(this._onKernelChanged, this);
    this.sessionContext.statusChanged.disconnect(this._onStatusChanged, this);
    this._detach();
    Signal.clearData(this);
  }

  private _onKernelChanged(
    _: ISessionContext,
    change: { newValue: Kernel.IKernelConnection | null }
  ): void {
    this._detach();
    this.model.forgetKernel();
    this._attach(change.newValue);
  }

  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
    if (this._endpoint) {
      return; // the endpoint follows the kernel through restarts; it says "restarting"
    }
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // the kernel's comms are gone with it
      this._comm = null;
      this.model.reset();
      this._needsProbe = status !== 'dead';
    } else if (status === 'idle' && this._needsProbe && this._kernel) {
      this._needsProbe = false;
      void this._probe(this._kernel);
    }
  }

  private _attach(kernel: Kernel.IKernelConnection | null): void {
    this._kernel = kernel;
    if (!kernel || !kernel.handleComms) {
      this._probing = false;
      this.model.reset();
      this._probeEnded.emit();
      return;
    }
    kernel.registerCommTarget(TARGET, this._onKernelOpened);
    void this._probe(kernel);
  }

  private _detach(): void {
    const kernel = this._kernel;
    this._kernel = null;
    if (kernel && !kernel.isDisposed) {
      kernel.removeCommTarget(TARGET, this._onKernelOpened);
    }
    if (this._comm && !this._comm.isDisposed) {
      this._comm.dispose();
    }
    this._comm = null;
    this._dropEndpoint();
  }

  private _dropEndpoint(): void {
    if (this._endpoint) {
      this._endpoint.dispose();
      this._endpoint = null;
    }
  }

  /** Open our comm if the kernel has the target; else wait to be announced. */
  private async _probe(kernel: Kernel.IKernelConnection): Promise<void> {
    this._probing = true;
    this.model.reset();
    try {
      const info = await kernel.info;
      let hasTarget = info.implementation === SANDBOX_IMPLEMENTATION;
      // a provisioned kernel first: the server knows it without asking the
      // kernel, whose language may not answer comm_info (IRkernel and others)
      if (!hasTarget && (await this._tryEndpoint(kernel))) {
        return;
      }
      if (!hasTarget) {
        const reply = await kernel.requestCommInfo({ target_name: TARGET });
        const comms = reply.content.status === 'ok' ? reply.content.comms : {};
        hasTarget = Object.keys(comms).length > 0;
      }
      if (hasTarget && kernel === this._kernel && !this._comm) {
        this._openComm(kernel);
      }
    } catch (error) {
      console.warn('sandbox-kernel panel: cannot ask the kernel for its stats', error);
    } finally {
      this._probing = false;
      this._probeEnded.emit();
    }
  }

  /**
   * A kernel the sandbox provisioner started: its stats from the server's
   * endpoint (true).  False for any other kernel (the sandbox kernel and
   * the magics have their comm, which says more: the cells' rows).
   */
  private async _tryEndpoint(kernel: Kernel.IKernelConnection): Promise<boolean> {
    if (this._endpoint?.kernelId === kernel.id) {
      return true;
    }
    const endpoint = new EndpointStats(kernel.id, kernel.serverSettings);
    let first: IStatsMessage | null = null;
    try {
      first = await endpoint.probe();
    } catch (error) {
      console.warn('sandbox-kernel panel: the stats endpoint did not answer', error);
    }
    if (first === null || first.kernel !== KIND_PROVISIONED || kernel !== this._kernel ||
        this._comm || this._disposed) {
      endpoint.dispose();
      return false;
    }
    this._dropEndpoint();
    this._endpoint = endpoint;
    this._applyEndpoint(first);
    endpoint.message.connect((_, message) => this._applyEndpoint(message), this);
    endpoint.open();
    return true;
  }

  private _applyEndpoint(message: IStatsMessage): void {
    if (this._comm) {
      return; // a comm opened meanwhile (the magics): it says more
    }
    const wasConnected = this.model.connected;
    this.model.apply(message);
    if (!wasConnected) {
      this._sandboxed.emit();
    }
    const recent = Date.now() / 1000 - NOTIFY_WITHIN_SECONDS;
    for (const death of message.deaths ?? []) {
      const key = deathKey(death);
      if (!this._seenDeaths.has(key)) {
        this._seenDeaths.add(key);
        if (death.at >= recent) {
          this._died.emit(death);
        }
      }
    }
  }

  private _openComm(kernel: Kernel.IKernelConnection): void {
    const comm = kernel.createComm(TARGET);
    this._adopt(comm);
    comm.open({ request: 'stats' });
  }

  /** The kernel opened a comm to us (the magics were loaded just now). */
  private _onKernelOpened = (
    comm: Kernel.IComm,
    msg: KernelMessage.ICommOpenMsg
  ): void => {
    if (this._disposed) {
      comm.close();
      return;
    }
    this._adopt(comm);
  };

  private _adopt(comm: Kernel.IComm): void {
    this._dropEndpoint();
    const previous = this._comm;
    this._comm = comm;
    if (previous && previous !== comm && !previous.isDisposed) {
      previous.close();
    }
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
      if (comm !== this._comm) {
        return;
      }
      const parsed = parseMessage(msg.content.data, msg.metadata?.event);
      if (parsed !== null) {
        const wasConnected = this.model.connected;
        this.model.apply(parsed);
        if (!wasConnected) {
          this._sandboxed.emit();
        }
        if (parsed.event === 'cell_end') {
          const data = msg.content.data as { cell?: unknown };
          this._cellEnded.emit({ kernel: parsed.kernel, record: data.cell ?? null });
        }
      }
    };
    comm.onClose = () => {
      if (comm === this._comm) {
        this._comm = null;
        this.model.setConnected(false);
      }
    };
  }

  /**
   * Fires at each cell_end with the kernel's kind and the raw cell row (its
   * cell_id, stats and footer place): the magics' footer is drawn from it.
   */
  get cellEnded(): ISignal<this, ICellEnded> {
    return this._cellEnded;
  }

  /** Fires when a probe has ended, whatever it found. */
  get probeEnded(): ISignal<this, void> {
    return this._probeEnded;
  }

  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  private _disposed = false;
  private _probing = true;
  private _needsProbe = false;
  private _sandboxed = new Signal<this, void>(this);
  private _probeEnded = new Signal<this, void>(this);
  private _cellEnded = new Signal<this, ICellEnded>(this);
  private _died = new Signal<this, IDeath>(this);
  private _endpoint: EndpointStats | null = null;
  private _seenDeaths = new Set<string>();
}

/** A cell_end: who sent it ("sandbox", "magics") and its cell row, unparsed. */
export interface ICellEnded {
  kernel: string | null;
  record: unknown;
}

/**
 * One notebook's link to its kernel's `sandbox_kernel.stats` comm.
 *
 *   kernel ready  --  kernel_info says "sandbox-kernel"      -> open a comm
 *                 \-  another kernel: comm_info lists comms  -> open a comm
 *                     of the target (the magics were loaded     (the magics
 *                     by an earlier page)                        are there)
 *                 \-  neither: wait; `%load_ext sandbox_kernel` opens one
 *                     from the kernel, accepted by the target registered here
 *   restart       -> forget everything, then the same again
 *
 * Every message feeds the notebook's StatsModel.  `request()` asks for a
 * snapshot (the panel shows this notebook again).
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { parseMessage, StatsModel, TARGET } from './model';

export const SANDBOX_IMPLEMENTATION = 'sandbox-kernel';

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

  /** Ask for a snapshot (sessions and every cell row). */
  request(): void {
    if (this._comm && !this._comm.isDisposed) {
      this._comm.send({ request: 'stats' });
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
    this.model.reset();
    this._attach(change.newValue);
  }

  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
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
  }

  /** Open our comm if the kernel has the target; else wait to be announced. */
  private async _probe(kernel: Kernel.IKernelConnection): Promise<void> {
    this._probing = true;
    this.model.reset();
    try {
      const info = await kernel.info;
      let hasTarget = info.implementation === SANDBOX_IMPLEMENTATION;
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
}

/** A cell_end: who sent it ("sandbox", "magics") and its cell row, unparsed. */
export interface ICellEnded {
  kernel: string | null;
  record: unknown;
}

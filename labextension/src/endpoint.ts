/**
 * The stats of a kernel that has no `sandbox_kernel.stats` comm, from the
 * server's stats endpoint (sandbox_kernel/server): a kernel the sandbox
 * provisioner started, in any language.
 *
 *   probe()   GET  <base>sandbox-kernel/api/kernels/<id>/stats
 *             200: the panel's message (the comm's shape); 404: not sandboxed
 *   open()    WS   <ws>sandbox-kernel/api/kernels/<id>/stats/ws
 *             a snapshot, then a tick a second; reconnects (bounded) when the
 *             socket drops, stops when the server closes it normally (the
 *             kernel is gone)
 *
 * Authenticated as the rest of JupyterLab's requests: ServerConnection's
 * settings (the token or the cookie and its XSRF header).
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { IStatsMessage, parseMessage } from './model';

export const ENDPOINT_PATH = 'sandbox-kernel/api/kernels';
/** Reconnection attempts after the socket drops, and the longest wait between two (ms). */
export const MAX_RECONNECTS = 8;
export const MAX_BACKOFF_MS = 10_000;
const NORMAL_CLOSE = 1000;

/** The path of a kernel's stats under the server's base URL. */
export function statsPath(kernelId: string): string {
  return `${ENDPOINT_PATH}/${encodeURIComponent(kernelId)}/stats`;
}

/** The websocket's URL, with the token when the settings say to append it. */
export function socketUrl(settings: ServerConnection.ISettings, kernelId: string): string {
  const base = settings.wsUrl.endsWith('/') ? settings.wsUrl : `${settings.wsUrl}/`;
  let url = `${base}${statsPath(kernelId)}/ws`;
  if (settings.token && settings.appendToken) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}

export class EndpointStats {
  constructor(
    readonly kernelId: string,
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  /** Every message the socket brings, parsed. */
  get message(): ISignal<this, IStatsMessage> {
    return this._message;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /**
   * One snapshot: the message when the server has stats for this kernel,
   * null when it answers that it has none (404: not sandboxed) or has no
   * endpoint at all (the extension is not enabled).
   */
  async probe(): Promise<IStatsMessage | null> {
    const base = this.settings.baseUrl.endsWith('/') ? this.settings.baseUrl : `${this.settings.baseUrl}/`;
    const response = await ServerConnection.makeRequest(
      base + statsPath(this.kernelId),
      { method: 'GET' },
      this.settings
    );
    if (response.status === 404) {
      return null;
    }
    if (!response.ok) {
      throw new Error(`the stats endpoint answered ${response.status} ${response.statusText}`);
    }
    return parseMessage(await response.json());
  }

  /** Stream the kernel's stats until dispose() or the server closes the socket. */
  open(): void {
    if (this._disposed || this._socket) {
      return;
    }
    const socket = new this.settings.WebSocket(socketUrl(this.settings, this.kernelId));
    this._socket = socket;
    socket.onmessage = (event: MessageEvent) => this._onMessage(event);
    socket.onopen = () => {
      this._reconnects = 0;
    };
    socket.onclose = (event: CloseEvent) => this._onClose(socket, event);
  }

  /** Ask for a snapshot now. */
  request(): void {
    if (this._socket && this._socket.readyState === WebSocket.OPEN) {
      this._socket.send(JSON.stringify({ request: 'stats' }));
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    window.clearTimeout(this._retry);
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.close();
    }
    Signal.clearData(this);
  }

  private _onMessage(event: MessageEvent): void {
    let data: unknown;
    try {
      data = JSON.parse(String(event.data));
    } catch (error) {
      console.warn('sandbox-kernel panel: the stats endpoint sent what is not JSON', error);
      return;
    }
    const parsed = parseMessage(data);
    if (parsed !== null) {
      this._message.emit(parsed);
    }
  }

  /** A normal close: the kernel is gone. Else try again, waiting longer each time. */
  private _onClose(socket: WebSocket, event: CloseEvent): void {
    if (socket !== this._socket) {
      return;
    }
    this._socket = null;
    if (this._disposed || event.code === NORMAL_CLOSE || this._reconnects >= MAX_RECONNECTS) {
      return;
    }
    const wait = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this._reconnects);
    this._reconnects += 1;
    this._retry = window.setTimeout(() => this.open(), wait);
  }

  private _disposed = false;
  private _socket: WebSocket | null = null;
  private _reconnects = 0;
  private _retry = 0;
  private _message = new Signal<this, IStatsMessage>(this);
}

// Run-time wire tracing (`trace start|stop` on the control socket): without a file, every message is logged at
// info as one decoded line (the same dissector as `vfio-user-trace`: command, fields with flags by name, reply
// errno, latency); with a file, the raw stream is recorded (record.ts). `--record FILE` starts the latter at
// start-up.
import { formatTraceLine, TracePairer } from 'vfio-user-protocol';
import type { DeviceLogger } from '../device.js';
import type { VfioUserServer } from '../server.js';
import { WireRecorder } from './record.js';

/**
 * Run-time wire tracing (`trace start|stop` on the control socket): decoded lines in the log, or a raw recording to
 * a file.
 */
export class Tracing {
  private live: { detach: () => void; pairer: TracePairer } | undefined;
  recorder: WireRecorder | undefined;
  private readonly t0 = process.hrtime.bigint();

  constructor(
    private readonly server: VfioUserServer,
    private readonly log: DeviceLogger,
  ) {}

  /** What is on: `{ log: boolean, record?: path }`. */
  get state(): {
    log: boolean;
    record?: string;
    recorded?: { records: number; bytes: number; dropped: number };
  } {
    return {
      log: !!this.live,
      ...(this.recorder && { record: this.recorder.path, recorded: { ...this.recorder.stats } }),
    };
  }

  /** Logs every message as a decoded line. */
  startLog(): void {
    if (this.live) return;
    const pairer = new TracePairer();
    const log = this.log;
    const detach = this.server.observers.add({
      wire: (fromServer, twin, bytes, fds) => {
        const line = pairer.feed(process.hrtime.bigint() - this.t0, fromServer, twin, bytes, fds);
        if (line) log.info({ wire: formatTraceLine(line).trimStart() }, 'trace');
      },
    });
    const onDisconnect = () => pairer.reset();
    this.server.on('disconnect', onDisconnect);
    this.live = {
      pairer,
      detach: () => {
        detach();
        this.server.off('disconnect', onDisconnect);
      },
    };
  }

  /** Records the raw stream to `path`. */
  async startRecord(path: string): Promise<void> {
    if (this.recorder) throw new Error(`already recording to ${this.recorder.path}`);
    this.recorder = await WireRecorder.open(path, this.server, this.log);
  }

  /** Stops both. */
  async stop(): Promise<void> {
    this.live?.detach();
    this.live = undefined;
    const r = this.recorder;
    this.recorder = undefined;
    await r?.close();
  }
}

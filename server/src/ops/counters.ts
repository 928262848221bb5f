// The server's counters in one object: what the exit line, SIGUSR1 and the control socket's `stats` report, and
// what the Prometheus collector reads at each scrape.
import { MigState } from 'vfio-user-protocol';
import type { VfioUserDevice } from '../device.js';
import type { VfioUserServer } from '../server.js';
import { migrationOf } from '../session/migration.js';

const migStateNames = new Map<number, string>(Object.entries(MigState).map(([k, v]) => [v, k]));

/** The name of a MigState value (`RUNNING`, ...). */
export function migStateName(state: number): string {
  return migStateNames.get(state) ?? `state ${state}`;
}

/** The device's migration state and stream byte counts, or undefined when it cannot migrate. */
export function migrationStatus(
  device: VfioUserDevice,
): { state: string; bytesRead: number; bytesWritten: number; transitions: number } | undefined {
  const m = migrationOf(device);
  if (!m) return undefined;
  return { state: migStateName(m.state), ...m.stats };
}

/** The device's own statistics: its `stats` object, when it has one (edu does). */
export function deviceStats(device: VfioUserDevice): Record<string, unknown> | undefined {
  const ds = (device as { stats?: unknown }).stats;
  return ds && typeof ds === 'object' ? { ...(ds as Record<string, unknown>) } : undefined;
}

/** Everything worth a line: messages and errors, DMA, host IOMMU, IRQs, migration, the device's own stats. */
export function collectCounters(server: VfioUserServer, device: VfioUserDevice): Record<string, unknown> {
  const out: Record<string, unknown> = {
    stats: server.stats,
    dma: server.dma.snapshot(),
    iommu: server.mirror.stats,
    irq: server.irq.stats,
  };
  const mig = migrationStatus(device);
  if (mig) out.migration = mig;
  const ds = deviceStats(device);
  if (ds) out.device = ds;
  return out;
}

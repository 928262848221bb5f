// Prometheus metrics (`--metrics HOST:PORT`): prom-client's registry, served as text at /metrics by node:http.
// Every series carries the labels `device` and `socket`, so the scrapes of many device processes aggregate
// cleanly. Counters the engine already keeps (messages, DMA, host IOMMU, IRQs, migration, the device's stats)
// are read at scrape time; what only the session sees (errors by command and errno, request latency) comes from
// a session observer. docs/operations.md lists every name and label.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { errnoName, MigState } from 'vfio-user-protocol';
import type { DeviceLogger, VfioUserDevice } from '../device.js';
import type { DmaRegion } from '../dma/region.js';
import type { VfioUserServer } from '../server.js';
import { deviceStats, migrationStatus } from './counters.js';

/** Request latency buckets (seconds): 10 µs (a REGION_READ) to 5 s (QEMU's reply timeout). */
export const LATENCY_BUCKETS = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
  0.5, 1, 2.5, 5,
];

/** What ServerMetrics observes: the server and its device, and the device name and socket it labels them with. */
export interface MetricsOptions {
  server: VfioUserServer;
  device: VfioUserDevice;
  /** Label values. */
  deviceName: string;
  socket: string;
}

/** Sets a counter to the engine's running total (counters are only read at scrape time). */
function setCounter(c: Counter<string>, value: number): void {
  c.reset();
  c.inc(value);
}

function setCounters(c: Counter<string>, label: string, values: Record<string, number>): void {
  c.reset();
  for (const [k, v] of Object.entries(values)) c.inc({ [label]: k }, v);
}

/** The Prometheus metrics of one server (prom-client registry), labelled by device and socket. */
export class ServerMetrics {
  readonly registry = new Registry();
  private mappedBytes = 0n;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly detach: () => void;

  constructor(private readonly o: MetricsOptions) {
    const reg = this.registry;
    const registers = [reg];
    reg.setDefaultLabels({ device: o.deviceName, socket: o.socket });
    // Process and Node metrics, among them nodejs_eventloop_lag_seconds (and its percentiles).
    collectDefaultMetrics({ register: reg });
    const { server, device } = o;
    const self = this;

    new Counter({
      name: 'vfio_user_messages_total',
      help: 'Client requests received, by command',
      labelNames: ['command'],
      registers,
      collect() {
        setCounters(this, 'command', server.stats.messages);
      },
    });
    const errors = new Counter({
      name: 'vfio_user_errors_total',
      help: 'Client requests that failed (error reply, or a failed NO_REPLY command), by command and errno',
      labelNames: ['command', 'errno'],
      registers,
    });
    const violations = new Counter({
      name: 'vfio_user_protocol_violations_total',
      help: 'Messages that ended a session (bad header, framing, negotiation), by errno',
      labelNames: ['errno'],
      registers,
    });
    const latency = new Histogram({
      name: 'vfio_user_request_duration_seconds',
      help: 'Time from a request arriving to its reply being sent, by command',
      labelNames: ['command'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.detach = server.observers.add({
      request(command, errno, seconds) {
        latency.observe({ command }, seconds);
        if (errno) errors.inc({ command, errno: errnoName(errno) });
      },
      violation(errno) {
        violations.inc({ errno: errnoName(errno) });
      },
    });

    // Session up/down.
    new Gauge({
      name: 'vfio_user_client_connected',
      help: '1 while a client is being served',
      registers,
      collect() {
        this.set(server.clients.active ? 1 : 0);
      },
    });
    new Gauge({
      name: 'vfio_user_clients_waiting',
      help: 'Connections parked until the current client leaves',
      registers,
      collect() {
        this.set(server.clients.waiting);
      },
    });
    new Gauge({
      name: 'vfio_user_session_start_time_seconds',
      help: 'When the current client connected (Unix seconds; 0 when none)',
      registers,
      collect() {
        this.set(server.session ? server.session.since / 1000 : 0);
      },
    });
    new Counter({
      name: 'vfio_user_connections_total',
      help: 'Clients served so far',
      registers,
      collect() {
        setCounter(this, server.stats.connections);
      },
    });
    const disconnects = new Counter({
      name: 'vfio_user_disconnections_total',
      help: 'Sessions that ended',
      registers,
    });
    const onDisconnect = () => disconnects.inc();
    server.on('disconnect', onDisconnect);

    // DMA address space.
    new Gauge({
      name: 'vfio_user_dma_maps_live',
      help: 'DMA mappings currently in the address space',
      registers,
      collect() {
        this.set(server.dma.snapshot().live);
      },
    });
    new Gauge({
      name: 'vfio_user_dma_mapped_bytes',
      help: 'Bytes of guest memory currently mapped by DMA_MAP',
      registers,
      collect() {
        this.set(Number(self.mappedBytes));
      },
    });
    new Gauge({
      name: 'vfio_user_dma_files',
      help: 'Distinct guest-memory files behind the live mappings',
      registers,
      collect() {
        this.set(server.dma.snapshot().files);
      },
    });
    new Counter({
      name: 'vfio_user_dma_maps_total',
      help: 'DMA_MAPs that succeeded',
      registers,
      collect() {
        setCounter(this, server.dma.snapshot().maps);
      },
    });
    new Counter({
      name: 'vfio_user_dma_unmaps_total',
      help: 'Mappings removed (DMA_UNMAP, unmap-all, disconnect)',
      registers,
      collect() {
        setCounter(this, server.dma.snapshot().unmaps);
      },
    });
    new Counter({
      name: 'vfio_user_dma_map_failures_total',
      help: 'DMA_MAPs refused, by errno',
      labelNames: ['errno'],
      registers,
      collect() {
        setCounters(this, 'errno', server.dma.snapshot().mapFailures);
      },
    });

    // Host IOMMU mirror.
    const mirror = server.mirror.stats;
    new Gauge({
      name: 'vfio_user_iommu_info',
      help: 'The host IOMMU backend in use (value 1)',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        this.set({ backend: mirror.backend }, 1);
      },
    });
    new Counter({
      name: 'vfio_user_iommu_maps_total',
      help: 'Host IOMMU maps that succeeded',
      registers,
      collect() {
        setCounter(this, mirror.maps);
      },
    });
    new Counter({
      name: 'vfio_user_iommu_unmaps_total',
      help: 'Host IOMMU entries unmapped',
      registers,
      collect() {
        setCounter(this, mirror.unmaps);
      },
    });
    new Gauge({
      name: 'vfio_user_iommu_pinned_pages',
      help: 'Host pages currently pinned through a pinning backend',
      registers,
      collect() {
        this.set(mirror.pagesPinned);
      },
    });
    new Gauge({
      name: 'vfio_user_iommu_entries_live',
      help: 'Live host IOMMU entries',
      registers,
      collect() {
        this.set(mirror.live);
      },
    });
    new Counter({
      name: 'vfio_user_iommu_failures_total',
      help: 'Host IOMMU maps refused and unmaps failed, by errno',
      labelNames: ['errno'],
      registers,
      collect() {
        setCounters(this, 'errno', mirror.failures);
      },
    });

    // Interrupts.
    const irq = server.irq.stats;
    for (const [key, what] of [
      ['signals', 'Interrupts signalled to the client'],
      ['pended', 'Interrupts that became pending on a masked vector'],
      ['dropped', 'Interrupts dropped: no eventfd assigned'],
    ] as const) {
      new Counter({
        name: `vfio_user_irq_${key}_total`,
        help: what,
        registers,
        collect() {
          setCounter(this, irq[key]);
        },
      });
    }

    // Migration (devices with a migration facet).
    if (device.migration) {
      new Gauge({
        name: 'vfio_user_migration_state',
        help: 'The device migration state: 1 for the current state, 0 for the others',
        labelNames: ['state'],
        registers,
        collect() {
          const cur = migrationStatus(device)?.state;
          for (const s of Object.keys(MigState)) this.set({ state: s }, s === cur ? 1 : 0);
        },
      });
      new Counter({
        name: 'vfio_user_migration_bytes_total',
        help: 'Migration data bytes, by direction (read = MIG_DATA_READ served, write = MIG_DATA_WRITE accepted)',
        labelNames: ['direction'],
        registers,
        collect() {
          const m = migrationStatus(device);
          this.reset();
          this.inc({ direction: 'read' }, m?.bytesRead ?? 0);
          this.inc({ direction: 'write' }, m?.bytesWritten ?? 0);
        },
      });
    }

    // The device's own statistics: every numeric field of its `stats` object.
    if (deviceStats(device)) {
      new Gauge({
        name: 'vfio_user_device_stat',
        help: "The device model's own statistics (its stats object), by field name",
        labelNames: ['stat'],
        registers,
        collect() {
          this.reset();
          for (const [k, v] of Object.entries(deviceStats(device) ?? {})) {
            if (typeof v === 'number' && Number.isFinite(v)) this.set({ stat: k }, v);
          }
        },
      });
    }

    this.removeServerListeners = () => {
      server.off('disconnect', onDisconnect);
    };
  }

  private readonly removeServerListeners: () => void;

  /** Subscribes to the DMA address space (mapped bytes); call after server.start(). */
  async start(): Promise<void> {
    const add = (r: DmaRegion) => {
      this.mappedBytes += r.size;
    };
    const remove = (r: DmaRegion) => {
      this.mappedBytes -= r.size;
    };
    this.unsubscribe = await this.o.server.dma.subscribe({
      regionAdded: add,
      regionRemoved: remove,
      allRemoved: (rs) => {
        for (const r of rs) remove(r);
      },
    });
  }

  /** What /healthz answers: listening, and whether a client is served. */
  healthz(): { status: 'ok'; client: boolean; waiting: number; session?: number } {
    const s = this.o.server;
    return {
      status: 'ok',
      client: s.clients.active,
      waiting: s.clients.waiting,
      session: s.session?.session,
    };
  }

  /** The text exposition. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  async close(): Promise<void> {
    this.detach();
    this.removeServerListeners();
    await this.unsubscribe?.();
    this.registry.clear();
  }
}

/**
 * Serves `GET /metrics` (Prometheus text format) and `GET /healthz` (200 with the client state as JSON) on
 * host:port. Resolves once listening; `address` tells the port when 0 was asked.
 */
export async function serveMetrics(
  metrics: ServerMetrics,
  host: string,
  port: number,
  log: DeviceLogger,
): Promise<{ server: Server; address: AddressInfo; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/metrics') {
      metrics.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text);
        },
        (err: unknown) => {
          log.error({ err }, 'collecting metrics failed');
          res.writeHead(500).end();
        },
      );
      return;
    }
    if (url === '/healthz') {
      const s = metrics.healthz();
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(s)}\n`);
      return;
    }
    res.writeHead(404).end();
  });
  // Bounded: a scraper is a short request; nothing a peer sends is buffered beyond the headers.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'metrics server error'));
  return {
    server,
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

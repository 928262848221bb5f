// A qtest client: drive QEMU's memory and I/O buses directly, no guest CPU (`-accel qtest`).
//
// The test listens on a UNIX socket *before* QEMU starts and QEMU connects to it (`-qtest unix:PATH`), see
// QEMU's docs/devel/qtest.rst. The protocol is line based: the test writes `cmd args\n`, QEMU
// answers `OK`, `OK <value>` or `FAIL <reason>`, in order. Lines starting with `IRQ` are asynchronous (after
// `irq_intercept_in`/`_out`) and may come at any time: they are recorded in `irqs`, never taken as an answer.

import { createServer, type Server, type Socket } from 'node:net';

export type Addr = number | bigint;

const hex = (v: Addr): string => `0x${v.toString(16)}`;

/** PCI configuration address for port 0xcf8 (mechanism #1): bus 0 unless given. */
export function pciConfigAddress(dev: number, fn: number, reg: number, bus = 0): number {
  if (dev < 0 || dev > 31 || fn < 0 || fn > 7 || reg < 0 || reg > 255 || bus < 0 || bus > 255) {
    throw new RangeError(`bad PCI config address ${bus}:${dev}.${fn} reg ${reg}`);
  }
  return (0x80000000 | (bus << 16) | (dev << 11) | (fn << 8) | (reg & 0xfc)) >>> 0;
}

export class QtestError extends Error {
  constructor(
    readonly command: string,
    readonly reply: string,
  ) {
    super(`qtest '${command}' failed: ${reply}`);
    this.name = 'QtestError';
  }
}

interface Pending {
  command: string;
  resolve: (words: string[]) => void;
  reject: (e: Error) => void;
}

export class QtestClient {
  /** Every asynchronous `IRQ ...` line received, without the `IRQ ` prefix (e.g. `raise 11`). */
  readonly irqs: string[] = [];
  private buf = '';
  private readonly pending: Pending[] = [];
  private closed: Error | null = null;

  constructor(private readonly sock: Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => this.onData(d));
    const fail = (err: Error) => {
      this.closed ??= err;
      for (const p of this.pending.splice(0)) p.reject(this.closed);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('qtest connection closed (QEMU exited?)')));
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      const words = line.split(/\s+/);
      if (words[0] === 'IRQ') {
        this.irqs.push(words.slice(1).join(' '));
        continue;
      }
      const p = this.pending.shift();
      if (!p) continue;
      if (words[0] === 'OK') p.resolve(words.slice(1));
      else p.reject(new QtestError(p.command, line));
    }
  }

  /** Sends one raw command line; resolves with the words after `OK`, rejects on `FAIL`/`ERR` or hang-up. */
  command(line: string): Promise<string[]> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<string[]>((resolve, reject) => {
      this.pending.push({ command: line, resolve, reject });
      this.sock.write(`${line}\n`);
    });
  }

  private async value(line: string): Promise<bigint> {
    const w = await this.command(line);
    if (w.length < 1) throw new QtestError(line, 'OK without a value');
    return BigInt(w[0]!);
  }

  private async num(line: string): Promise<number> {
    return Number(await this.value(line));
  }

  // Port I/O.
  inb(port: number): Promise<number> {
    return this.num(`inb ${hex(port)}`);
  }
  inw(port: number): Promise<number> {
    return this.num(`inw ${hex(port)}`);
  }
  inl(port: number): Promise<number> {
    return this.num(`inl ${hex(port)}`);
  }
  async outb(port: number, v: number): Promise<void> {
    await this.command(`outb ${hex(port)} ${hex(v & 0xff)}`);
  }
  async outw(port: number, v: number): Promise<void> {
    await this.command(`outw ${hex(port)} ${hex(v & 0xffff)}`);
  }
  async outl(port: number, v: number): Promise<void> {
    await this.command(`outl ${hex(port)} ${hex(v >>> 0)}`);
  }

  // MMIO / memory, sized accesses.
  readb(addr: Addr): Promise<number> {
    return this.num(`readb ${hex(addr)}`);
  }
  readw(addr: Addr): Promise<number> {
    return this.num(`readw ${hex(addr)}`);
  }
  readl(addr: Addr): Promise<number> {
    return this.num(`readl ${hex(addr)}`);
  }
  readq(addr: Addr): Promise<bigint> {
    return this.value(`readq ${hex(addr)}`);
  }
  async writeb(addr: Addr, v: number): Promise<void> {
    await this.command(`writeb ${hex(addr)} ${hex(v & 0xff)}`);
  }
  async writew(addr: Addr, v: number): Promise<void> {
    await this.command(`writew ${hex(addr)} ${hex(v & 0xffff)}`);
  }
  async writel(addr: Addr, v: number): Promise<void> {
    await this.command(`writel ${hex(addr)} ${hex(v >>> 0)}`);
  }
  async writeq(addr: Addr, v: bigint): Promise<void> {
    await this.command(`writeq ${hex(addr)} ${hex(BigInt.asUintN(64, v))}`);
  }

  /** Reads `len` bytes of guest memory (`read ADDR LEN` -> `OK 0xHEX`). */
  async memread(addr: Addr, len: number): Promise<Uint8Array> {
    if (len === 0) return new Uint8Array(0);
    const w = await this.command(`read ${hex(addr)} ${hex(len)}`);
    const h = (w[0] ?? '').replace(/^0x/, '');
    if (h.length !== len * 2) throw new QtestError(`read ${hex(addr)} ${len}`, `got ${h.length / 2} bytes`);
    return new Uint8Array(Buffer.from(h, 'hex'));
  }

  /** Writes bytes to guest memory (`write ADDR LEN 0xHEX`). */
  async memwrite(addr: Addr, data: Uint8Array): Promise<void> {
    if (data.length === 0) return;
    await this.command(`write ${hex(addr)} ${hex(data.length)} 0x${Buffer.from(data).toString('hex')}`);
  }

  /** Fills `len` bytes of guest memory with `byte`. */
  async memset(addr: Addr, len: number, byte: number): Promise<void> {
    await this.command(`memset ${hex(addr)} ${hex(len)} ${hex(byte & 0xff)}`);
  }

  // PCI configuration space of bus 0 through ports 0xcf8/0xcfc (byte lane = reg & 3).
  async pciReadl(dev: number, fn: number, reg: number): Promise<number> {
    await this.outl(0xcf8, pciConfigAddress(dev, fn, reg));
    return await this.inl(0xcfc);
  }
  async pciReadw(dev: number, fn: number, reg: number): Promise<number> {
    await this.outl(0xcf8, pciConfigAddress(dev, fn, reg));
    return await this.inw(0xcfc + (reg & 2));
  }
  async pciReadb(dev: number, fn: number, reg: number): Promise<number> {
    await this.outl(0xcf8, pciConfigAddress(dev, fn, reg));
    return await this.inb(0xcfc + (reg & 3));
  }
  async pciWritel(dev: number, fn: number, reg: number, v: number): Promise<void> {
    await this.outl(0xcf8, pciConfigAddress(dev, fn, reg));
    await this.outl(0xcfc, v);
  }
  async pciWritew(dev: number, fn: number, reg: number, v: number): Promise<void> {
    await this.outl(0xcf8, pciConfigAddress(dev, fn, reg));
    await this.outw(0xcfc + (reg & 2), v);
  }
  async pciWriteb(dev: number, fn: number, reg: number, v: number): Promise<void> {
    await this.outl(0xcf8, pciConfigAddress(dev, fn, reg));
    await this.outb(0xcfc + (reg & 3), v);
  }

  /** Advances the virtual clock by `ns` (or to the next timer deadline when omitted); returns the new time. */
  clockStep(ns?: number | bigint): Promise<bigint> {
    return this.value(ns === undefined ? 'clock_step' : `clock_step ${ns}`);
  }

  /** Sets the virtual clock to `ns`; returns the new time. */
  clockSet(ns: number | bigint): Promise<bigint> {
    return this.value(`clock_set ${ns}`);
  }

  /** Intercepts the GPIO-in IRQ lines of the QOM object (e.g. '/machine/i440fx' or 'ioapic'): IRQ lines follow. */
  async irqInterceptIn(qomPath: string): Promise<void> {
    await this.command(`irq_intercept_in ${qomPath}`);
  }

  /** Intercepts the GPIO-out IRQ lines of the QOM object. */
  async irqInterceptOut(qomPath: string): Promise<void> {
    await this.command(`irq_intercept_out ${qomPath}`);
  }

  /** Closes the connection (QEMU then exits). */
  close(): void {
    this.sock.destroy();
  }
}

/**
 * Listens on `path` for QEMU's qtest connection. Start QEMU with `qtestArgs(path)` after this resolves, then
 * `accept()` the client.
 */
export class QtestListener {
  private readonly server: Server;
  private readonly conn: Promise<Socket>;

  private constructor(readonly path: string) {
    this.server = createServer();
    this.conn = new Promise<Socket>((resolve, reject) => {
      this.server.once('connection', (s) => {
        this.server.close();
        resolve(s);
      });
      this.server.once('error', reject);
      this.server.once('close', () => reject(new Error('qtest listener closed before QEMU connected')));
    });
    this.conn.catch(() => {});
  }

  static async listen(path: string): Promise<QtestListener> {
    const l = new QtestListener(path);
    await new Promise<void>((resolve, reject) => {
      l.server.once('error', reject);
      l.server.listen(path, () => resolve());
    });
    return l;
  }

  /**
   * Resolves with the client once QEMU connected. `abort` (e.g. `qemu.exited`) rejects early when it settles first.
   */
  async accept(timeoutMs = 20_000, abort?: Promise<unknown>): Promise<QtestClient> {
    let t: NodeJS.Timeout | undefined;
    try {
      const racers: Promise<Socket>[] = [
        this.conn,
        new Promise<never>((_, reject) => {
          t = setTimeout(
            () => reject(new Error(`QEMU did not connect to qtest ${this.path} in ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ];
      if (abort) {
        racers.push(
          abort.then(() => {
            throw new Error('QEMU exited before connecting to qtest');
          }),
        );
      }
      return new QtestClient(await Promise.race(racers));
    } finally {
      clearTimeout(t);
    }
  }

  close(): void {
    this.server.close();
  }
}

/** QEMU arguments for a qtest machine connected to `socketPath` (no CPU runs; add -machine, -m, devices). */
export function qtestArgs(socketPath: string): string[] {
  return [
    '-accel',
    'qtest',
    '-qtest',
    `unix:${socketPath}`,
    '-nodefaults',
    '-display',
    'none',
    '-monitor',
    'none',
  ];
}

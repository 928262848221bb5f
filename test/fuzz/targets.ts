// Fuzz targets (docs/hardening.md): what a hostile client's bytes reach first. Each returns normally for input it
// refuses the way a peer must see it (ProtocolError/ErrnoError: an errno reply), and throws for anything else.
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pack, unpack } from 'msgpackr';
import {
  Command,
  checkHeader,
  decodeHeader,
  decodeReply,
  decodeRequest,
  ErrnoError,
  encodeMigDeviceState,
  Framer,
  HEADER_SIZE,
  isReply,
  MsgFlags,
  ProtocolError,
} from 'vfio-user-protocol';
import {
  checkMsgpack,
  createDevice,
  MsgpackBudgetError,
  MsgpackBudgetWalk,
  PCI_STATE_BUDGET,
} from 'vfio-user-server';
import type { FuzzTarget } from './engine.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface Vector {
  command: number;
  kind: 'request' | 'reply';
  hex: string;
  fds?: number;
}

/** The protocol package's hand-written wire vectors (compiled with its tests). */
export async function loadVectors(): Promise<Vector[]> {
  const url = pathToFileURL(join(root, 'protocol', 'dist', 'test', 'vectors', 'index.js')).href;
  const m = (await import(url)) as { allVectors: Vector[] };
  return m.allVectors;
}

const hexBytes = (hex: string) => Uint8Array.from(Buffer.from(hex.replace(/[^0-9a-f]/gi, ''), 'hex'));

const COMMANDS = Object.values(Command).filter((v): v is number => typeof v === 'number');
const COVER_PROTOCOL = ['/protocol/dist/src/'];

/** A refusal a peer would get as an errno; anything else escaping a decoder is a bug. */
function expected(err: unknown): boolean {
  return err instanceof ErrnoError || err instanceof ProtocolError;
}

/**
 * protocol-decode: byte 0 picks the command and direction, byte 1 the fd count; the rest is a whole message
 * (header + payload) that goes through decodeHeader/checkHeader and the command's request or reply decoder.
 */
export function protocolDecode(vectors: Vector[]): FuzzTarget {
  return {
    name: 'protocol-decode',
    cover: COVER_PROTOCOL,
    maxLen: 2048,
    seeds: () =>
      vectors.map((v) => {
        const msg = hexBytes(v.hex);
        const sel = (COMMANDS.indexOf(v.command) << 1) | (v.kind === 'reply' ? 1 : 0);
        return Uint8Array.from([sel, v.fds ?? 0, ...msg]);
      }),
    run(input) {
      if (input.length < 2) return;
      const command = COMMANDS[(input[0]! >> 1) % COMMANDS.length]! as Command;
      const reply = (input[0]! & 1) === 1;
      const fdCount = input[1]! & 3;
      const msg = input.subarray(2);
      try {
        const h = decodeHeader(msg);
        checkHeader(h, 1 << 20);
        const payload = msg.subarray(HEADER_SIZE, Math.min(msg.length, h.size));
        const limits = { maxDataXferSize: 1 << 20, maxMsgFds: 16 };
        if (reply || isReply(h)) decodeReply(command, payload, fdCount, limits);
        else decodeRequest(command, payload, fdCount, limits);
      } catch (err) {
        if (!expected(err)) throw err;
      }
    },
  };
}

/** framer: the input is cut into chunks (lengths from its first bytes) and pushed through a Framer. */
export function framer(vectors: Vector[]): FuzzTarget {
  return {
    name: 'framer',
    cover: COVER_PROTOCOL,
    maxLen: 4096,
    seeds: () => {
      const msgs = vectors.map((v) => hexBytes(v.hex));
      const out: Uint8Array[] = [];
      for (let i = 0; i + 2 < msgs.length; i += 3)
        out.push(Uint8Array.from([7, 13, ...msgs[i]!, ...msgs[i + 1]!, ...msgs[i + 2]!]));
      return out;
    },
    run(input) {
      if (input.length < 2) return;
      const f = new Framer({ maxMessageSize: 1024 });
      const a = 1 + (input[0]! % 64);
      const b = 1 + (input[1]! % 64);
      const data = input.subarray(2);
      let delivered = 0;
      try {
        for (let pos = 0, k = 0; pos < data.length; k++) {
          const n = k & 1 ? b : a;
          for (const fr of f.push(data.subarray(pos, pos + n))) {
            delivered += HEADER_SIZE + fr.payload.length;
            if (fr.header.size !== HEADER_SIZE + fr.payload.length)
              throw new Error(`a frame of ${fr.payload.length} payload bytes for size ${fr.header.size}`);
          }
          pos += n;
        }
      } catch (err) {
        if (!expected(err)) throw err;
        return;
      }
      if (delivered + f.buffered !== data.length) {
        throw new Error(`framer lost bytes: ${delivered} delivered + ${f.buffered} held != ${data.length}`);
      }
    },
  };
}

/**
 * msgpack-budget: the budget walk that guards migration data, differentially against msgpackr: whatever the walk
 * accepts, msgpackr must decode without throwing; the walk must never throw anything but MsgpackBudgetError.
 */
export function msgpackBudget(): FuzzTarget {
  const budget = { ...PCI_STATE_BUDGET, maxBytes: 1 << 16, maxElements: 4096, maxDepth: 16 };
  return {
    name: 'msgpack-budget',
    cover: ['/server/dist/src/pci/msgpack-budget', '/msgpackr/'],
    maxLen: 2048,
    seeds: () => {
      const edu = createDevice('edu', {});
      const state = edu.migration!.saveState();
      edu.close?.();
      return [
        state.subarray(0, 2048),
        pack({
          a: 1,
          b: [1, 2, { c: 'x' }],
          d: new Uint8Array(5),
          e: null,
          f: true,
          g: 1.5,
          h: -3,
          i: 2 ** 40,
        }),
        pack([[], {}, '', 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(2)]),
        Uint8Array.of(0xdd, 0x08, 0, 0, 0, 0x90, 0x90),
      ];
    },
    run(input) {
      // The same walk fed in pieces (as MIG_DATA_WRITEs arrive) must reach the same verdict as in one piece.
      const step = input.length ? (input[input.length - 1]! % 7) + 1 : 1;
      let piecewise = true;
      try {
        const w = new MsgpackBudgetWalk(input.length, budget);
        for (let i = 0; i < input.length; i += step) w.push(input.subarray(i, i + step));
        w.end();
      } catch (err) {
        if (!(err instanceof MsgpackBudgetError)) throw err;
        piecewise = false;
      }
      try {
        checkMsgpack(input, budget);
      } catch (err) {
        if (!(err instanceof MsgpackBudgetError)) throw err;
        if (piecewise)
          throw new Error(`accepted in pieces of ${step}, refused whole: ${(err as Error).message}`);
        return;
      }
      if (!piecewise) throw new Error(`refused in pieces of ${step}, accepted whole`);
      unpack(input); // accepted by the walk: msgpackr must manage it
    },
  };
}

/**
 * session: a VERSION, then the input cut into messages (u16 lengths) sent to a real session of an edu device
 * over a socketpair; it must answer or refuse each with an errno, never fail "unexpectedly", and release every fd.
 */
export async function session(): Promise<FuzzTarget> {
  const { sessionRig } = await import('./session-rig.js');
  const rig = await sessionRig();
  const vectors = await loadVectors();
  const requests = vectors.filter((v) => v.kind === 'request' && v.command !== Command.VERSION);
  return {
    name: 'session',
    cover: [
      '/server/dist/src/session/',
      '/server/dist/src/dma/',
      '/server/dist/src/irq/',
      '/server/dist/src/pci/',
    ],
    maxLen: 4096,
    seeds: () => {
      const out: Uint8Array[] = [];
      for (let i = 0; i < requests.length; i += 2) {
        const parts = requests.slice(i, i + 2).map((v) => hexBytes(v.hex));
        const bytes: number[] = [];
        for (const p of parts) bytes.push(p.length & 0xff, p.length >> 8, ...p);
        out.push(Uint8Array.from(bytes));
      }
      out.push(Uint8Array.from([...encodeMigDeviceState({ deviceState: 4 })]));
      return out;
    },
    async run(input) {
      const msgs: Uint8Array[] = [];
      for (let pos = 0; pos + 2 <= input.length; ) {
        const n = input[pos]! | (input[pos + 1]! << 8);
        pos += 2;
        const m = Uint8Array.from(input.subarray(pos, pos + n));
        pos += n;
        // Keep the stream parseable more often than not: a plausible size, no reply flag abuse needed.
        if (m.length >= HEADER_SIZE) new DataView(m.buffer).setUint32(4, m.length, true);
        if (m.length >= HEADER_SIZE && (m[8]! & MsgFlags.TYPE_MASK) === MsgFlags.TYPE_REPLY && m[0]! & 1)
          m[8] = 0;
        msgs.push(m);
      }
      await rig.exchange(msgs);
    },
    close: () => rig.close(),
  };
}

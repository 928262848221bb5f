// Submission and completion queues (NVMe 1.4 section 4.1): ring state, entry layouts, and posting completions.
import { CQE_SIZE, SQE_SIZE } from './constants.js';

/** A parsed submission queue entry (the fields the model uses). */
export interface Command {
  opcode: number;
  cid: number;
  nsid: number;
  prp1: bigint;
  prp2: bigint;
  cdw10: number;
  cdw11: number;
  cdw12: number;
  cdw13: number;
  cdw14: number;
  cdw15: number;
  /** PSDT (bits 15:14 of DW0): 0 = PRPs. */
  psdt: number;
  fuse: number;
}

export function parseCommand(b: Uint8Array): Command {
  const dv = new DataView(b.buffer, b.byteOffset, SQE_SIZE);
  const dw0 = dv.getUint32(0, true);
  return {
    opcode: dw0 & 0xff,
    fuse: (dw0 >>> 8) & 3,
    psdt: (dw0 >>> 14) & 3,
    cid: dw0 >>> 16,
    nsid: dv.getUint32(4, true),
    prp1: dv.getBigUint64(24, true),
    prp2: dv.getBigUint64(32, true),
    cdw10: dv.getUint32(40, true),
    cdw11: dv.getUint32(44, true),
    cdw12: dv.getUint32(48, true),
    cdw13: dv.getUint32(52, true),
    cdw14: dv.getUint32(56, true),
    cdw15: dv.getUint32(60, true),
  };
}

export interface Completion {
  dw0: number;
  sqid: number;
  cid: number;
  /** 15-bit status field (SCT << 8 | SC, plus DNR/M bits). */
  status: number;
}

export class SubmissionQueue {
  /** The tail the host last wrote to the doorbell. */
  tail = 0;
  /** Next entry to fetch. */
  head = 0;
  /** Commands fetched and not yet completed. */
  inflight = 0;
  /** A fetch through DMA messages is in progress (fd-less memory): one at a time per queue. */
  fetching = false;
  deleted = false;
  /** Resolved when inflight drops to 0 (delete waits for it). */
  idle: (() => void)[] = [];
  constructor(
    readonly id: number,
    readonly base: bigint,
    readonly size: number,
    readonly cqid: number,
  ) {}

  entryAddress(index: number): bigint {
    return this.base + BigInt(index * SQE_SIZE);
  }
}

export class CompletionQueue {
  head = 0;
  tail = 0;
  phase = 1;
  /** Completions waiting for room (the host has not consumed enough yet). */
  readonly pending: Completion[] = [];
  /** Submission queues that post here. */
  readonly sqs = new Set<number>();
  constructor(
    readonly id: number,
    readonly base: bigint,
    readonly size: number,
    readonly vector: number,
    readonly irqEnabled: boolean,
  ) {}

  get full(): boolean {
    return (this.tail + 1) % this.size === this.head;
  }

  /** Entries posted and not yet consumed by the host. */
  get outstanding(): boolean {
    return this.head !== this.tail;
  }

  entryAddress(index: number): bigint {
    return this.base + BigInt(index * CQE_SIZE);
  }
}

/** The 16 bytes of a completion queue entry with the given phase tag. */
export function encodeCompletion(c: Completion, sqhd: number, phase: number, out: Uint8Array): void {
  const dv = new DataView(out.buffer, out.byteOffset, CQE_SIZE);
  dv.setUint32(0, c.dw0 >>> 0, true);
  dv.setUint32(4, 0, true);
  dv.setUint32(8, (sqhd & 0xffff) | (c.sqid << 16), true);
  // Phase and status last: the host polls DW3's phase bit (x86 keeps store order).
  dv.setUint32(12, ((c.cid & 0xffff) | (phase << 16) | ((c.status & 0x7fff) << 17)) >>> 0, true);
}

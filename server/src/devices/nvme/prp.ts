// Physical Region Page lists (NVMe 1.4 section 4.3): PRP1/PRP2 of a command turned into the guest ranges of its
// data buffer. PRP1 may start inside a page; every later entry is page aligned. For a transfer within two pages
// PRP2 is the second page, beyond that it points at a PRP list, whose last entry chains to the next list page
// when more entries remain than fit. Malformed lists are the guest's error: NvmeStatusError(INVALID_FIELD);
// unreachable list memory is a DATA_TRANSFER_ERROR.
import { NVME_PAGE, Status } from './constants.js';
import type { GuestMemory, GuestSegment } from './guest-memory.js';

/** A command failure with the status the completion carries. */
export class NvmeStatusError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'NvmeStatusError';
  }
}

const PAGE = BigInt(NVME_PAGE);
const PAGE_MASK = PAGE - 1n;

/** The segments of a `length`-byte transfer described by prp1/prp2 (length bounded by MDTS by the caller). */
export async function prpSegments(
  mem: GuestMemory,
  prp1: bigint,
  prp2: bigint,
  length: number,
): Promise<GuestSegment[]> {
  if (length <= 0) return [];
  if (prp1 & 3n) throw new NvmeStatusError(Status.INVALID_FIELD, 'PRP1 not dword aligned');
  const first = Math.min(length, NVME_PAGE - Number(prp1 & PAGE_MASK));
  const out: GuestSegment[] = [{ iova: prp1, length: first }];
  let left = length - first;
  if (left === 0) return out;
  if (left <= NVME_PAGE) {
    if (prp2 & PAGE_MASK) throw new NvmeStatusError(Status.INVALID_FIELD, 'PRP2 not page aligned');
    push(out, prp2, left);
    return out;
  }
  // PRP2 is a list pointer (dword aligned, may start inside its page).
  if (prp2 & 7n) throw new NvmeStatusError(Status.INVALID_FIELD, 'PRP list pointer not qword aligned');
  let list = prp2;
  const maxLists = Math.ceil(length / NVME_PAGE) + 1; // more list pages than pages is a loop
  for (let lists = 0; left > 0; lists++) {
    if (lists >= maxLists) throw new NvmeStatusError(Status.INVALID_FIELD, 'PRP list chain too long');
    const slots = Number((PAGE - (list & PAGE_MASK)) / 8n);
    const pagesLeft = Math.ceil(left / NVME_PAGE);
    // All remaining entries fit: read them; otherwise the last slot chains.
    const n = pagesLeft <= slots ? pagesLeft : slots;
    let bytes: Uint8Array;
    try {
      bytes = await mem.read(list, n * 8);
    } catch (err) {
      throw new NvmeStatusError(Status.DATA_TRANSFER_ERROR, `PRP list at 0x${list.toString(16)}: ${err}`);
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const data = pagesLeft <= slots ? n : n - 1;
    for (let i = 0; i < data; i++) {
      const e = dv.getBigUint64(i * 8, true);
      if (e & PAGE_MASK) throw new NvmeStatusError(Status.INVALID_FIELD, 'PRP entry not page aligned');
      const len = Math.min(left, NVME_PAGE);
      push(out, e, len);
      left -= len;
    }
    if (left > 0) {
      list = dv.getBigUint64((n - 1) * 8, true);
      if (list & 7n) throw new NvmeStatusError(Status.INVALID_FIELD, 'chained PRP list pointer misaligned');
    }
  }
  return out;
}

/** Append, merging with the previous segment when the guest range continues it. */
function push(out: GuestSegment[], iova: bigint, length: number): void {
  const last = out[out.length - 1]!;
  if (last.iova + BigInt(last.length) === iova) last.length += length;
  else out.push({ iova, length });
}

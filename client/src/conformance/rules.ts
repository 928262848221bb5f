// The rule behind every case: its level (what a deviation is: must / qemu / should / choice, see conn.ts Level)
// and its citation, a quotation or section of the vfio-user specification (QEMU docs/interop/vfio-user.rst) or
// the QEMU 11.1 client behaviour it protects. The level comes from the case's basis codes (S: must; Q: qemu;
// S~, K, PCI, L: should) unless the table below says otherwise; the citation from the table, or from the
// spec section of the case's group. A client test checks that every case has one.
import type { Group, Rule } from './case.js';

/** The spec section each group checks. */
const SECTION: Record<string, string> = {
  VER: 'spec "VFIO_USER_VERSION"',
  HDR: 'spec "Header"',
  INF: 'spec "VFIO_USER_DEVICE_GET_INFO"',
  RGN: 'spec "VFIO_USER_DEVICE_GET_REGION_INFO"',
  IOF: 'spec "VFIO_USER_DEVICE_GET_REGION_IO_FDS"',
  IRQI: 'spec "VFIO_USER_DEVICE_GET_IRQ_INFO"',
  IRQS: 'spec "VFIO_USER_DEVICE_SET_IRQS"',
  RW: 'spec "Read and Write Operations" (VFIO_USER_REGION_READ/WRITE)',
  CFG: 'PCI Local Bus Specification, configuration space (region 7)',
  MAP: 'spec "VFIO_USER_DMA_MAP"',
  UNM: 'spec "VFIO_USER_DMA_UNMAP"',
  SDMA: 'spec "VFIO_USER_DMA_READ" / "VFIO_USER_DMA_WRITE"',
  RST: 'spec "VFIO_USER_DEVICE_RESET"',
  WMU: 'spec "VFIO_USER_REGION_WRITE_MULTI"',
  FEA: 'spec "VFIO_USER_DEVICE_FEATURE"',
  MIG: 'spec "VFIO_USER_MIG_DATA_READ" / "VFIO_USER_MIG_DATA_WRITE"',
  LIFE: 'spec "Socket Disconnection Behavior" and "Backend Program Conventions"',
  ROB: 'spec "Security Considerations"',
};

// Quotations used by several cases.
const Q = {
  oneReply:
    'spec "Header": "Each command message ... must be replied to with a reply message, unless the message sets the No_Reply bit."',
  order: 'spec "Command Concurrency": "The server will process commands in the order they are received."',
  stream:
    'spec "Socket"/"Header": messages travel on an AF_UNIX stream socket, framed only by "Message size ... the size of the entire message"; a reader must reassemble them from any split',
  errorShape: 'spec "Header": "If an error occurs, the reply message must only include the reply header."',
  ids: 'spec "Header": "Message IDs ... can be re-used (even concurrently) and the receiver must not make any assumptions about their uniqueness."',
  versionFirst:
    'spec "VFIO_USER_VERSION": "Upon establishing a connection, the client must send a VFIO_USER_VERSION message"',
  versionJson:
    'spec "VFIO_USER_VERSION": "version data ... variable (including terminating NUL)", a JSON object',
  eexist:
    'spec "VFIO_USER_DMA_MAP": "A command to map over an existing region must be failed by the server with EEXIST"',
  unmapExact:
    'spec "VFIO_USER_DMA_UNMAP": "The address and size of the DMA region being unmapped must match exactly a previous mapping."',
  unmapRelease:
    'spec "VFIO_USER_DMA_UNMAP": "the server must release all references to that DMA region before replying, which potentially includes in-flight DMA transactions."',
  disconnect:
    'spec "Client Disconnection": "all client memory regions are unmapped and cleaned up (including closing any passed file descriptors); all IRQ file descriptors passed from the old client are closed; the device state should otherwise be retained"',
  mayExit:
    'spec "Client Disconnection": the client leaving means "the server can automatically exit"; a server that keeps serving is the forward-compatible choice',
  security:
    'spec "Security Considerations": "Standard tools and mechanisms should be used on both sides to validate input and prevent against denial of service scenarios, buffer overflow, etc."',
  xfer: 'spec "Read and Write Operations": "The count field must not exceed the value of max_data_xfer_size of the peer"',
  lvuErrno: 'the spec names no errno here; libvfio-user answers EINVAL (lib/libvfio-user.c)',
  featEcho:
    'spec "VFIO_USER_DEVICE_FEATURE": "The reply payload must be the same as the request payload for setting or probing a feature."',
  migUnused: 'QEMU 11.1 sends no migration commands (its client has no migration)',
  backend: 'spec "Backend Program Conventions" (QEMU does not start servers, so it needs none of them)',
  qemuCfg:
    'QEMU 11.1 sizes BARs and probes the ROM through config space like a physical device (hw/vfio/pci.c)',
};

type R = Partial<Rule> & { cite: string };

/** Cases whose level or citation differs from what their basis gives. */
const TABLE: Record<string, R> = {
  // VER
  'VER-04': {
    cite: 'spec "Connection Initiation": the server "closes the connection if it cannot support the advertised version"; "The major version in the reply must be the same as proposed."',
  },
  'VER-05': {
    cite: 'spec "VFIO_USER_VERSION": "The minor version in the reply must be equal to or less than the minor version proposed."',
  },
  'VER-06': { cite: 'QEMU 11.1 proposes 0.0 and refuses a reply other than 0.0 (hw/vfio-user/proxy.c)' },
  'VER-07': { cite: 'spec "VFIO_USER_VERSION": "version data ... Optional."' },
  'VER-08': { cite: 'spec "VFIO_USER_VERSION": "capabilities ... Optional."' },
  'VER-16': {
    cite: 'spec "VFIO_USER_VERSION": max_msg_fds is the "Maximum number of file descriptors that can be received by the sender in one message"',
  },
  'VER-23': {
    cite: 'spec "VFIO_USER_VERSION" (Reply): twin-socket "If and only if the client has indicated support"; "twin_socket.fd_index ... refers to a valid file descriptor"',
  },
  'VER-25': {
    cite: 'spec "VFIO_USER_VERSION": capabilities are a JSON object; unknown keys are for later minors',
  },
  'VER-27': {
    cite: 'spec "VFIO_USER_VERSION": "The major version in the reply must be the same as proposed." "The capability list must be a subset of those proposed."',
  },
  'VER-28': {
    cite: 'QEMU 11.1 reads the VERSION reply into its request buffer: a reply longer than its 214-byte request fails realize',
  },
  'VER-29': {
    cite: 'QEMU 11.1 refuses max_msg_fds > 16, max_data_xfer_size > 64 MiB, pgsizes not a multiple of 4096, max_dma_maps > 65535',
  },
  'VER-31': { level: 'choice', cite: Q.mayExit },
  'VER-32': { level: 'choice', cite: Q.mayExit },
  'VER-33': {
    level: 'should',
    cite: 'spec "VFIO_USER_VERSION": "The capability list must be a subset of those proposed" (ambiguous for the limits the server states about itself)',
  },
  // HDR
  'HDR-09': {
    cite: 'spec "Header": only command messages get replies; a reply from the client is never a command (QEMU drops a connection on an unexpected reply)',
  },
  'HDR-13': { cite: 'spec "Header": "Error ... It is reserved in a command message."' },
  'HDR-18': { cite: 'spec "Commands": DMA_READ and DMA_WRITE go server -> client only' },
  'HDR-21': { cite: 'spec "Header": "Command ... It is also set in the reply header."' },
  'HDR-23': {
    cite: 'spec "Header": Error "in a reply message indicates the command being acknowledged had an error"',
  },
  'HDR-26': {
    cite: 'spec "VFIO_USER_VERSION": max_msg_fds is the "Maximum number of file descriptors that can be received by the sender in one message" (refusing more is the suite\'s recommendation)',
  },
  'HDR-29': {
    cite: 'spec "Socket": "it is still illegal for implementations to stall command or reply processing indefinitely while waiting for replies on the other channel"',
  },
  // INF
  'INF-01': {
    cite: 'spec "VFIO_USER_DEVICE_GET_INFO" reply; QEMU 11.1 needs the PCI flag, num_regions >= 8, num_irqs >= 3 and a 16-byte reply',
  },
  'INF-04': {
    cite: 'spec "VFIO_USER_DEVICE_GET_INFO": "argsz is the size required for the full reply payload (16 bytes today)"',
  },
  'INF-06': {
    cite: 'spec "VFIO_USER_DEVICE_GET_INFO": "VFIO_DEVICE_FLAGS_RESET indicates that the device supports the VFIO_USER_DEVICE_RESET message."',
  },
  'INF-07': { cite: 'QEMU 11.1 refuses num_regions > 100 and num_irqs > 50 (hw/vfio-user/device.c)' },
  'IRQI-05': {
    level: 'must',
    cite: 'spec "VFIO_USER_DEVICE_GET_IRQ_INFO" reply: "argsz is the size required for the full reply payload (16 bytes today)"; QEMU reads it into a 32-byte buffer',
  },
  // RGN
  'RGN-06': {
    level: 'must',
    cite: 'spec "Message sizes": "In a reply, the server sets argsz field to the size needed for a full payload size"; the payload is that size, not padded',
  },
  'RGN-09': {
    level: 'must',
    cite: 'spec "Message sizes": "In a reply, the server sets argsz field to the size needed for a full payload size"; the payload is that size, not padded',
  },
  'RGN-07': {
    cite: 'QEMU 11.1 refuses CAPS with cap_offset < 32 or > argsz and does not ask again; spec "Message sizes": a short argsz gets the needed size',
  },
  'RGN-08': {
    cite: 'spec: "VFIO_REGION_INFO_FLAG_MMAP ... When this flag is set, the reply will include a file descriptor"; QEMU 11.1 accepts at most one',
  },
  'RGN-12': { cite: 'QEMU 11.1 reads the whole config region (256 or 4096 bytes) at realize' },
  'RGN-14': {
    cite: 'spec "Device-Specific Regions": "This is achieved by including a VFIO_REGION_INFO_CAP_TYPE capability in the region info reply"',
  },
  'RGN-15': {
    cite: 'spec "Message sizes": the reply holds at most argsz; QEMU 11.1 drops the connection on a reply larger than its buffer',
  },
  // IOF: QEMU never sends GET_REGION_IO_FDS.
  'IOF-02': {
    cite: 'spec "VFIO_USER_DEVICE_GET_REGION_IO_FDS": "The client must set flags to zero"',
    qemu: 'unused',
  },
  'IOF-03': {
    cite: 'spec "VFIO_USER_DEVICE_GET_REGION_IO_FDS": "all other fields must be zero"',
    qemu: 'unused',
  },
  'IOF-09': {
    cite: 'spec "Message sizes" and "VFIO_USER_DEVICE_GET_REGION_IO_FDS": argsz "indicates the full reply payload size needed"',
    qemu: 'unused',
  },
  'IOF-10': {
    cite: 'spec "VFIO_USER_DEVICE_GET_REGION_IO_FDS": "The reply message will additionally include at least one file descriptor"',
    qemu: 'unused',
  },
  // IRQS
  'IRQS-03': { cite: "QEMU 11.1 sends eventfds in runs of at most the server's max_msg_fds" },
  'IRQS-04': {
    cite: 'spec "VFIO_USER_DEVICE_SET_IRQS": "If no file descriptors are provided, this de-assigns the specified previously configured interrupts."',
  },
  'IRQS-05': {
    cite: 'spec: "a count (and start) of 0, with data flags of VFIO_IRQ_SET_DATA_NONE disables all interrupts of the index"; QEMU sends it for INTx before every reset',
  },
  'IRQS-31': {
    cite: 'QEMU under KVM passes a resample eventfd with EVENTFD|UNMASK for INTx and expects the device to unmask when it is signalled',
  },
  'IRQS-32': {
    cite: 'spec "VFIO_IRQ_INFO_AUTOMASKED": "the client must send an UNMASK action to receive new interrupts"',
  },
  // RW
  'RW-16': {
    cite: 'spec: "all of these operations must be supported ... even if the corresponding memory or device region has been shared as mappable."',
  },
  'RW-19': {
    cite: 'QEMU 11.1 treats a short READ reply as a failed access (all-ones) and a longer one as E2BIG',
  },
  'RW-20': { cite: 'QEMU 11.1 reads the whole config space in one REGION_READ at realize' },
  'RW-22': {
    cite: 'QEMU 11.1 reads each reply into a buffer sized for it (32 + count for READ, 32 for WRITE); a larger reply drops the connection',
  },
  // CFG
  'CFG-03': { cite: `${Q.qemuCfg}: an absent BAR that reads back non-zero becomes a bogus BAR in the guest` },
  'CFG-04': { cite: `${Q.qemuCfg}: a ROM BAR that reads back non-zero makes QEMU invent a ROM` },
  'CFG-10': { cite: 'QEMU 11.1 writes these COMMAND values at realize and reset' },
  'CFG-20': { cite: 'QEMU 11.1 derives INTx from the interrupt pin (config 0x3d) and the INTx count' },
  'CFG-22': { cite: "QEMU 11.1's reset sequence (COMMAND, DEVICE_RESET, pin, BARs)" },
  // MAP
  'MAP-01': { cite: 'spec "VFIO_USER_DMA_MAP": "There is no payload in the reply message."' },
  'MAP-02': {
    cite: 'spec "VFIO_USER_DMA_MAP": "if the DMA region cannot be directly mapped by the server, no file descriptor must be sent ... accessed ... using VFIO_USER_DMA_READ and VFIO_USER_DMA_WRITE"',
  },
  'MAP-17': {
    level: 'must',
    cite:
      'spec "VFIO_USER_DMA_MAP": "address is the base DMA address of the region", "size is the size of the region": a region past 2^64 does not exist, and accepting it corrupts the map table; ' +
      'spec "Security Considerations": "validate input"',
  },
  'MAP-21': {
    cite: 'spec "VFIO_USER_VERSION": max_dma_maps is the "Maximum number DMA map windows that can be valid simultaneously" (65535 when absent): a limit on the client; a server may accept more',
  },
  'MAP-28': { qemu: 'unused', cite: `${Q.lvuErrno}; ${Q.migUnused}` },
  'MAP-29': {
    cite: 'QEMU 11.1 sends maps inside a memory transaction without waiting, and gives each reply x-msg-timeout (5 s)',
  },
  'MAP-34': {
    cite: 'spec "VFIO_USER_DMA_MAP": the fd is passed with SCM_RIGHTS, so the server holds its own copy',
  },
  // UNM
  'UNM-01': {
    cite: 'spec "VFIO_USER_DMA_UNMAP": "The server responds with the original DMA entry in the request."',
  },
  'UNM-11': {
    cite: 'QEMU 11.1 sends DMA_UNMAP with FLAG_ALL (address 0, size 0) when a whole address space goes away',
  },
  'UNM-13': {
    qemu: 'unused',
    cite: 'the legacy dirty bitmap on DMA_UNMAP is gone from the spec; QEMU never sends it',
  },
  'UNM-15': {
    qemu: 'unused',
    cite: 'the legacy dirty bitmap on DMA_UNMAP is gone from the spec; QEMU never sends it',
  },
  'UNM-16': {
    qemu: 'unused',
    cite: 'the legacy dirty bitmap on DMA_UNMAP is gone from the spec; QEMU never sends it',
  },
  // SDMA
  'SDMA-01': {
    cite: 'spec "VFIO_USER_DMA_READ": "This address must have been previously exported to the server with a VFIO_USER_DMA_MAP message."',
  },
  'SDMA-03': { cite: 'QEMU 11.1 answers a DMA request carrying fds with EINVAL' },
  'SDMA-06': {
    cite: 'spec "Socket": "it is still illegal for implementations to stall command or reply processing indefinitely while waiting for replies on the other channel"',
  },
  'SDMA-10': {
    cite: 'spec "VFIO_USER_DMA_READ": "passed over the separate server-to-client socket if twin-socket mode has been negotiated"',
  },
  // RST
  'RST-01': { cite: 'spec "VFIO_USER_DEVICE_RESET": "Neither the request or reply have a payload."' },
  'RST-04': { cite: 'QEMU 11.1 waits x-msg-timeout (5 s) for every reply, the reset included' },
  'RST-05': {
    cite: 'spec "VFIO_USER_DEVICE_RESET" is silent on what a reset keeps; Linux VFIO_DEVICE_RESET saves and restores config space around the reset, a power-on config is as good',
  },
  'RST-07': { qemu: 'unused', cite: `${Q.lvuErrno}; ${Q.migUnused}` },
  'RST-08': {
    qemu: 'unused',
    cite: 'spec "Direct State Transitions": "To recover from ERROR, VFIO_USER_DEVICE_RESET must be used to return back to RUNNING."',
  },
  // WMU
  'WMU-01': {
    cite: 'spec "VFIO_USER_VERSION": "write_multiple: VFIO_USER_REGION_WRITE_MULTI messages are supported if the value is true"',
  },
  'WMU-02': { cite: `${Q.order}; QEMU 11.1 sends REGION_WRITE_MULTI only with NO_REPLY` },
  'WMU-03': {
    cite: 'spec "VFIO_USER_REGION_WRITE_MULTI" reply: "wr_cnt is the number of device writes completed."',
  },
  'WMU-04': {
    cite: 'spec "VFIO_USER_REGION_WRITE_MULTI": "This format can only describe writes of 8 bytes or less."',
  },
  // FEA / MIG: QEMU's client sends none of them.
  'FEA-05': {
    cite: 'spec "VFIO_USER_DEVICE_FEATURE": "VFIO_DEVICE_FEATURE_GET and VFIO_DEVICE_FEATURE_SET are mutually exclusive, except for use with VFIO_DEVICE_FEATURE_PROBE."',
  },
  'FEA-07': {
    cite: 'spec "VFIO_USER_DEVICE_FEATURE": "the probe will only return success if all of the indicated methods are supported"',
  },
  'FEA-09': {
    cite: 'spec "VFIO_DEVICE_FEATURE_MIGRATION": "at least VFIO_MIGRATION_STOP_COPY must be set."',
  },
  'FEA-10': {
    cite: 'spec "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE": RUNNING is "The device is running normally."',
  },
  'FEA-13': {
    cite: 'spec "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE": RUNNING_P2P and PRE_COPY_P2P are "(not used in vfio-user)"',
  },
  'FEA-14': { cite: 'spec "Direct State Transitions": "ERROR cannot be specified as a device state"' },
  'FEA-15': {
    cite: 'spec "Direct State Transitions": "The STOP_COPY -> PRE_COPY transition is explicitly not allowed and should return an error if requested."',
  },
  'FEA-16': { cite: 'spec "Complex State Transitions": "Select the shortest path."' },
  'FEA-17': { cite: 'spec "Complex State Transitions": "Select the shortest path."' },
  'FEA-18': {
    cite: 'spec "Complex State Transitions": "The path cannot have saving group states as interior arcs, only start/end states."',
  },
  'FEA-22': {
    cite: 'spec "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT": "This operation is only valid if logging of dirty pages has been previously started"',
  },
  'FEA-23': {
    level: 'choice',
    cite: 'spec "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT": "returns the dirty bitmap for a specific IOVA range" (any range; libvfio-user serves a sub-range that starts at a map\'s base)',
  },
  'FEA-26': {
    cite: 'spec "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT": "page_size is the unit of granularity of the bitmap, and must be a power of two"',
  },
  'FEA-27': {
    cite: 'spec "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT": "1 bit reporting a page_size unit of IOVA"; "Only DMA writes are logged."',
  },
  'MIG-03': {
    cite: 'spec "VFIO_USER_MIG_DATA_READ": "read data from the source migration server while it is in a saving group state (PRE_COPY or STOP_COPY)"',
  },
  'MIG-06': {
    cite: 'spec "VFIO_USER_MIG_DATA_READ": "size indicates the size of returned migration data. If this is less than the requested size, there is no more migration data to read."',
  },
  'MIG-07': {
    cite: 'spec "VFIO_USER_MIG_DATA_WRITE": "write data to the destination migration server while it is in the RESUMING state"',
  },
  'MIG-10': {
    cite: 'spec "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE" save (STOP_COPY) and restore (RESUMING) arcs',
  },
  'MIG-13': {
    cite: 'spec "Direct State Transitions": RESUMING -> STOP: "If the delivered data is found to be incomplete, inconsistent, or otherwise invalid, fail the SET command"',
  },
  'MIG-14': {
    cite: 'spec "Direct State Transitions": "To recover from ERROR, VFIO_USER_DEVICE_RESET must be used to return back to RUNNING."',
  },
  // LIFE
  'LIFE-02': { cite: `${Q.versionFirst}; ${Q.disconnect}` },
  'LIFE-03': {
    cite: 'spec "Socket": "A server can serve one or more clients"; a second client must not disturb the first',
  },
  'LIFE-04': { level: 'choice', cite: Q.mayExit },
  'LIFE-06': { qemu: 'unused', cite: `${Q.backend}: "The backend program must honor the SIGTERM signal."` },
  'LIFE-07': {
    qemu: 'unused',
    cite: `${Q.backend}: "The backend program must accept the following commands line options: --socket-path=PATH ... --fd=FDNUM ... incompatible with --socket-path"`,
  },
  'LIFE-08': {
    qemu: 'unused',
    cite: `${Q.backend}: "The backend program must not daemonize itself." "File descriptors 0, 1 and 2 must exist, must have regular stdin/stdout/stderr semantics, and can be redirected."`,
  },
  'LIFE-09': {
    level: 'choice',
    qemu: 'unused',
    cite: 'the spec says nothing about stale socket files ("The location of the socket is implementation-specific"); replacing a stale one and never stealing a live one is the suite\'s recommendation',
  },
  // ROB
  'ROB-03': {
    level: 'must',
    cite: `${Q.stream}; a client that goes away mid-header is a disconnect, not a fault`,
  },
  'ROB-07': { level: 'must', cite: `${Q.stream}; fds belong to the message whose first byte they came with` },
  'ROB-10': { cite: `${Q.stream}; fds belong to the message whose first byte they came with` },
  'ROB-14': { cite: "QEMU 11.1's realize and machine-reset sequence" },
};

/** Cases cited by one of the shared quotations alone (level from their basis). */
const CITED_BY: Partial<Record<keyof typeof Q, string[]>> = {
  versionFirst: ['VER-01'],
  versionJson: ['VER-09'],
  xfer: ['VER-18', 'RW-04', 'RW-05', 'SDMA-02'],
  stream: ['HDR-01', 'HDR-02', 'HDR-03', 'ROB-01'],
  oneReply: ['HDR-17', 'HDR-31', 'RW-15', 'CFG-23', 'MAP-27', 'UNM-21', 'RST-06'],
  ids: ['HDR-19', 'HDR-20'],
  errorShape: ['HDR-22'],
  order: ['HDR-27', 'HDR-28', 'RW-14', 'ROB-02', 'ROB-05'],
  disconnect: ['IRQS-36', 'MAP-30', 'LIFE-01'],
  qemuCfg: ['CFG-02', 'CFG-08'],
  eexist: ['MAP-10', 'MAP-11', 'MAP-12', 'MAP-13', 'MAP-14'],
  unmapExact: ['UNM-06'],
  unmapRelease: ['UNM-17', 'UNM-18', 'UNM-19', 'SDMA-12'],
  featEcho: ['FEA-06'],
};
for (const [q, ids] of Object.entries(CITED_BY) as [keyof typeof Q, string[]][]) {
  for (const id of ids) {
    if (TABLE[id]) throw new Error(`${id} is cited twice`);
    TABLE[id] = { cite: Q[q] };
  }
}

/** QEMU never sends these groups' commands. */
const QEMU_UNUSED = new Set(['IOF', 'FEA', 'MIG']);

function levelFromBasis(basis: string): Rule['level'] {
  const codes = basis.split(/[,\s]+/).filter(Boolean);
  if (codes.includes('S')) return 'must';
  if (codes.includes('Q')) return 'qemu';
  return 'should';
}

function defaultCite(group: string, basis: string): string {
  const codes = basis.split(/[,\s]+/).filter(Boolean);
  const section = SECTION[group] ?? 'the spec';
  if (codes.includes('S')) return section;
  if (codes.includes('Q')) return `QEMU 11.1's client relies on it (${section})`;
  if (codes.includes('S~')) return `${section} is silent; the suite recommends it. ${Q.security}`;
  if (codes.includes('K'))
    return `${section} is silent; Linux VFIO (type1/iommufd) semantics, which a server mirroring maps onto a host IOMMU must follow`;
  if (codes.includes('PCI')) return 'PCI Local Bus Specification (configuration space)';
  return `${section} requires no particular answer; ${Q.lvuErrno}`;
}

/** The rule of case `id` (group `group`, basis `basis`). */
export function ruleFor(group: string, id: string, basis: string): Rule {
  const t = TABLE[id];
  const rule: Rule = {
    level: t?.level ?? levelFromBasis(basis),
    cite: t?.cite ?? defaultCite(group, basis),
  };
  if (t?.qemu ?? (QEMU_UNUSED.has(group) ? 'unused' : undefined)) rule.qemu = 'unused';
  return rule;
}

/** Gives every case of `groups` its rule (kept when a case already names one). */
export function attachRules(groups: Group[]): Group[] {
  for (const g of groups) for (const c of g.cases) c.rule ??= ruleFor(g.name, c.id, c.basis);
  return groups;
}

// The QEMU command lines of the end-to-end tests, built in one place, and the check that docs/testing.md ("The
// tests' QEMU command lines") shows exactly these lines (so the documented commands are the tested ones).
//
// A test renders the command it actually ran (`QemuProcess.command` / `BootResult.command`) with its temporary
// paths replaced by the documents' placeholders, and asserts that the document holds that line; a drift fails the
// test with the expected text.

import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { projectRoot } from '../lib/guest.js';
import { qtestArgs } from '../lib/qtest.js';

/** Where the documented test commands put the sockets and logs. */
export const TEST_DOC_DIR = '/tmp/vfio-user';

/** The `-device` value that attaches QEMU to a vfio-user server on `socket` (QEMU takes only the JSON form). */
export function vfioUserPci(socket: string, addr = '05.0', id = 'vu0'): string {
  return JSON.stringify({ driver: 'vfio-user-pci', id, addr, socket: { type: 'unix', path: socket } });
}

/**
 * Guest RAM as a shared memfd: every DMA_MAP of main RAM then carries an fd the server maps. `share=on` is
 * required (with share=off the server's MAP_SHARED view would miss the guest's private copy-on-write pages).
 */
export function memfdRam(sizeMiB: number): string[] {
  return [
    '-object',
    `memory-backend-memfd,id=mem0,size=${sizeMiB}M,share=on`,
    '-machine',
    'memory-backend=mem0',
  ];
}

export type GuestRam = 'memfd' | 'anonymous';

/** qtest harness: pc machine, no CPU; `-qtest-log none` keeps QEMU from echoing every qtest line to stderr. */
export function qtestCommand(o: {
  qtestSocket: string;
  vfioSocket: string;
  ram: GuestRam;
  trace?: string[];
}): string[] {
  return [
    ...qtestArgs(o.qtestSocket),
    '-qtest-log',
    'none',
    '-machine',
    'pc',
    '-m',
    '256M',
    ...(o.ram === 'memfd' ? memfdRam(256) : []),
    '-device',
    vfioUserPci(o.vfioSocket),
    ...(o.trace ?? []).flatMap((t) => ['-trace', t]),
  ];
}

/** SeaBIOS on q35 under TCG; its debug log (isa-debugcon port 0x402) goes to `logFile`. */
export function seabiosCommand(o: { vfioSocket: string; logFile: string }): string[] {
  return [
    ...['-machine', 'q35', '-accel', 'tcg', '-m', '512M', '-nographic', '-nodefaults'],
    ...memfdRam(512),
    ...['-chardev', `file,id=dbg,path=${o.logFile}`, '-device', 'isa-debugcon,iobase=0x402,chardev=dbg'],
    ...['-device', vfioUserPci(o.vfioSocket)],
  ];
}

/** Extra arguments for bootGuest(): our device at 00:05.0 with shared memfd guest RAM. */
export function guestDeviceOptions(vfioSocket: string, memMiB = 1024) {
  return {
    memoryMiB: memMiB,
    objects: [`memory-backend-memfd,id=mem0,size=${memMiB}M,share=on`],
    qemuArgs: ['-machine', 'memory-backend=mem0'],
    devices: [vfioUserPci(vfioSocket)],
  };
}

// ------------------------------------------------------------------------------------------------------------
// Rendering and the README check

/** Quotes one argument for a POSIX shell (single quotes unless it is plain). */
export function shellArg(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * One command as a single shell line: the binary by its name, each `[from, to]` replacement applied to every
 * argument (strings or regular expressions), arguments quoted.
 */
export function renderCommand(command: string[], replace: [string | RegExp, string][] = []): string {
  const [bin, ...args] = command;
  const fix = (s: string) =>
    replace.reduce(
      (acc, [from, to]) => (from instanceof RegExp ? acc.replace(from, to) : acc.split(from).join(to)),
      s,
    );
  return [basename(bin ?? ''), ...args.map((a) => shellArg(fix(a)))].join(' ');
}

/** `command` without the given options and their values (e.g. the `-trace` a test adds for its assertions). */
export function withoutOptions(command: string[], options: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < command.length; i++) {
    if (options.includes(command[i]!)) i++;
    else out.push(command[i]!);
  }
  return out;
}

/** Every command in a document's fenced code blocks, continuation lines joined, runs of blanks collapsed. */
export function readmeCommands(readme = readFileSync(join(projectRoot, 'README.md'), 'utf8')): string[] {
  const out: string[] = [];
  const blocks = readme.split('```');
  for (let i = 1; i < blocks.length; i += 2) {
    const body = blocks[i]!.replace(/^[^\n]*\n/, ''); // drop the info string
    const joined = body.replace(/\\\n\s*/g, ' ');
    for (const line of joined.split('\n')) {
      const l = line.replace(/\s+/g, ' ').trim();
      if (l) out.push(l);
    }
  }
  return out;
}

/** The document that shows the tests' QEMU command lines. */
export const TEST_COMMANDS_DOC = 'docs/testing.md';

/**
 * Null when docs/testing.md shows `line` (a rendered command) in a code block, else a message with the expected
 * text.
 */
export function testDocMismatch(line: string): string | null {
  return docMismatch(TEST_COMMANDS_DOC, line);
}

/** Null when the document `file` (relative to the repository root) shows `line` in a code block. */
export function docMismatch(file: string, line: string): string | null {
  const want = line.replace(/\s+/g, ' ').trim();
  if (readmeCommands(readFileSync(join(projectRoot, file), 'utf8')).includes(want)) return null;
  return `${file} does not show the command this test ran:\n${want}\n`;
}

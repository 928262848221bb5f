// `make run` (test/setup/run-server.sh): it prints a QEMU command line for its socket, then runs the server in the
// foreground. The printed command is run as printed: SeaBIOS must enumerate our device through it. SIGTERM
// stops the server and removes the socket.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { projectRoot } from '../lib/guest.js';
import { findQemu, makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { poll } from '../lib/wait.js';
import { Stages } from './harness.js';

const unavailable = qemuUnavailableReason();

/** Splits a printed shell command: blanks separate words, '...' quotes literally, `\` + newline continues. */
function shellWords(text: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  const s = text.replace(/\\\n/g, ' ');
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unbalanced quote in ${text}`);
      cur += s.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

test('make run prints a QEMU command that attaches to the server it starts', async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable} (run make qemu)`);
  const st = new Stages('make run (run-server.sh) + the printed SeaBIOS command');
  const tmp = makeTempDir();
  const sock = join(tmp.dir, 'run', 'vfio-user.sock');
  const child = spawn('bash', [join(projectRoot, 'test/setup/run-server.sh'), sock, 'edu'], {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  let qemu: ReturnType<typeof spawnQemu> | undefined;
  try {
    assert.ok(await poll(() => /"msg":"ready"/.test(err), 15_000), `server not ready:\n${out}\n${err}`);
    assert.ok(existsSync(sock), 'socket created (its directory too)');
    st.mark('server ready');
    const m = /^ {2}(\S*qemu-system-x86_64 [\s\S]*?)\n\n/m.exec(out);
    assert.ok(m, `no QEMU command printed:\n${out}`);
    const words = shellWords(m![1]!);
    assert.ok(
      words.includes(
        JSON.stringify({
          driver: 'vfio-user-pci',
          id: 'vu0',
          addr: '05.0',
          socket: { type: 'unix', path: sock },
        }),
      ),
      words.join(' '),
    );
    assert.ok(words.includes('memory-backend-memfd,id=mem0,size=512M,share=on'), 'shared memfd guest RAM');
    // The printed binary is the QEMU the project works with (the one the other tests use).
    assert.is(words[0], findQemu(), 'make run names the QEMU the tests use');
    qemu = spawnQemu({ binary: words[0], args: words.slice(1), timeoutMs: 30_000 });
    await qemu.waitForOutput(/PCI: init bdf=00:05\.0 id=1234:11e8/, 20_000);
    st.mark('SeaBIOS sees the device');
    qemu.kill('SIGKILL');
    await qemu.exited;
    assert.ok(await poll(() => /"msg":"client disconnected"/.test(err), 5000), err);
    child.kill('SIGTERM');
    assert.is(await exited, 0, err);
    assert.not.ok(existsSync(sock), 'socket removed at SIGTERM');
    assert.match(err, /"msg":"stopped"/);
    st.mark('stop');
    st.print();
  } finally {
    qemu?.kill('SIGKILL');
    child.kill('SIGKILL');
    tmp.cleanup();
  }
});

test.run();

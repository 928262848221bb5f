// Starting the successor: the same program with the same command line (so the code now on disk), the hand-over
// channel inherited as fd 3 and named by VFIO_USER_HANDOVER_FD. systemd's socket-activation variables are not
// passed on (LISTEN_PID names us; the listener travels over the channel instead).

import { type ChildProcess, spawn } from 'node:child_process';

/** The environment variable naming the inherited channel fd in a successor. */
export const HANDOVER_FD_ENV = 'VFIO_USER_HANDOVER_FD';
/** The fd number the channel gets in the successor. */
export const HANDOVER_CHILD_FD = 3;

export interface SuccessorCommand {
  /** Default: this process's node binary. */
  execPath?: string;
  /** Default: node's own options, the script and its arguments, exactly as this process got them. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
}

export function spawnSuccessor(channelFd: number, cmd: SuccessorCommand = {}): ChildProcess {
  const env = { ...(cmd.env ?? process.env) };
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  env[HANDOVER_FD_ENV] = String(HANDOVER_CHILD_FD);
  const child = spawn(
    cmd.execPath ?? process.execPath,
    cmd.args ?? [...process.execArgv, ...process.argv.slice(1)],
    {
      stdio: ['inherit', 'inherit', 'inherit', channelFd],
      env,
    },
  );
  child.unref();
  return child;
}

// Hand-over of the running device to a new process (docs/handover.md): the running server's side (handOver,
// triggered by SIGUSR2 in the CLI, or by a control-socket command), the successor's side (takeOver), the channel
// between them and the state format.
export {
  cancelHandover,
  type HandoverOptions,
  type HandoverResult,
  handOver,
  handoverInProgress,
} from './source.js';
export { HANDOVER_FORMAT, type HandoverState } from './state.js';
export { HANDOVER_CHILD_FD, HANDOVER_FD_ENV, type SuccessorCommand } from './successor.js';
export { type TargetOptions, type TargetResult, takeOver } from './target.js';

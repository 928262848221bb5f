// The conformance suite as a library: `runSuite()` runs it programmatically (the CLI is cli.ts).
export type { CaseDef, CaseResult, Group, Profile, RunOptions } from './case.js';
export { allGroups } from './cases/index.js';
export { type DevDriver, eduDriver } from './devices.js';
export { formatLine, runSuite, type SuiteOptions, type SuiteReport, selectCases } from './runner.js';

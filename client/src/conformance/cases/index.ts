// Every group, in the order the suite runs them.
import type { Group } from '../case.js';
import { attachRules } from '../rules.js';
import { cfg } from './cfg.js';
import { fea, mig, rst, wmu } from './feature.js';
import { hdr } from './hdr.js';
import { inf, iof, irqi, rgn } from './info.js';
import { irqs } from './irqs.js';
import { life, rob } from './life.js';
import { map, unm } from './map.js';
import { rw } from './rw.js';
import { sdma } from './sdma.js';
import { ver } from './ver.js';

export const allGroups: Group[] = attachRules([
  ver,
  hdr,
  inf,
  rgn,
  iof,
  irqi,
  irqs,
  rw,
  cfg,
  map,
  unm,
  sdma,
  rst,
  wmu,
  fea,
  mig,
  life,
  rob,
]);

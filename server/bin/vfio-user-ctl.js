#!/usr/bin/env node
import('../dist/src/ctl.js');

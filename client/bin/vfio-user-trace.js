#!/usr/bin/env node
import('../dist/src/trace/cli.js');

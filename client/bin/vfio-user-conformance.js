#!/usr/bin/env node
import('../dist/src/conformance/cli.js');

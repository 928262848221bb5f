#!/usr/bin/env bash
# Placeholder until the QEMU installer lands: reports what is there.
command -v qemu-system-x86_64 >/dev/null && qemu-system-x86_64 --version | head -1 || echo "qemu: not installed yet"

#!/usr/bin/env bash
# Placeholder until the guest kernel/initramfs builder lands.
echo "guest: nothing to prepare yet"

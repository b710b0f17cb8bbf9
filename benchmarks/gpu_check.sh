#!/usr/bin/env bash
# Kept at this path for the developers' guide and tests/test_speed_defaults.py; the script is benchmarks/gpu/gpu_check.sh.
exec bash "$(dirname "$0")/gpu/gpu_check.sh" "$@"

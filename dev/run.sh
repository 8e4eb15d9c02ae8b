#!/usr/bin/env bash
# Run the gateway locally over three simulated Azure OpenAI regions (installs what it needs first).
source "$(dirname "$0")/bootstrap.sh"
exec .venv/bin/python -m dev.run "$@"

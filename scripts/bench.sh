#!/usr/bin/env bash
# make bench: throughput and latency table. Grows with each service.
set -euo pipefail
echo "make bench: not yet — benchmarks arrive with the services (issues 3-8)."

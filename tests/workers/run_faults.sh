#!/usr/bin/env bash
# The bulk fault suite (opt-in, ~5-10 min on 2 cores): real gateway, a Redis it kills, real Celery workers.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/work/main/.venv/bin/python}
[ -x "$PY" ] || PY=python
exec "$PY" -m pytest -m e2e -v tests/workers/ "$@"

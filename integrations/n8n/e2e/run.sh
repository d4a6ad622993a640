#!/usr/bin/env bash
# The real-n8n end-to-end run: installs n8n 2.41.1 (cached, see install.sh), starts a live flowgate, imports
# the templates and credentials with the n8n CLI, runs each (`n8n execute --id`, or `n8n start` + HTTP for
# the chat and webhook ones), and prints one line per template. Extra arguments go to pytest.
#
#   integrations/n8n/e2e/run.sh               # all templates
#   integrations/n8n/e2e/run.sh -k streaming  # one
set -euo pipefail
cd "$(dirname "$0")/../../.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3

bash integrations/n8n/e2e/install.sh >/dev/null
summary="$(mktemp)"
status=0
FLOWGATE_E2E_SUMMARY="$summary" "$python" -m pytest -m e2e -p no:cacheprovider -q \
    tests/integrations/test_n8n_e2e.py "$@" || status=$?
echo
printf '%-40s %-8s %s\n' template result seconds
sort "$summary"
rm -f "$summary"
exit "$status"

#!/bin/sh
# compose.yaml's n8n: import the flowgate credentials and templates (re-importing overwrites them by id,
# so edits made in the editor to these templates are replaced at restart: duplicate a template to keep
# changes), then start n8n.
set -e
n8n import:credentials --input=/templates/credentials/flowgate.json
n8n import:workflow --separate --input=/templates/workflows
exec n8n start

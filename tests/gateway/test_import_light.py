"""The gateway process stays light: importing the app (and everything it serves with) loads no torch."""

import subprocess
import sys

from tests.gateway.conftest import ROOT


def test_importing_the_gateway_app_leaves_torch_out():
    code = (
        "import sys; import gateway.app, gateway.server, gateway.bench; gateway.app.create_app();"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'xgrammar', 'transformers'));"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

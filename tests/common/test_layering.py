"""weightspace.common sits below nn, predict and zoo: importing it loads none of them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_common_imports_nothing_above_it():
    code = ("import sys\n"
            "import weightspace.common.metrics, weightspace.common.splits, weightspace.common.tensor_stats, "
            "weightspace.common.zoo_samples\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'zoo' or m.startswith(('weightspace.nn', "
            "'weightspace.predict'))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

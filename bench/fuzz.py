"""A longer schemathesis run than the suite's: every operation, EXAMPLES generated cases each (plus schemathesis'
coverage cases), every case sent with each role's key and with none (the suite sends each to admin and one other).

    .venv/bin/python bench/fuzz.py [--examples 30]

Runs tests/test_fuzz.py (the one definition of the fuzz run) with more examples and prints
{"requests": N, "server_errors": M, ...}; M must be 0 (the run fails otherwise).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = {**os.environ, "EDGERAY_FUZZ_EXAMPLES": str(args.examples), "EDGERAY_FUZZ_REPORT": str(report),
               "EDGERAY_FUZZ_ALL_ROLES": "1"}
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        result = json.loads(report.read_text()) if report.exists() else {"requests": 0, "server_errors": None}
        result["passed"] = run.returncode == 0
        if run.returncode:
            result["failure"] = run.stdout[-2000:]
        print(json.dumps(result))
        sys.exit(run.returncode)

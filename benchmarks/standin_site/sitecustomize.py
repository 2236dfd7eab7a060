"""Loaded by Python at start-up when this folder is on PYTHONPATH: adds the stand-in engine
(benchmarks/standin_backend.py) to bertserve's backend registry, for benchmarks/frontend_cpu.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertserve.backends import base  # noqa: E402

base._BACKENDS["bertserve_standin"] = "standin_backend:StandInBackend"

"""Runs examples/grpc/app.py as __main__ (the serve fixture starts apps from this directory)."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "grpc" / "app.py"), run_name="__main__")

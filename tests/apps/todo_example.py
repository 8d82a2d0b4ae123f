"""Runs examples/todo/app.py as __main__ in TODO_CWD (where the default SQLite file goes)."""

import os
import runpy
from pathlib import Path

if os.environ.get("TODO_CWD"):
    os.chdir(os.environ["TODO_CWD"])
runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "todo" / "app.py"), run_name="__main__")

import os
import sys

from examples.cli import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:
    # `python -m examples list | head`: the reader left early; that is not our error.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
raise SystemExit(code)

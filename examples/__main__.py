import os
import sys

try:
    from examples.cli import main    # inside: Ctrl-C while importing ends quietly too
    code = main()
    sys.stdout.flush()
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    code = 130
except BrokenPipeError:
    # `python -m examples list | head`: the reader left early; that is not our error.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
raise SystemExit(code)

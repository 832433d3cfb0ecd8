"""The drawer process of a command (hpsweep.record._drawing starts it):

    python -m hpsweep.plots [--scan SWEEP_DIR]    # then one trial dir per line on its stdin

draws each trial's curves.png from its files, as the trial would have at its end.
"""

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from hpsweep.plots._drawer import draw_or_say, draw_stale_curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, help="first draw this sweep dir's missing figures")
    parser.add_argument(
        "--stale-only", action="store_true", help="draw a figure given only if missing or outdated"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(10)  # the trials first: the figures are for people, who read them later
    # Ctrl-C at the terminal reaches every process of the command: draw what was given, then
    # stop at the end of the input, which comes when the command and its workers are gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.scan is not None:
        draw_stale_curves(args.scan)
    for line in sys.stdin.buffer:  # {"dir": ..., "label_smoothing": ...}, one per line
        request = json.loads(line)
        draw_or_say(Path(request["dir"]), request["label_smoothing"], args.stale_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m service bench`: the load benchmark (wrk against the service and reference servers)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` subcommand's options."""
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per path (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each path")
    parser.add_argument("--quick", action="store_true", help="2 s per path, 1 s warm-up, smaller data sets")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1 is plenty for one worker)")
    parser.add_argument("--only", default="", help="comma-separated case keys (a,b,c,...; refs always run)")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 comparison")
    parser.add_argument("--data-dir", help="DATA_DIR for the embedded servers (default: a temporary one)")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk if missing (root)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the service during each measured path into DIR")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the service (e.g. LOG_LEVEL=WARNING); repeatable")
    parser.add_argument("--contacts", type=int, default=300_000, help="contacts of the segment of (d), (e), (f)")
    parser.add_argument("--export-contacts", type=int, default=1_000_000, help="contacts of the exported segment")
    parser.add_argument("--no-export", action="store_true", help="skip the streaming export")
    parser.add_argument("--scale-contacts", type=int, default=1_000_000,
                        help="contacts of the 'scale' cases (pages under writes; also at a quarter of it); 0 skips")
    parser.add_argument("--bulk-calls", type=int, default=10, help="10,000-contact bulk calls of the 'scale' cases")

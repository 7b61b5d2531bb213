"""Cross-framework parity report: run the parity checks, print max diffs per check, exit 1 on failure.

    python scripts/parity.py                                       # all default checks (the last line gives the wall time)
    python scripts/parity.py --presets conv_vae,resnet_vae --checks gradients
    python scripts/parity.py --json parity.json --markdown parity.md
    python scripts/parity.py --checks full_epoch,seed_statistics   # slow, real data (minutes)
    python scripts/parity.py --list

The checks are the functions the parity tests call (`parity_tests.report`); tolerances are the
rows of `parity_tests/asserts.py`.
"""

from __future__ import annotations

import argparse
import sys

def _names(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", help="comma-separated presets (default: all); checks about no "
                                     "preset (mirror, import isolation) always run")
    p.add_argument("--checks", help="comma-separated check families (default: all but the slow "
                                    "full_epoch, seed_statistics); see --list")
    p.add_argument("--json", metavar="PATH", help="write rows, failures and every measurement as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    p.add_argument("--workdir", metavar="DIR", help="keep the run folders some checks write here")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from parity_tests import report

    if args.list:
        for check, preset, label in report.list_checks():
            slow = "  (slow: only when named in --checks)" if check in report.SLOW_CHECKS else ""
            print(f"{check:<20} {preset:<22} {label}{slow}")
        return 0
    try:
        return report.main(presets=_names(args.presets), checks=_names(args.checks),
                           json_path=args.json, markdown_path=args.markdown, workdir=args.workdir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

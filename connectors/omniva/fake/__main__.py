"""Run a fake Omniva standalone: prints ``READY <locations_url>`` and serves until SIGTERM/SIGINT.

python -m syncd.connectors.omniva.fake [--port 0] [--synthetic 5000 --countries EE,LV,LT] \
    [--mode ok]
"""

from __future__ import annotations

import argparse
import sys

from syncd.connectors.fakehttp import fake_parser, serve_until_signalled

from .server import MODES, FakeOmniva, synthetic


def build_parser() -> argparse.ArgumentParser:
    """The command line, every option described with its default."""
    parser = fake_parser(
        "python -m syncd.connectors.omniva.fake",
        description="A fake of Omniva's locations.json on loopback: the real EE/LV sample or a "
        "synthetic list, ETag/Last-Modified (304s), gzip, and broken answers on demand "
        "(--mode, or its control API /_fake/).",
    )
    parser.add_argument(
        "--synthetic", type=int, metavar="N",
        help="serve N synthetic records instead of the sample (default: the sample)",
    )
    parser.add_argument(
        "--countries", default="EE,LV,LT", help="countries of the synthetic records"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic records")
    parser.add_argument(
        "--mode", default="ok", help="the initial mode: " + ", ".join(MODES)
    )
    parser.add_argument("--no-gzip", action="store_true", help="never compress the list")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve the list and block until a termination signal arrives."""
    args = parse_args(argv)
    records = None
    if args.synthetic is not None:
        countries = tuple(c.strip().upper() for c in args.countries.split(",") if c.strip())
        records = synthetic(args.synthetic, countries, seed=args.seed)
    fake = FakeOmniva(records, host=args.host, port=args.port, compress=not args.no_gzip)
    fake.set_mode(args.mode)
    return serve_until_signalled(
        fake,
        lambda: fake.locations_url,
        lambda: [f'omniva.url = "{fake.locations_url}"', f"control {fake.control_url}"],
    )


if __name__ == "__main__":
    sys.exit(main())

"""Run a fake VIES standalone: prints ``READY <endpoint>`` and serves until SIGTERM/SIGINT.

python -m syncd.connectors.vies.fake --port 8089
"""

from __future__ import annotations

import argparse
import sys

from syncd.connectors.fakehttp import fake_parser, serve_until_signalled

from .server import FakeVies


def build_parser() -> argparse.ArgumentParser:
    """The command line, every option described with its default."""
    parser = fake_parser(
        "python -m syncd.connectors.vies.fake",
        description="A fake VIES checkVatService (SOAP) on loopback, numbered like the EU's "
        "test service (100 valid, 200 invalid, 201.. faults), with invented traders and fault "
        "injection through its control API (/_fake/).",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of checkVatApprox identifiers")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve the fake and block until a termination signal arrives."""
    args = parse_args(argv)
    fake = FakeVies(seed=args.seed, host=args.host, port=args.port)
    return serve_until_signalled(
        fake,
        lambda: fake.base_url,
        lambda: [f'vies.endpoint = "{fake.base_url}"', f"control {fake.control_url}"],
    )


if __name__ == "__main__":
    sys.exit(main())

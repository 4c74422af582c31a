"""Run a fake Bitrix24 standalone: prints ``READY <webhook_url>`` and serves until SIGTERM/SIGINT.

    python -m connectors.crm.bitrix24.fake --seed 1 --companies 50 --contacts 200 --devices 100
"""

from __future__ import annotations

import argparse
import sys

from connectors.fakehttp import serve_until_signalled

from .server import FakeBitrix24


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m connectors.crm.bitrix24.fake")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--companies", type=int, default=50)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--user-id", type=int, default=1)
    parser.add_argument("--entity-type-id", type=int, default=1040)
    parser.add_argument("--service-requests-entity-type-id", type=int, default=1044)
    parser.add_argument("--disk-folder-id", type=int, default=1)
    parser.add_argument("--events", action="store_true", help="allow event.offline.* (app context)")
    parser.add_argument(
        "--rate-limit", nargs=2, type=float, metavar=("BURST", "DRAIN"),
        help="leaky bucket: refuse above BURST requests, draining DRAIN per second",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the dataset, serve it and block until a termination signal arrives."""
    args = parse_args(argv)
    fake = FakeBitrix24(
        seed=args.seed, companies=args.companies, contacts=args.contacts, devices=args.devices,
        token=args.token, user_id=args.user_id, devices_entity_type_id=args.entity_type_id,
        events_allowed=args.events,
        rate_limit=tuple(args.rate_limit) if args.rate_limit else None,
        host=args.host, port=args.port,
        service_requests_entity_type_id=args.service_requests_entity_type_id,
        disk_folder_id=args.disk_folder_id,
    )
    return serve_until_signalled(fake, lambda: fake.webhook_url)


if __name__ == "__main__":
    sys.exit(main())

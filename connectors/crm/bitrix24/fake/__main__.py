"""Run a fake Bitrix24 standalone: prints ``READY <webhook_url>``, then the
``crm.bitrix24.url``, the token and the control API's URL, one a line, and serves until
SIGTERM/SIGINT.

    python -m syncd.connectors.crm.bitrix24.fake --seed 1 --companies 50 --contacts 200 \
        --devices 100
"""

from __future__ import annotations

import argparse
import sys

from syncd.connectors.fakehttp import fake_parser, serve_until_signalled

from .server import FakeBitrix24


def build_parser() -> argparse.ArgumentParser:
    """The command line, every option described with its default."""
    parser = fake_parser(
        "python -m syncd.connectors.crm.bitrix24.fake",
        description="A fake Bitrix24 portal on loopback (REST over an inbound webhook) with a "
        "seeded Baltic dataset of companies, contacts and devices, the service-request smart "
        "process, Disk uploads, and fault injection through its control API (/_fake/).",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated dataset")
    parser.add_argument("--companies", type=int, default=50, help="companies to generate")
    parser.add_argument("--contacts", type=int, default=200, help="contacts to generate")
    parser.add_argument("--devices", type=int, default=100, help="devices to generate")
    parser.add_argument("--token", default="test-token", help="the webhook token it accepts")
    parser.add_argument("--user-id", type=int, default=1, help="the webhook's user ID")
    parser.add_argument(
        "--entity-type-id", type=int, default=1040, help="entityTypeId of the devices SPA"
    )
    parser.add_argument(
        "--service-requests-entity-type-id",
        type=int,
        default=1044,
        help="entityTypeId of the service-requests SPA",
    )
    parser.add_argument(
        "--disk-folder-id", type=int, default=1, help="Disk folder that takes uploads"
    )
    parser.add_argument(
        "--events", action="store_true", help="allow event.offline.* (an app's context)"
    )
    parser.add_argument(
        "--rate-limit", nargs=2, type=float, metavar=("BURST", "DRAIN"),
        help="leaky bucket: refuse above BURST requests, draining DRAIN per second "
        "(Bitrix24's real limit is 50 2); default: no limit",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    return build_parser().parse_args(argv)


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
    return serve_until_signalled(
        fake,
        lambda: fake.webhook_url,
        lambda: [
            f'crm.bitrix24.url = "{fake.base_url}"',
            f"token {args.token} (put it in the file crm.bitrix24.webhook_token_file names)",
            f"control {fake.control_url}",
        ],
    )


if __name__ == "__main__":
    sys.exit(main())

"""Run a fake Bitrix24 standalone: prints ``READY <webhook_url>``, then the
``crm.bitrix24.url``, the token and the control API's URL, one a line, and serves until
SIGTERM/SIGINT.

    python -m syncd.connectors.crm.bitrix24.fake --seed 1 --companies 50 --contacts 200 \
        --devices 100

Limits are off unless asked for: ``--rate-limit 50 2`` (the leaky bucket) and
``--operating-limit 480`` (the per-method operating-time budget; ``--operating-cost`` and
``--operating-scale`` make calls cost more than the fake's in-memory execution takes). Both can
also be changed at runtime through ``POST /_fake/limits``.
"""

from __future__ import annotations

import argparse
import gc
import sys

from syncd.connectors.fakehttp import fake_parser, serve_until_signalled

from .clock import FakeClock
from .operating import OperatingBudget
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
    parser.add_argument(
        "--operating-limit", type=float, metavar="SECONDS",
        help="operating-time budget: refuse a method with 429 OPERATION_TIME_LIMIT once it has "
        "used more than SECONDS of execution time in a sliding 10-minute window (Bitrix24's "
        "cloud limit is 480); None: no budget",
    )
    parser.add_argument(
        "--operating-cost", type=float, default=0.0, metavar="SECONDS",
        help="seconds charged per call on top of its measured time (needs --operating-limit)",
    )
    parser.add_argument(
        "--operating-scale", type=float, default=1.0, metavar="X",
        help="factor applied to each call's measured time (needs --operating-limit)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tuned = args.operating_cost != 0.0 or args.operating_scale != 1.0
    if args.operating_limit is None and tuned:
        parser.error("--operating-cost and --operating-scale need --operating-limit")
    return args


def operating_budget(args: argparse.Namespace, clock: FakeClock) -> OperatingBudget | None:
    """The budget the options ask for (on the portal clock), or None."""
    if args.operating_limit is None:
        return None
    return OperatingBudget(
        args.operating_limit, cost_per_call=args.operating_cost, scale=args.operating_scale,
        clock=clock.now,
    )


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
    fake.operating_limit = operating_budget(args, fake.clock)
    # The generated rows never form reference cycles; keep the collector from walking them
    # (with 100,000 contacts one full pass takes over half a second, stalling requests).
    gc.freeze()
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

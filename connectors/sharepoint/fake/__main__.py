"""Run a fake Graph + login endpoint standalone: prints ``READY <graph_url>``, then one
``key value`` line each for the login authority and URL, the CA file, the tenant and client ids,
the files holding the client secret and the certificate, the control API, and one
``library <hostname>:<site path> <drive id> <name>`` line per library; serves until
SIGTERM/SIGINT.

    python -m syncd.connectors.sharepoint.fake --port 0 --libraries 5 --items 10000 --seed 1
"""

from __future__ import annotations

import argparse
import sys

from syncd.connectors.fakehttp import fake_parser, serve_until_signalled

from .seeding import DEFAULT_PRODUCERS, MODELS
from .server import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID, FakeGraph


def build_parser() -> argparse.ArgumentParser:
    """The command line, every option described with its default."""
    parser = fake_parser(
        "python -m syncd.connectors.sharepoint.fake",
        description="A fake Microsoft Graph (SharePoint document libraries, delta, downloads) "
        "over HTTP on loopback and its Entra ID login endpoint over HTTPS, seeded with "
        "aesthetic-laser documentation libraries (one per producer), with fault injection "
        "through its control API (/_fake/).",
    )
    parser.add_argument("--tls-port", type=int, default=0, help="login endpoint port (0: any)")
    parser.add_argument("--libraries", type=int, default=5, help="libraries (one per producer)")
    parser.add_argument("--items", type=int, default=1000, help="files per library")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated libraries")
    parser.add_argument("--page-size", type=int, default=200, help="delta page size")
    parser.add_argument("--video-share", type=float, default=0.1, help="share of videos")
    parser.add_argument("--hostname", default="contoso.sharepoint.com", help="SharePoint host")
    parser.add_argument("--site", default="/sites/Manufacturers", help="site path")
    parser.add_argument("--tenant-id", default=DEFAULT_TENANT_ID, help="tenant (directory) id")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="app (client) id")
    parser.add_argument(
        "--client-secret", default=None, help="the secret it accepts (default: random)"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    return build_parser().parse_args(argv)


def producers(count: int) -> list[str]:
    """``count`` producer names: the well-known ones first, then numbered ones."""
    known = list(DEFAULT_PRODUCERS) + [p for p in MODELS if p not in DEFAULT_PRODUCERS]
    return known[:count] + [f"Producer {n}" for n in range(len(known) + 1, count + 1)]


def main(argv: list[str] | None = None) -> int:
    """Build the libraries, serve them and block until a termination signal arrives."""
    args = parse_args(argv)
    fake = FakeGraph(
        host=args.host, port=args.port, tls_port=args.tls_port, page_size=args.page_size,
        tenant_id=args.tenant_id, client_id=args.client_id, client_secret=args.client_secret,
    )
    for index, producer in enumerate(producers(args.libraries)):
        drive_id = fake.add_library(args.hostname, args.site, producer)
        fake.seed_library(
            drive_id, files=args.items, producers=(producer,), seed=args.seed + index,
            video_share=args.video_share,
        )
    secret_file = fake.work_dir / "client_secret"
    secret_file.write_text(fake.client_secret)
    secret_file.chmod(0o600)
    certificate_file = fake.work_dir / "client_certificate.pem"
    certificate_file.write_bytes(fake.certificate_pem)
    certificate_file.chmod(0o600)

    def details() -> list[str]:
        lines = [
            f"login_authority {fake.login_authority}",
            f"login_url {fake.login_url}",
            f"ca_file {fake.ca_file}",
            f"tenant_id {fake.tenant_id}",
            f"client_id {fake.client_id}",
            f"client_secret_file {secret_file}",
            f"certificate_file {certificate_file}",
            f"control {fake.control_url}",
        ]
        lines += [
            f"library {lib['hostname']}:{lib['site_path']} {lib['drive_id']} {lib['name']}"
            for lib in fake.libraries()
        ]
        return lines

    return serve_until_signalled(fake, lambda: fake.graph_url, details)


if __name__ == "__main__":
    sys.exit(main())

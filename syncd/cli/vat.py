"""``syncd vat NUMBER``: check one VAT number the way the portal's "Verify VAT" does.

It uses the same cache and rules as the daemon's API (local syntax check first, the 24-hour
cache, stale answers when VIES is down, the circuit when VIES blocks us). The answer is printed
for the operator who asked; nothing of it is logged.

Exit codes: 0 valid, 1 invalid, 65 not a VAT number or refused by VIES as invalid input,
69 VIES unavailable (try again later).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from syncd.config import Settings
from syncd.core.errors import RetriableError

EX_VALID, EX_INVALID, EX_DATAERR, EX_UNAVAILABLE = 0, 1, 65, 69


def add_parser(commands: Any) -> None:
    """Register ``vat`` on the CLI's subcommands."""
    vat = commands.add_parser(
        "vat",
        help="check a VAT number at VIES (through the 24-hour cache)",
        description="Validate an EU VAT number: syntax and checksum locally, then VIES, with "
        "the same 24-hour cache the portal's API uses. Exits 0 valid, 1 invalid, 65 not a "
        "VAT number, 69 VIES unavailable.",
    )
    vat.add_argument("number", metavar="NUMBER", help="the VAT number with its country prefix")
    vat.add_argument(
        "--fresh", action="store_true", help="ask VIES even when a fresh cached answer exists"
    )
    vat.add_argument("--json", action="store_true", help="print the API's JSON answer")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Look the number up and print the answer; returns the exit code."""
    from syncd.engines.vat import MalformedVatNumberError, VatRejectedError
    from syncd.runtime import build_vat_service

    service = build_vat_service(settings)
    try:
        result = service.lookup(args.number, fresh=args.fresh)
    except (MalformedVatNumberError, VatRejectedError) as error:
        _error(args, error, "not a valid VAT number")
        return EX_DATAERR
    except RetriableError as error:
        _error(args, error, "VIES unavailable, try again later")
        return EX_UNAVAILABLE
    finally:
        service.flush_counts()
        service.close()
    answer = result.to_json()
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(render(answer))
    return EX_VALID if result.valid else EX_INVALID


def render(answer: dict[str, Any]) -> str:
    """The human-readable answer."""
    verdict = "VALID" if answer["valid"] else "INVALID"
    lines = [f"{answer['query']}: {verdict}"]
    if answer["source"] == "local":
        lines.append(f"  reason   {answer['invalid_reason']} (checked locally; VIES not asked)")
        return "\n".join(lines)
    lines.append(f"  name     {answer['name'] or '(not shared by VIES)'}")
    address = (answer["address"] or "(not shared by VIES)").replace("\n", ", ")
    lines.append(f"  address  {address}")
    origin = {
        "live": "asked VIES now",
        "cache": f"from the cache, {_age(answer['age_seconds'])} old",
        "stale": f"STALE: VIES is unavailable; cached answer {_age(answer['age_seconds'])} old",
    }[answer["source"]]
    lines.append(f"  checked  {answer['request_date']} by VIES ({origin})")
    if answer.get("consultation_number"):
        lines.append(f"  consultation number {answer['consultation_number']}")
    return "\n".join(lines)


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _error(args: argparse.Namespace, error: Exception, summary: str) -> None:
    code = getattr(error, "code", type(error).__name__)
    if args.json:
        print(json.dumps({"error": {"code": code, "message": str(error)}}, indent=2))
    print(f"syncd: {summary}: {error}", file=sys.stderr)

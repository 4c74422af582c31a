"""The fake's business register: invented traders whose numbers pass python-stdnum, plus VIES's
test-service numbering (``100`` valid, ``200`` invalid, ``201``… faults) valid for any member state.

Names and addresses are invented (BOOKING.COM B.V. comes from the EU reference sample); address
lines are separated by ``\\n`` as most member states send them. Germany shares neither name nor
address over VIES, so its trader answers ``---`` for both although the number is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

# VIES country codes (Greece is EL, Northern Ireland XI).
MEMBER_STATES = frozenset(
    {
        *("AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "EL", "ES", "FI", "FR", "HR", "HU"),
        *("IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "XI"),
    }
)


@dataclass(frozen=True)
class Company:
    """A registered trader as VIES knows it (``None``: the member state does not share it)."""

    country_code: str
    vat_number: str  # without the country prefix
    name: str | None
    address: str | None

    @property
    def vat_id(self) -> str:
        """Prefix and number: ``EE101819093``."""
        return self.country_code + self.vat_number


COMPANIES: tuple[Company, ...] = (
    Company("EE", "101819093", "Põhjala Laserkliinik OÜ", "Tartu mnt 14\n10117 Tallinn"),
    Company("EE", "105597971", "Saare Ilustuudio OÜ", "Lossi tn 7\n93815 Kuressaare"),
    Company(
        "LV", "40957117777", 'SIA "Daugavas Estētikas Centrs"', "Elizabetes iela 21\nRīga, LV-1010"
    ),
    Company("LV", "50853933633", 'SIA "Kurzemes Lāzeri"', "Lielā iela 12\nLiepāja, LV-3401"),
    Company("LT", "161682812", 'UAB "Nemuno estetika"', "Laisvės al. 45\nLT-44309 Kaunas"),
    Company("FI", "51788002", "Revontuli Laser Oy", "Mannerheimintie 12 B\n00100 HELSINKI"),
    Company("DE", "159425947", None, None),
    Company("NL", "805734958B01", "BOOKING.COM B.V.", "HERENGRACHT 00597\n1017CE AMSTERDAM"),
    Company(
        "EL",
        "562418057",
        "ΑΙΓΑΙΟ ΑΙΣΘΗΤΙΚΗ ΜΟΝΟΠΡΟΣΩΠΗ Ι.Κ.Ε.",
        "ΛΕΩΦ. ΣΥΓΓΡΟΥ 120\n11745 - ΑΘΗΝΑ",
    ),
    Company(
        "PL",
        "5925517329",
        "WIŚLANA ESTETYKA SPÓŁKA Z OGRANICZONĄ ODPOWIEDZIALNOŚCIĄ",
        "DŁUGA 17\n80-831 GDAŃSK",
    ),
    Company(
        "XI", "384702496", "LAGAN SKIN CLINIC LTD", "12 DONEGALL SQUARE NORTH\nBELFAST\nBT1 5GB"
    ),
)

# VIES test-service numbering: the number alone decides, for any member state.
TEST_VALID = "100"
TEST_INVALID = "200"
TEST_FAULTS: dict[str, str] = {
    "201": "INVALID_INPUT",
    "202": "INVALID_REQUESTER_INFO",
    "300": "SERVICE_UNAVAILABLE",
    "301": "MS_UNAVAILABLE",
    "302": "TIMEOUT",
    "400": "VAT_BLOCKED",
    "401": "IP_BLOCKED",
    "500": "GLOBAL_MAX_CONCURRENT_REQ",
    "501": "GLOBAL_MAX_CONCURRENT_REQ_TIME",
    "600": "MS_MAX_CONCURRENT_REQ",
    "601": "MS_MAX_CONCURRENT_REQ_TIME",
}
TEST_TRADER_NAME = "VIES TEST TRADER"
TEST_TRADER_ADDRESS = "1 TEST STREET\n1000 TESTVILLE"

"""A hand-written corpus for measuring the PII scrubber: realistic sentences, each with the
set of kinds it holds (one value of each), and negatives full of PII-looking non-PII.

`tally` scores any redacting function against it; the unit tests and
`bench/pii_corpus_report.py` both use it, so the figures quoted are the ones asserted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.pipeline.scrub import (
    CREDIT_CARD,
    EMAIL_ADDRESS,
    IP_ADDRESS,
    KINDS,
    PHONE_NUMBER,
    SSN,
)

__all__ = ["NEGATIVES", "POSITIVES", "SAMPLES", "KindTally", "Sample", "tally"]

Sample = tuple[str, frozenset[str]]

_EMAIL = frozenset({EMAIL_ADDRESS})
_PHONE = frozenset({PHONE_NUMBER})
_CARD = frozenset({CREDIT_CARD})
_IP = frozenset({IP_ADDRESS})
_SSN = frozenset({SSN})

POSITIVES: list[Sample] = [
    # Email addresses.
    ("Please send the invoice to maria.gonzalez@acme-corp.com by Friday.", _EMAIL),
    ("You can reach me at j.smith+newsletter@gmail.com if anything changes.", _EMAIL),
    ("Forwarding this to support@example.org so they can open a ticket.", _EMAIL),
    ("Her new address is chen_wei88@mail.example.co.uk, the old one bounces.", _EMAIL),
    ("Contact: olivia.brown@university.edu", _EMAIL),
    ("CC dev-team@lists.example.io on the release notes, please.", _EMAIL),
    ("I emailed HR (hr.department@bigcompany.com) twice last week.", _EMAIL),
    ("Reply-To: noreply-billing@shop.example.net", _EMAIL),
    ("My personal email is tom1985@yahoo.com; use it for anything urgent.", _EMAIL),
    ("The account owner is listed as priya.k@startup.ai in the admin panel.", _EMAIL),
    ("Send the signed contract to legal@firm.law before noon.", _EMAIL),
    ("Ask Jake at jake_oconnor@outlook.com about the keys.", _EMAIL),
    ("Login failed for user ADMIN@CORP.EXAMPLE.COM three times.", _EMAIL),
    ("mailto:sales@example.com is the link on the contact page.", _EMAIL),
    # Phone numbers.
    ("Call me on +44 20 7946 0958 after six.", _PHONE),
    ("Our London office number is +44 (0)20 7946 0123.", _PHONE),
    ("The front desk is (555) 123-4567, ask for Dana.", _PHONE),
    ("Text 555-123-4567 when you land.", _PHONE),
    ("His cell is 555.987.6543 but he rarely picks up.", _PHONE),
    ("For reservations dial +1 (212) 555-0143.", _PHONE),
    ("You can call the hotline at 1-800-555-0199 any time.", _PHONE),
    ("Le numéro est +33 1 23 45 67 89, demandez Claire.", _PHONE),
    ("Please ring +49 30 12345678 to confirm the booking.", _PHONE),
    ("Mobile: +91 98765 43210", _PHONE),
    ("The Sydney team is on +61 2 9374 4000.", _PHONE),
    ("Emergency contact: (312) 555-0198 (mother).", _PHONE),
    ("Leave a voicemail at 415 555 0132 and I'll call back.", _PHONE),
    ("Our Tokyo number is +81 3-1234-5678.", _PHONE),
    ("Call +1-202-555-0173 for the press office.", _PHONE),
    ("Dial (800)555-0100 for billing questions.", _PHONE),
    ("WhatsApp me at +34 612 345 678.", _PHONE),
    ("The pharmacy's number is 646.555.0172.", _PHONE),
    ("My number is (555)-123-4567, landline only.", _PHONE),
    ("Support is reachable at +1.555.123.4567 on weekdays.", _PHONE),
    # Unseparated ten digits look like any ID: not caught, and left here to say so.
    ("Call 5551234567 tomorrow morning.", _PHONE),
    # Card numbers (issuers' published test numbers, all Luhn-valid).
    ("I paid with my Visa 4111 1111 1111 1111, expiry 12/27.", _CARD),
    ("Card on file: 4012888888881881.", _CARD),
    ("Charge it to 5555 5555 5555 4444 please.", _CARD),
    ("The declined card was 5105-1051-0510-5100, can you retry?", _CARD),
    ("Use my Amex 3782 822463 10005 for the deposit.", _CARD),
    ("Amex number 371449635398431, CVV is on the back.", _CARD),
    ("My Discover card is 6011 1111 1111 1117.", _CARD),
    ("Refund the payment made with 6011000990139424.", _CARD),
    ("JCB: 3530 1113 3330 0000", _CARD),
    ("Diners Club 3056 9309 0259 04 was used at checkout.", _CARD),
    ("The new Mastercard is 2223 0031 2200 3222 after the reissue.", _CARD),
    ("Debit card 4000 0566 5566 5556 has been blocked.", _CARD),
    ("UnionPay card 6200000000000005 was charged twice.", _CARD),
    # IP addresses.
    ("The server at 192.168.1.42 stopped responding at noon.", _IP),
    ("SSH into 10.0.0.5 and restart nginx.", _IP),
    ("Requests from 203.0.113.77 were rate limited.", _IP),
    ("Set the DNS to 8.8.8.8 and try again.", _IP),
    ("Our office public IP is 198.51.100.14, whitelist it.", _IP),
    ("Connection refused: 172.16.254.1:5432", _IP),
    ("The gateway is 192.168.0.1.", _IP),
    ("Login from unknown address 185.220.101.3 was blocked.", _IP),
    ("Ping 2001:db8::8a2e:370:7334 to check IPv6 routing.", _IP),
    ("The link-local address is fe80::1ff:fe23:4567:890a on eth0.", _IP),
    ("Add 2001:0db8:85a3:0000:0000:8a2e:0370:7334 to the allow list.", _IP),
    ("The mapped address shows up as ::ffff:192.0.2.128 in the logs.", _IP),
    ("Bind the service to [2606:4700:4700::1111]:443 instead.", _IP),
    ("The client IP was 100.64.12.9 according to the proxy.", _IP),
    # SSN-like numbers.
    ("My social security number is 123-45-6789.", _SSN),
    ("SSN: 219-09-9999", _SSN),
    ("Please verify the SSN 078-05-1120 on the form.", _SSN),
    ("Her SSN, 536-22-8491, was on the tax return.", _SSN),
    ("Employee 4471 listed SSN 401-33-2587 in the HR system.", _SSN),
    ("The applicant's social is 645-12-3456.", _SSN),
    ("Enter your SSN (e.g. 321-54-9876) without spaces.", _SSN),
    ("SSN on file: 287-65-4320.", _SSN),
    ("I typed 555-12-3456 as my SSN by mistake.", _SSN),
    # Only the dashed form is recognised: missed, and left here to say so.
    ("His SSN is 372 41 9058 according to the scan.", _SSN),
    # Several kinds at once.
    ("Contact Anna at anna.lee@example.com or (555) 234-5678.", _EMAIL | _PHONE),
    ("Server 10.1.2.3 is managed by ops@example.net.", _IP | _EMAIL),
    ("Name: John Doe, SSN 234-56-7890, phone 555-222-3333.", _SSN | _PHONE),
    ("Billing: 4111 1111 1111 1111, receipt to billing@shop.example.", _CARD | _EMAIL),
    ("Reach me at +44 7700 900123 or mike@example.co.uk.", _PHONE | _EMAIL),
    ("The attacker used 45.33.32.156 and the card 5555 5555 5555 4444.", _IP | _CARD),
]

_NOTHING: frozenset[str] = frozenset()

NEGATIVES: list[Sample] = [
    (text, _NOTHING)
    for text in (
        # Versions.
        "Upgrade to Python 3.11.4 before running the tests.",
        "We pinned requests to 2.31.0 last month.",
        "Release v1.2.3 fixes the login bug.",
        "Chrome 120.0.6099.109 rendered the page correctly.",
        "Windows 10.0.19045.3803 is the build on that laptop.",
        "Node 18.17.1 and npm 9.6.7 are required.",
        "The API moved from version 1.2 to 2.0 in 2023.",
        "Use the git tag 0.9.1-rc2 for staging.",
        "The SNMP OID 1.3.6.1.2.1.1 names the system group.",
        # Dates and times.
        "The meeting is on 2024-03-15 at 14:30.",
        "Deadline: 15/01/2025, no extensions.",
        "Logs rotated at 12:30:45 UTC on 03.04.2024.",
        "She was born in 1987 and moved in 2009.",
        "The timestamp 2024-06-10T08:15:30Z marks the outage start.",
        "Office hours are 9:00-17:30, Monday to Friday.",
        "The quarter ended on 31 March 2024.",
        "From 1999 to 2004 the plant produced 12,500 units a year.",
        "The epoch time 1718035200000 is in milliseconds.",
        # Prices and amounts.
        "It costs $1,299.99 plus tax.",
        "The subscription went up from €9.99 to €12.49 per month.",
        "Total due: USD 3,450.00",
        "Shares closed at 187.45, up 2.3 percent.",
        "The house sold for £425,000 in 2021.",
        "Call volume rose 15% in Q3 2024.",
        # Order numbers and identifiers.
        "Your order #A-100234 has shipped.",
        "Order number 1234567890123 is still pending.",
        "Tracking ID: 1Z999AA10123456784",
        "Invoice INV-2024-00087 was paid on time.",
        "Ticket 45213 was closed as a duplicate.",
        "Reference number 7700 1234 5678 9012 for the wire transfer.",
        "Customer ID 998877665544 was merged.",
        "Lot 2024-117-0042 passed inspection.",
        "Meeting ID 845 2931 7765 for the call.",
        "Batch 20240315-001 was shipped with 1,250 items.",
        "The ISBN is 978-3-16-148410-0.",
        "The ZIP code 94105-1234 covers part of San Francisco.",
        "Flight BA 2490 departs from gate 22B at 07:45.",
        # Hashes and other hex.
        "Commit 3f2a9c1d7e8b4a6f0c2d1e9b8a7f6c5d4e3b2a19 introduced the regression.",
        "The file's SHA-256 is 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.",
        "Image sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1 is latest.",
        "UUID 123e4567-e89b-12d3-a456-426614174000 identifies the session.",
        "MAC address 00:1A:2B:3C:4D:5E belongs to the printer.",
        # URLs, handles and code, none with an email in them.
        "See https://docs.example.com/guide/install for setup steps.",
        "The endpoint https://api.example.com:8443/v2/users returns JSON.",
        "Download from http://mirror.example.org/releases/5.4.1/ tonight.",
        "Visit www.example.com/contact to send us a message.",
        "The repo lives at github.com/example/project.",
        "Use @decorator syntax for the handler, as in @app.route('/x').",
        "Follow us @examplecorp on social media.",
        "The C++ code calls std::vector<int>::size() in a loop.",
        "The patch 0001-fix-race.patch applies cleanly.",
        "Line 1024 of main.py raises KeyError.",
        # Maths.
        "2 + 2 = 4 and 3 * 7 = 21.",
        "Pi is roughly 3.14159265358979.",
        "The ratio 16:9 is standard; 4:3 is older.",
        "Solve x^2 - 5x + 6 = 0 for x.",
        "e^(i*pi) + 1 = 0 is Euler's identity.",
        "The sum 1234 + 5678 = 6912.",
        "Multiply 123 by 456 to get 56088.",
        "In Python, a[1::2] takes every other element.",
        "Avogadro's number is 6.022e23.",
        "The probability is 0.05, so p < 0.05 counts as significant.",
        "Temperature ranged from -5.5 to 12.3 degrees.",
        "The coordinates are 37.7749, -122.4194.",
        # Everyday numbers.
        "Room 404 on floor 3 is free at 10:15.",
        "Set the timeout to 30000 ms and retries to 5.",
        "Ports 8080 and 5432 must be open on the firewall.",
        "The score was 3-2 after extra time; 2-1 the week before.",
        "The dimensions are 1920x1080 at 60 Hz.",
        "The subnet mask 255.255.255.0 is used on the LAN.",
    )
]

SAMPLES: list[Sample] = POSITIVES + NEGATIVES


@dataclass(slots=True)
class KindTally:
    values: int = 0  # values of this kind in the positive samples
    caught: int = 0  # of those, replaced by this kind's placeholder
    false_positives: int = 0  # this kind's placeholders in negative samples
    stray: int = 0  # this kind's placeholders in positive samples that hold no such value

    @property
    def recall(self) -> float:
        return self.caught / self.values if self.values else 1.0


def tally(redact: Callable[[str], str]) -> dict[str, KindTally]:
    """Scores `redact` on every sample, per kind."""
    tallies = {kind: KindTally() for kind in KINDS}
    for text, kinds in SAMPLES:
        out = redact(text)
        for kind, t in tallies.items():
            found = out.count(f"<{kind}>")
            if kind in kinds:
                t.values += 1
                t.caught += min(found, 1)
            elif kinds:
                t.stray += found
            else:
                t.false_positives += found
    return tallies

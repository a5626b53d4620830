"""The largest numbers vidbatch accepts, wherever money or a limit is read.

Each bound keeps a stored figure exact and inside its column on both databases (SQLite
integers, PostgreSQL INTEGER and BIGINT): a request, a form, a command or a setting
beyond one is refused before anything reaches the database.
"""

from __future__ import annotations

import re

#: The most credits one account may hold, and the largest change one posting may make.
#: Every stored figure of money is bounded by it (``frozen <= balance <= MAX_CREDITS``; a
#: batch reserves at most its account's frozen credits, and charges plus refunds at most
#: its reservation). Well inside a BIGINT, and exact in SQLite, JSON and a double.
MAX_CREDITS = 10**15

#: The most one video may cost (``video_tasks.cost_credits`` is an INTEGER).
MAX_PRICE = 1_000_000

#: The most items one batch may have: ``MAX_ITEMS * MAX_PRICE`` stays below MAX_CREDITS.
MAX_ITEMS = 1_000_000

#: The highest ``rate_limit_per_min`` of an API key (an INTEGER).
MAX_RATE_LIMIT_PER_MIN = 1_000_000

#: The longest wall-clock limit of one generation, in seconds (a week).
MAX_WAIT_SECONDS = 7 * 86_400

#: The longest an archive keeps retrying after a video's success, in seconds: well inside
#: the provider's two hours of result URL life, so the last retry still finds the file.
MAX_ARCHIVE_DEADLINE = 3_600

#: The longest life of a signed result link, in seconds (S3 presigns at most 7 days).
MAX_RESULT_URL_TTL = 7 * 86_400

#: The longest video duration a catalog model may offer, in seconds.
MAX_DURATION_SECONDS = 3_600

_WHOLE = re.compile(r"-?[0-9]{1,18}")


def is_whole(value: object) -> bool:
    """True for an int that is not a bool (``True`` is not one credit)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_whole(text: str) -> int | None:
    """The whole number ``text`` spells in ASCII digits (an optional minus sign, spaces
    around), else None: no ``+``, ``_``, other digits or fractions."""
    text = text.strip()
    return int(text) if _WHOLE.fullmatch(text) else None

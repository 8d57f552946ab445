"""Questions about a brand's programs that several API shapes ask (the native contacts view and the dialects)."""

from __future__ import annotations

from app.errors import Unprocessable
from app.keywords import Program


def check_join_keyword(program: Program, keyword: str, *, field: str) -> str:
    """`keyword` as sent when it is one of the program's join keywords (any case); 422 naming `field` otherwise."""
    wanted = " ".join(keyword.split()).casefold()
    if not any(wanted == " ".join(k.split()).casefold() for k in program.join):
        raise Unprocessable(f"{keyword!r} is not a join keyword of program {program.key!r} "
                            f"(one of: {', '.join(program.join)})", field=field)
    return keyword.strip()


__all__ = ["check_join_keyword"]

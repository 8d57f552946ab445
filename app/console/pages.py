"""The console's routes, mounted at /console: which page answers which path.

Each page lives in its own module (`signin`, `overview`, `subscribers`, `phone`, `keys`,
`playground`, `flagged`, `insights`, `operations`, `keywords_page`); this one assembles them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from app.console import (
    analytics, flagged, keys, keywords_page, operations, overview, phone, playground, signin, subscribers,
)
from app.console.web import HERE, NAV, not_found, redirect


async def home(request: Request) -> Response:
    """GET /console: the programs page."""
    return redirect(request.app.url_path_for("console:programs"))


routes = [
    Route("/", home, name="home"),
    Route("/login", signin.login_form, methods=["GET"], name="login"),
    Route("/login", signin.login, methods=["POST"], name="login_post"),
    Route("/logout", signin.logout, methods=["POST"], name="logout"),
    Route("/reset/{token}", signin.reset_form, methods=["GET"], name="reset"),
    Route("/reset/{token}", signin.reset, methods=["POST"], name="reset_post"),
    Route("/account", signin.account, methods=["GET"], name="account"),
    Route("/account", signin.change_own_password, methods=["POST"], name="change_password"),
    Route("/programs", overview.programs, name="programs"),
    Route("/programs/{program}.csv", subscribers.subscribers_csv, name="subscribers_csv"),
    Route("/programs/{program}", subscribers.subscribers, name="subscribers"),
    Route("/phone", phone.phone, name="phone"),
    Route("/phones/{phone}", phone.phone_page, name="phone_page"),
    Route("/phones/{phone}/opt-out", phone.opt_out_page, methods=["POST"], name="opt_out"),
    Route("/ledger", overview.ledger, name="ledger"),
    Route("/ledger.csv", overview.ledger_csv, name="ledger_csv"),
    Route("/analytics", analytics.analytics, name="analytics"),
    Route("/analytics.csv", analytics.analytics_csv, name="analytics_csv"),
    Route("/keywords", keywords_page.keywords, name="keywords"),
    Route("/operations", operations.operations, name="operations"),
    Route("/playground", playground.playground, methods=["GET"], name="playground"),
    Route("/playground", playground.try_text, methods=["POST"], name="try_text"),
    Route("/flagged", flagged.flagged, methods=["GET"], name="flagged"),
    Route("/flagged", flagged.resolve_flag, methods=["POST"], name="resolve_flag"),
    Route("/keys", keys.keys, methods=["GET"], name="keys"),
    Route("/keys", keys.create_key_page, methods=["POST"], name="create_key"),
    Route("/keys/revoke", keys.revoke_key_page, methods=["POST"], name="revoke_key"),
    Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
]


def mount() -> Mount:
    """The console, mounted at /console (its own 404 page for paths that are no page)."""
    from app.console import evidence  # its page uses app.console.web's `page`, like every other page

    return Mount("/console", app=Router(routes=[*routes, *evidence.routes], default=not_found), name="console")


__all__ = ["NAV", "mount", "routes"]

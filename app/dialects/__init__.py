"""Vendor dialects: each seed vendor's own API shape at the edge, translated onto optline's services.

One module per vendor, like the provider adapters: parse the vendor's request, call the same
services the native /v1 API calls (app.profiles, app.optin, app.consent), render the vendor's
answer. The services never see a vendor's field names. `routes()` gathers them for app.main.
"""

from __future__ import annotations

from starlette.routing import Route


def routes() -> list[Route]:
    """Every dialect's routes, each under /compat/<vendor>/."""
    from app.dialects import cordial, noticia, sonar, synerise

    return [*noticia.routes, *synerise.routes, *cordial.routes, *sonar.routes]


def operations() -> list[dict[str, object]]:
    """Every dialect's routes as the OpenAPI document lists them (see app.web.openapi)."""
    from app.dialects import cordial, noticia, sonar, synerise

    return [*noticia.OPERATIONS, *synerise.OPERATIONS, *cordial.OPERATIONS, *sonar.OPERATIONS]

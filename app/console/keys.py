"""API keys in the console (owners only): list, create (POST-redirect-GET, the key shown once), revoke (confirmed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import Response

from app.auth import create_key, revoke_key
from app.console import queries
from app.console.roles import Role
from app.console.web import Ctx, log, page, redirect, text
from app.errors import NotFound

MAX_KEY_NAME = 200


async def _keys_page(ctx: Ctx, status: int = 200, *, new_key: str | None = None, error: str | None = None,
                     notice: str | None = None) -> Response:
    brand = ctx.brand.key
    keys = await ctx.state.read(lambda c: queries.brand_keys(c, brand=brand))
    new_prefix = new_key.split("_")[1] if new_key and new_key.count("_") >= 2 else None
    return ctx.render("keys.html", status, keys=keys, new_key=new_key, new_prefix=new_prefix, error=error,
                      notice=notice)


def _prefix_ok(raw: str) -> bool:
    return raw.isalnum() and len(raw) <= 16


@page("console:keys", needs=Role.OWNER)
async def keys(ctx: Ctx) -> Response:
    """GET /console/keys: the brand's API keys; a key just created is shown here once."""
    revoked = ctx.request.query_params.get("revoked", "")
    notice = f"Key {revoked} is revoked: the API refuses it from now on." if _prefix_ok(revoked) else None
    codec = ctx.console.codec
    new_key = codec.read_flash(ctx.request, session=ctx.session, now=ctx.state.clock())
    response = await _keys_page(ctx, new_key=new_key, notice=notice)
    if codec.has_flash(ctx.request):
        codec.clear_flash(response)  # shown once: a refresh shows the list without it
    return response


@page("console:create_key", needs=Role.OWNER)
async def create_key_page(ctx: Ctx) -> Response:
    """POST /console/keys: make a key, then redirect to the list, which shows it once (a refresh makes no second key)."""
    name = text(ctx.form(), "name") or None
    if name is not None and len(name) > MAX_KEY_NAME:
        return await _keys_page(ctx, 400, error=f"The name must have at most {MAX_KEY_NAME} characters.")
    brand = ctx.brand.key
    info, key = await ctx.state.writer.run(lambda c, now: create_key(c, now, brand=brand, name=name))
    log.info("console: user %d created API key %s for brand %s", ctx.user.id, info.prefix, brand)
    response = redirect(ctx.url("console:keys", created=info.prefix))
    ctx.console.codec.flash(response, key, session=ctx.session, now=ctx.state.clock())
    return response


@page("console:revoke_key", needs=Role.OWNER)
async def revoke_key_page(ctx: Ctx) -> Response:
    """POST /console/keys/revoke: first a page naming what revoking does; confirmed, revoke the key at once."""
    form = ctx.form()
    prefix = text(form, "prefix")
    brand = ctx.brand.key
    known = await ctx.state.read(lambda c: queries.key_brand(c, prefix=prefix)) if _prefix_ok(prefix) else None
    if known != brand:
        # Another brand's key is answered like a missing one: a user learns nothing about other brands.
        return await _keys_page(ctx, 404, error=f"This brand has no key {prefix}.")
    if text(form, "confirmed") != "yes":
        return ctx.render("confirm.html", title=f"Revoke API key {prefix}?", action=ctx.url("console:revoke_key"),
                          fields={"prefix": prefix}, button=f"Revoke key {prefix}", cancel=ctx.url("console:keys"),
                          consequences=[f"Every request made with key {prefix} is refused (401) from now on, "
                                        "in every optline process.",
                                        "This cannot be undone: a CRM using it needs a new key."],
                          reason=False)

    def revoke(conn: Any, now: datetime) -> None:
        if queries.key_brand(conn, prefix=prefix) != brand:
            raise NotFound(f"no key with prefix {prefix}")
        revoke_key(conn, now, key_or_prefix=prefix)

    try:
        await ctx.state.writer.run(revoke)
    except NotFound:
        return await _keys_page(ctx, 404, error=f"This brand has no key {prefix}.")
    log.info("console: user %d revoked API key %s of brand %s", ctx.user.id, prefix, brand)
    return redirect(ctx.url("console:keys", revoked=prefix))

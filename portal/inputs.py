"""What every request's path, query string and form must be before any view reads them.

* No NUL character. PostgreSQL cannot hold NUL (U+0000) in text: a value with one, looked up or stored, fails in the
  database with a 500. No field of the portal takes one and no keyboard types one, so it is refused here, once, with
  what to fix, instead of in each of the many places that look up or store text. A few inputs are read by parsers
  of their own instead, which take any value: webhook bodies (NUL is dropped from a store's text,
  portal.channels.common.text), the checkout's form (each field's problem is told next to it, and what the buyer
  typed is kept) and the Klaviyo sign-in's callback (anything that is not its own state is told in its words).
* Ids in paths (`<int:...>`) are ASCII digits within a database integer. Werkzeug's own converter takes any
  Unicode digit ("٣" is 3) and any size, which overflows SQLite's and PostgreSQL's integers: a 500. Here a bigger or
  odd id is simply not found.
"""
from flask import render_template, request
from werkzeug.routing import IntegerConverter

from portal.htmx import is_htmx

MAX_ID = 2 ** 31 - 1  # PostgreSQL's integer, the ids' column type
OWN_CHECKS = {"storefront.checkout", "storefront.checkout_started", "integrations.callback"}

NUL = "\x00"
MESSAGE = ("The request contains a NUL character (%00), which no field accepts. Remove it (it can come from "
           "pasting binary data) and try again.")


def has_nul() -> bool:
    if NUL in request.path:
        return True
    if request.endpoint in OWN_CHECKS:
        return False
    for values in (request.args, request.form):
        for key, value in values.items(multi=True):
            if NUL in key or NUL in value:
                return True
    return False


class IdConverter(IntegerConverter):
    """`<int:...>`: 1 to 10 ASCII digits, at most MAX_ID; anything else does not match (404)."""

    regex = r"[0-9]{1,10}"

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(map, fixed_digits, min, max, signed)


def install_converters(app):
    """Before any route is added: the routes' converters are chosen when they are."""
    app.url_map.converters["int"] = IdConverter


def init_app(app):
    @app.before_request
    def refuse_nul():
        if request.blueprint == "webhooks" or not has_nul():
            return None
        if is_htmx():
            return render_template("partials/error.html", message=MESSAGE), 400
        return render_template("error.html", title="Please check what you sent", message=MESSAGE), 400

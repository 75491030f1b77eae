"""Rendering for htmx: a whole page, or just its named block when htmx asks; redirects htmx can follow."""
from flask import current_app, redirect, render_template, request, url_for


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def render(template: str, block: str | None = None, **context):
    """Render a page, or only its named block when htmx asked for it (the page's fragment)."""
    if block and is_htmx():
        app = current_app._get_current_object()
        app.update_template_context(context)
        tmpl = app.jinja_env.get_template(template)
        html = "".join(tmpl.blocks[block](tmpl.new_context(context)))
    else:
        html = render_template(template, **context)
    response = current_app.make_response(html)
    response.vary.add("HX-Request")
    return response


def see_other(endpoint: str, **values):
    """Redirect after a non-GET; htmx follows HX-Redirect, browsers a 303."""
    url = url_for(endpoint, **values)
    if is_htmx():
        response = current_app.make_response("")
        response.headers["HX-Redirect"] = url
        return response
    return redirect(url, code=303)

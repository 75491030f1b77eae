"""The organizer's Klaviyo lists, for choosing where consenting buyers go: Get Lists and Create List.

Both go through portal.sync.calls, the way every call to Klaviyo is made (send gate, shared rate limiter with the
endpoint's tier, token refresh). A refusal never changes the connection: the settings page says what happened and
what to do. Each function returns its result and an error message for the organizer (None when it worked).
"""
from dataclasses import dataclass

from portal.klaviyo import client
from portal.klaviyo.subscriptions import create_list_body
from portal.sync import calls

MAX_PAGES = 30  # Get Lists gives 10 a page: up to 300 lists are offered


@dataclass(frozen=True)
class KlaviyoList:
    id: str
    name: str
    double_opt_in: bool


def _wait_text(seconds: float, daily: bool = False) -> str:
    if daily and seconds > 60:  # past the minute windows: the day's limit, which ends at midnight UTC, however near
        when = f"about {round(seconds / 3600)} hours" if seconds >= 5400 else f"{max(round(seconds / 60), 1)} minutes"
        return f"Klaviyo allows 150 new lists a day; try again in {when}, or choose one of your lists."
    return f"Klaviyo asks the portal to wait {max(round(seconds), 1)} s. Try again then."


def _refused(exc: Exception) -> str:
    return (f"Klaviyo refused ({exc}). Reconnect Klaviyo on the Integrations page to grant the list permissions, "
            "then try again.")


def _as_list(item: dict) -> KlaviyoList:
    attributes = item.get("attributes") or {}
    return KlaviyoList(id=str(item.get("id")), name=attributes.get("name") or "(no name)",
                       double_opt_in=attributes.get("opt_in_process") == "double_opt_in")


def account_lists(connection) -> tuple[list[KlaviyoList], str | None]:
    """The account's lists in Klaviyo's order, or what went wrong reading them."""
    params: dict | None = {"fields[list]": "name,opt_in_process", "page[size]": "10"}
    found: list[KlaviyoList] = []
    for _ in range(MAX_PAGES):
        try:
            response = calls.read(connection, "lists_read", client.get_lists, params)
        except calls.Wait as exc:
            return found, _wait_text(exc.seconds)
        except calls.Stop:
            return found, "Klaviyo is not connected right now: reconnect it, then choose the list."
        except calls.NoPermission as exc:
            return found, _refused(exc)
        if not response.accepted or not isinstance(response.body, dict):
            reason = "it could not be reached" if response.status == 0 else response.error_text()
            return found, f"Klaviyo did not show your lists: {reason}. Try again in a minute."
        found += [_as_list(item) for item in response.body.get("data") or [] if isinstance(item, dict)]
        params = calls.next_link_params(response.body, params)
        if params is None:
            break
    return found, None


def create(connection, name: str, double_opt_in: bool) -> tuple[KlaviyoList | None, str | None]:
    """Create a list in the organizer's Klaviyo account."""
    try:
        response = calls.read(connection, "lists_create", client.create_list, create_list_body(name, double_opt_in))
    except calls.Wait as exc:
        return None, _wait_text(exc.seconds, daily=True)
    except calls.Stop:
        return None, "Klaviyo is not connected right now: reconnect it, then create the list."
    except calls.NoPermission as exc:
        return None, _refused(exc)
    data = (response.body or {}).get("data") if isinstance(response.body, dict) else None
    if response.status != 201 or not isinstance(data, dict) or not data.get("id"):
        reason = "it could not be reached" if response.status == 0 else response.error_text()
        return None, f"Klaviyo did not create the list: {reason}."
    return _as_list(data), None

"""Small rules for the sentences the portal writes to people: one full stop, and plurals."""


def sentence(text: str) -> str:
    """The text as one sentence with exactly one closing mark: "Sandbox Festival Co." stays as it is,
    "Connected" becomes "Connected."."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def plural(count: int, one: str, many: str | None = None) -> str:
    """ "1 event", "5 events"."""
    return f"{count} {one if count == 1 else (many or one + 's')}"

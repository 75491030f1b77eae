"""What makes a password acceptable: long enough, not overlong, and not one that is easy to guess
(zxcvbn's estimate: common passwords, keyboard walks, names and the account's own e-mail)."""
from zxcvbn import zxcvbn

MIN_LENGTH = 10
MAX_LENGTH = 128
MIN_SCORE = 3  # zxcvbn's 0-4: 3 is "safely unguessable: moderate protection from offline slow-hash scenario"


def problem(password: str, *user_inputs: str) -> str | None:
    """What is wrong with this password, in words for the person choosing it, or None."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    result = zxcvbn(password, user_inputs=[value for value in user_inputs if value])
    if result["score"] < MIN_SCORE:
        warning = result["feedback"].get("warning") or "It is too easy to guess."
        return f"Choose a harder password: {warning.rstrip('.')}. A few unrelated words work well."
    return None

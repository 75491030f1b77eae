"""Klaviyo's ``filter`` query parameter: parse it, check it against what an endpoint allows, apply it.

    equals(name,'Welcome'),equals(archived,false)          conditions side by side are and-ed
    and(starts-with(name,"Ticketing"),greater-than(created,2026-01-01T00:00:00Z))
    any(id,['VevE7N','Ua2pXF'])

Strings take single or double quotes (a backslash escapes the next character); booleans, null,
numbers and unquoted ISO 8601 times are values too. Anything else is a 400 naming what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?")
_NUMBER_RE = re.compile(r"-?\d+(\.\d+)?")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class FilterError(ValueError):
    """The filter cannot be read, or names a field or operator the endpoint does not allow."""


@dataclass(frozen=True)
class Condition:
    operator: str
    field: str
    value: object


class _Reader:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos:self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = self.peek() or "the end"
            raise FilterError(f"Invalid filter provided: expected {char!r} at position {self.pos}, found {found!r}.")
        self.pos += 1

    def name(self) -> str:
        match = _NAME_RE.match(self.text, self.pos)
        if not match:
            raise FilterError(f"Invalid filter provided: expected a name at position {self.pos}.")
        self.pos = match.end()
        return match.group()

    def string(self) -> str:
        quote = self.peek()
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise FilterError("Invalid filter provided: a quoted string is not closed.")

    def value(self):
        char = self.peek()
        if char in ("'", '"'):
            return self.string()
        if char == "[":
            self.pos += 1
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() == ",":
                    self.pos += 1
                elif self.peek() != "]":
                    raise FilterError("Invalid filter provided: a list must look like ['a','b'].")
            self.pos += 1
            return items
        for word, meaning in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return meaning
        match = _TIME_RE.match(self.text, self.pos)
        if match and ("-" in match.group()[1:]):
            try:
                moment = datetime.fromisoformat(match.group().replace("Z", "+00:00"))
            except ValueError as exc:
                raise FilterError(f"Invalid filter provided: {match.group()!r} is not a valid date.") from exc
            self.pos = match.end()
            return moment
        match = _NUMBER_RE.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return float(match.group()) if "." in match.group() else int(match.group())
        raise FilterError(f"Invalid filter provided: cannot read a value at position {self.pos}.")

    def condition(self) -> list[Condition]:
        operator = self.name()
        self.expect("(")
        if operator == "and":
            out = self.conditions(")")
            self.expect(")")
            return out
        if operator in ("or", "not"):
            raise FilterError(f"Invalid filter provided: '{operator}' is not supported for this resource.")
        field = self.name()
        self.expect(",")
        value = self.value()
        self.expect(")")
        return [Condition(operator, field, value)]

    def conditions(self, end: str) -> list[Condition]:
        out = self.condition()
        while self.peek() == ",":
            self.pos += 1
            out += self.condition()
        if self.peek() != end:
            raise FilterError(f"Invalid filter provided: unexpected {self.peek()!r} at position {self.pos}.")
        return out


def parse(text: str, allowed: dict[str, set[str]], resource: str) -> list[Condition]:
    """The conditions of a filter, each checked against ``allowed`` (field -> operators)."""
    reader = _Reader(text.strip())
    if not reader.text:
        raise FilterError("Invalid filter provided: the filter is empty.")
    conditions = reader.conditions("")
    for condition in conditions:
        if condition.field not in allowed:
            raise FilterError(f"Invalid filter provided: '{condition.field}' is not a valid field for the "
                              f"resource '{resource}'.")
        if condition.operator not in allowed[condition.field]:
            raise FilterError(f"Invalid filter provided: '{condition.operator}' is not a valid operator for "
                              f"'{condition.field}'.")
        if condition.operator == "any" and not isinstance(condition.value, list):
            raise FilterError("Invalid filter provided: 'any' takes a list, like any(id,['a','b']).")
    return conditions


def _compare(operator: str, actual, wanted) -> bool:
    if operator == "any":
        return actual in wanted
    if operator == "equals":
        return actual == wanted
    if not isinstance(actual, str) or not isinstance(wanted, str):
        if actual is None or wanted is None:
            return False
        try:
            return {"greater-than": actual > wanted, "greater-or-equal": actual >= wanted,
                    "less-than": actual < wanted, "less-or-equal": actual <= wanted}[operator]
        except (TypeError, KeyError):
            return False
    return {"contains": wanted in actual, "starts-with": actual.startswith(wanted),
            "ends-with": actual.endswith(wanted)}.get(operator, False)


def matches(conditions: list[Condition], values: dict) -> bool:
    """Whether a resource (its filterable values by field name) passes every condition."""
    return all(_compare(c.operator, values.get(c.field), c.value) for c in conditions)

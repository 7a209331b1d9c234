"""Alertmanager label matchers (`name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`).

The same matchers filter `GET /api/v2/alerts` on the Alertmanager side and webhook alerts on
ours, so both inputs select the same alerts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_MATCHER = re.compile(
    r"""\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*
        (?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^"\s,{}]*))\s*""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


class MatcherError(ValueError):
    """The matcher text does not parse, or its regular expression does not compile."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher; regular expressions are anchored at both ends, as in Alertmanager."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as e:
                raise MatcherError(f"bad regular expression {self.value!r}: {e}") from e

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set passes this matcher (a missing label reads as "")."""
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = self._regex.fullmatch(v) is not None  # type: ignore[attr-defined]
        return hit if self.op == "=~" else not hit

    def text(self) -> str:
        """Canonical text, as Alertmanager's API `filter` parameter expects it."""
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as `alertname=~".*Detach.*"`; raises MatcherError."""
    m = _MATCHER.fullmatch(text)
    if not m:
        raise MatcherError(f'{text!r} is not a matcher like name="value" or name=~"regex"')
    if m["quoted"] is not None:
        value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e[1], "\\" + e[1]), m["quoted"])
    else:
        value = m["bare"]
    return Matcher(m["name"], m["op"], value)


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher passes."""
    return all(m.matches(labels) for m in matchers)

"""Five-field cron expressions (minute hour day-of-month month day-of-week), local time.

Enough of cron for timed jobs: ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``,
lists ``a,b,c``, month and weekday names (``jan``, ``mon``), day-of-week 0-7 (0 and 7 are
Sunday), and the usual rule that when both day fields are restricted a day matching either
one fires. Aliases ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``,
``@yearly``/``@annually``.
"""
from __future__ import annotations

import datetime as _dt

__all__ = ["CronSchedule"]

_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def _parse_field(text: str, lo: int, hi: int, names: dict[str, int] | None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        if not part:
            raise ValueError(f"empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in {part!r}")
        if base == "*":
            start, end = lo, hi
        else:
            first, dash, last = base.partition("-")
            start = _value(first, names)
            end = _value(last, names) if dash else (hi if step_text else start)
        if not (lo <= start <= hi and lo <= end <= hi) or start > end:
            raise ValueError(f"{part!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int] | None) -> int:
    if names and text in names:
        return names[text]
    if not text.isdigit():
        raise ValueError(f"not a number: {text!r}")
    return int(text)


class CronSchedule:
    """A parsed cron expression; `next_after` gives the next fire time."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        text = _ALIASES.get(expression.strip().lower(), expression)
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"cron {expression!r}: need 5 fields (minute hour day month weekday)")
        try:
            self.minutes = _parse_field(fields[0], 0, 59, None)
            self.hours = _parse_field(fields[1], 0, 23, None)
            self.days = _parse_field(fields[2], 1, 31, None)
            self.months = _parse_field(fields[3], 1, 12, _MONTHS)
            weekdays = _parse_field(fields[4], 0, 7, _DAYS)
        except ValueError as exc:
            raise ValueError(f"cron {expression!r}: {exc}") from None
        self.weekdays = frozenset(d % 7 for d in weekdays)  # cron: 0=Sunday
        self._day_any = fields[2] == "*"
        self._weekday_any = fields[4] == "*"

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"

    def _day_matches(self, day: _dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self._day_any and self._weekday_any:
            return True
        if self._day_any:
            return dow
        if self._weekday_any:
            return dom
        return dom or dow

    def next_after(self, after: float) -> float:
        """The first matching minute strictly after ``after`` (epoch seconds), local time."""
        t = _dt.datetime.fromtimestamp(after).replace(second=0, microsecond=0)
        t += _dt.timedelta(minutes=1)
        limit = t + _dt.timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months or not self._day_matches(t.date()):
                t = (t + _dt.timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + _dt.timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += _dt.timedelta(minutes=1)
                continue
            return t.timestamp()
        raise ValueError(f"cron {self.expression!r} never fires")

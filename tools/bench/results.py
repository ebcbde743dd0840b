"""The benchmark's figures: medians and ranges, ratios against their baselines, targets, the
table `make bench` prints and the JSON it writes (the schema is in tools/bench/README.md)."""

from __future__ import annotations

import json
import operator
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
COMPARISONS = {">=": operator.ge, "<=": operator.le}


@dataclass
class Run:
    """One repetition of one measurement."""

    value: float  # req/s, or ms of nginx CPU per connection, or MB
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    detail: dict = field(default_factory=dict)


@dataclass
class Target:
    comparison: str  # ">=" or "<="
    threshold: float
    of: str  # what is compared: "ratio" or "p99_ms"

    def met(self, value: float | None) -> bool | None:
        return None if value is None else COMPARISONS[self.comparison](value, self.threshold)

    def __str__(self) -> str:
        unit = " ms" if self.of == "p99_ms" else "×"
        return f"{self.of.replace('_ms', '')} {self.comparison} {self.threshold:g}{unit}"


@dataclass
class Figure:
    key: str  # "1", "9a", …: the numbering of issue 8
    name: str
    unit: str
    baseline: str | None = None  # key of the figure this one is divided by
    target: Target | None = None
    note: str = ""
    runs: list[Run] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [run.value for run in self.runs]

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.runs else None

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    def median_of(self, name: str) -> float | None:
        values = [getattr(run, name) for run in self.runs if getattr(run, name) is not None]
        return statistics.median(values) if values else None

    @property
    def cpu_ms_per_request(self) -> dict[str, float]:
        """Median CPU ms per request of each server (app, postgres, redis, nginx) and in all."""
        measured = [
            run.detail["cpu_ms_per_request"]
            for run in self.runs
            if "cpu_ms_per_request" in run.detail
        ]
        if not measured:
            return {}
        medians = {name: statistics.median(cpu[name] for cpu in measured) for name in measured[0]}
        medians["all"] = statistics.median(sum(cpu.values()) for cpu in measured)
        return {name: round(value, 3) for name, value in medians.items()}


class Results:
    def __init__(self, mode: str, settings: dict, environment: dict) -> None:
        self.mode = mode
        self.settings = settings
        self.environment = environment
        self.figures: dict[str, Figure] = {}
        self.profiles: dict[str, dict] = {}  # figure key → py-spy summary (--py-spy)

    def add(self, figure: Figure) -> Figure:
        self.figures[figure.key] = figure
        return figure

    def in_order(self) -> list[Figure]:
        """By the issue's numbering (1, 2, … 9a, 9b, 10a …), whatever order they ran in."""
        # Then "H…" (the hosts' Python) and "C…" (the peer edge), each group in the order of
        # the figures it mirrors.
        groups = {"H": 1, "C": 2}
        return sorted(
            self.figures.values(),
            key=lambda f: (groups.get(f.key[0], 0), int(re.search(r"\d+", f.key)[0]), f.key),
        )

    def ratio(self, figure: Figure) -> float | None:
        if figure.baseline is None or figure.median is None:
            return None
        base = self.figures[figure.baseline].median
        return figure.median / base if base else None

    def verdict(self, figure: Figure) -> bool | None:
        if figure.target is None:
            return None
        if figure.target.of == "p99_ms":
            return figure.target.met(figure.median_of("p99_ms"))
        return figure.target.met(self.ratio(figure))

    @property
    def total_errors(self) -> int:
        return sum(figure.errors for figure in self.figures.values())

    # ---- output ------------------------------------------------------------------------------

    def rows(self) -> list[list[str]]:
        rows = []
        for figure in self.in_order():
            ratio = self.ratio(figure)
            verdict = self.verdict(figure)
            p50, p99 = figure.median_of("p50_ms"), figure.median_of("p99_ms")
            rows.append(
                [
                    f"{figure.key:>3} {figure.name}",
                    _value_text(figure),
                    f"{p50:.1f} / {p99:.1f} ms" if p50 is not None and p99 is not None else "",
                    f"{ratio:.2f} × {figure.baseline}" if ratio is not None else "",
                    str(figure.target) if figure.target else "",
                    {True: "✔", False: "✘", None: ""}[verdict],
                ]
            )
        rows.append(
            [
                "    errors (all runs)",
                str(self.total_errors),
                "",
                "",
                "= 0",
                _tick(not self.total_errors),
            ]
        )
        return rows

    def table(self) -> str:
        header = ["figure", "req/s median (min–max)", "p50 / p99", "ratio", "target", "✔/✘"]
        rows = [header, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for number, row in enumerate(rows):
            lines.append(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            )
            if number == 0:
                lines.append("  ".join("-" * width for width in widths))
        notes = [f"    {f.key}: {f.note}" for f in self.in_order() if f.note]
        lines += ["", "notes:", *notes] if notes else []
        cpu = [(f.key, f.cpu_ms_per_request) for f in self.in_order() if f.cpu_ms_per_request]
        if cpu:
            names = list(cpu[0][1])
            lines += ["", "CPU ms per request (median), by server: " + " / ".join(names)]
            lines += [
                f"    {key:>3}  " + " / ".join(f"{ms.get(name, 0):.3f}" for name in names)
                for key, ms in cpu
            ]
        for key, summary in self.profiles.items():
            lines += [
                "",
                f"profile of {key}: self time by package (% of {summary['samples']} samples)",
            ]
            lines += [
                f"    {pct:5.1f}  {name}" for name, pct in summary["self_by_package_%"].items()
            ]
        return "\n".join(lines).rstrip()

    def as_dict(self) -> dict:
        figures = []
        for figure in self.in_order():
            values = figure.values
            figures.append(
                {
                    "key": figure.key,
                    "name": figure.name,
                    "unit": figure.unit,
                    "median": figure.median,
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "p50_ms": figure.median_of("p50_ms"),
                    "p99_ms": figure.median_of("p99_ms"),
                    "baseline": figure.baseline,
                    "ratio": self.ratio(figure),
                    "target": str(figure.target) if figure.target else None,
                    "target_met": self.verdict(figure),
                    "errors": figure.errors,
                    "cpu_ms_per_request": figure.cpu_ms_per_request or None,
                    "note": figure.note,
                    "runs": [asdict(run) for run in figure.runs],
                }
            )
        verdicts = [self.verdict(f) for f in self.figures.values() if f.target is not None]
        return {
            "schema": SCHEMA_VERSION,
            "mode": self.mode,
            "settings": self.settings,
            "environment": self.environment,
            "figures": figures,
            "errors": self.total_errors,
            "targets_met": sum(1 for verdict in verdicts if verdict),
            "targets": len(verdicts),
            "profiles": self.profiles,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")
        temporary.replace(path)  # readers never see half a file


def _tick(ok: bool) -> str:
    return "✔" if ok else "✘"


def _value_text(figure: Figure) -> str:
    if not figure.runs:
        return "not measured"
    values = figure.values
    precision = 0 if figure.unit == "req/s" else 2 if figure.unit != "MB" else 1
    unit = "" if figure.unit == "req/s" else f" {figure.unit}"
    text = f"{figure.median:.{precision}f}{unit}"
    if len(values) > 1:
        text += f" ({min(values):.{precision}f}–{max(values):.{precision}f})"
    return text

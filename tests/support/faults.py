"""The fault tables of the end-to-end stages: one row per fault caused under load, printed at
the end of the module and kept in .build/e2e/, where tools/run-e2e.sh prints them again at the
end of the stage."""

from __future__ import annotations

from pathlib import Path

from support.load import WriteLoad

ROOT = Path(__file__).resolve().parents[2]


class FaultTable:
    COLUMNS = ("case", "requests", "failed", "slowest failure", "acked writes", "in Postgres",
               "back after")  # fmt: skip

    def __init__(self, columns: tuple[str, ...] = COLUMNS) -> None:
        self.columns = columns
        self.rows: list[dict] = []

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        print(" | ".join(f"{name}: {row.get(name, '-')}" for name in self.columns))

    def add(self, case: str, load: WriteLoad, found: int, back_after: float | None) -> None:
        failed = ", ".join(f"{n}× {what}" for what, n in sorted(load.failures().items()))
        row = {
            "case": case,
            "requests": len(load.requests),
            "failed": failed or "0",
            "slowest failure": f"{load.slowest_failure():.2f} s" if load.failed else "-",
            "acked writes": len(load.acknowledged),
            "in Postgres": found,
            "back after": "-" if back_after is None else f"{back_after:.1f} s",
        }
        self.add_row(row)

    def render(self) -> str:
        cells = [[str(row.get(c, "-")) for c in self.columns] for row in self.rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(self.columns)]
        line = " | ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        lines = [line, "-|-".join("-" * w for w in widths)]
        lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(lines)

    def report(self, sandbox, title: str, mode: str = "w") -> None:
        """Print the table, and keep it where tools/run-e2e.sh prints it at the stage's end
        (mode "a": after the tables already there). No rows: its cases did not get that far."""
        text = f"{title}:\n{self.render() if self.rows else '(no case ran to its end)'}\n"
        print("\n" + text)
        out = ROOT / ".build" / "e2e"
        out.mkdir(parents=True, exist_ok=True)
        with (out / f"faults-{sandbox.sandbox_id}.txt").open(mode) as file:
            file.write(text if mode == "w" else "\n" + text)

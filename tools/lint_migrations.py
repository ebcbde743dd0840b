"""Lint every Alembic revision with squawk, as the SQL it runs on Postgres.

    python -m tools.lint_migrations [MIGRATIONS_DIR]      (make lint runs it)

Each revision is rendered on its own in Alembic's offline mode (what `flask db upgrade --sql`
prints, the lock bounds of migrations/env.py included) and checked by squawk with
migrations/squawk.toml. A violation fails with squawk's explanation, named by the revision's
file. To accept one deliberately, the revision says why and emits squawk's own ignore comment
right before the statement: `accept_lint("rule-name", "why")` from app.schema.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app import MIGRATIONS_DIR, create_app

SQUAWK_CONFIG = MIGRATIONS_DIR / "squawk.toml"
# Offline rendering never connects: any Postgres URL gives the dialect.
RENDER_SETTINGS = {
    "APP_ENV": "development",
    "DATABASE_URL": "postgresql://lint@127.0.0.1:1/lint",
    "SECRET_KEY": "migration-lint-only-" + "x" * 32,
}


@dataclass
class Verdict:
    revision: str
    path: Path
    ok: bool
    report: str


def render(config: Config, revision: str, down_revision: str | None) -> str:
    buffer = io.StringIO()
    config.output_buffer = buffer
    command.upgrade(config, f"{down_revision}:{revision}" if down_revision else revision, sql=True)
    return buffer.getvalue()


def squawk(sql: str, path: Path) -> subprocess.CompletedProcess:
    squawk_bin = Path(sys.executable).with_name("squawk")
    return subprocess.run(
        [str(squawk_bin), "--config", str(SQUAWK_CONFIG), "--reporter", "gcc",
         "--stdin-filepath", str(path)],
        input=sql, capture_output=True, text=True, check=False,
    )  # fmt: skip


def lint(directory: Path = MIGRATIONS_DIR) -> list[Verdict]:
    app = create_app(RENDER_SETTINGS)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(directory))
    verdicts = []
    with app.app_context():
        scripts = ScriptDirectory.from_config(config)
        for script in reversed(list(scripts.walk_revisions())):
            if isinstance(script.down_revision, tuple):
                continue  # a merge revision runs no SQL of its own
            sql = render(config, script.revision, script.down_revision)
            result = squawk(sql, Path(script.path))
            if result.returncode not in (0, 1):
                raise RuntimeError(f"squawk failed on {script.path}: {result.stderr}")
            verdicts.append(
                Verdict(script.revision, Path(script.path), result.returncode == 0,
                        (result.stdout + result.stderr).strip())
            )  # fmt: skip
    return verdicts


def main() -> int:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else MIGRATIONS_DIR
    verdicts = lint(directory)
    for verdict in verdicts:
        if not verdict.ok:
            print(f"{verdict.path}: squawk rejects revision {verdict.revision}:\n{verdict.report}")
    failed = sum(not v.ok for v in verdicts)
    print(f"squawk: {len(verdicts) - failed} of {len(verdicts)} revisions pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

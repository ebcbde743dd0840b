"""The Docker build context is an allow-list (.dockerignore): every file the Dockerfile copies
from it must be let in, or the image build fails far into the Compose stage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# The app's directory in the context (ARG APP_DIR): the repository's top, or the release that
# `make compose-app` unpacks.
APP_DIRS = (".", ".build/compose/app")


def copied_sources(app_dir: str) -> list[str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    assert re.search(r"^ARG APP_DIR=\.$", text, re.MULTILINE), "APP_DIR's default changed"
    sources = []
    for line in text.splitlines():
        words = line.replace("${APP_DIR}", app_dir).split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w.removeprefix("./") for w in words[1:-1] if not w.startswith("--")]
    # "./" (the blog's directory) is the whole context: whatever the allow-list lets in.
    return [source for source in sources if source not in ("", ".")]


def allowed(path: str, allow: list[str]) -> bool:
    path = path.rstrip("/")
    return any(path == entry.rstrip("/") or path.startswith(entry.rstrip("/") + "/")
               for entry in allow)  # fmt: skip


@pytest.mark.parametrize("app_dir", APP_DIRS)
def test_every_file_the_dockerfile_copies_is_in_the_build_context(app_dir):
    allow = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.startswith("!")]  # fmt: skip
    sources = copied_sources(app_dir)
    assert sources, "no COPY found in the Dockerfile"
    missing = [s for s in sources if not allowed(s, allow)]
    assert missing == [], f"add to .dockerignore's allow-list: {missing}"
    if app_dir == ".":
        assert all((ROOT / s).exists() for s in sources), sources

"""The Docker build context is an allow-list (.dockerignore): every file the Dockerfile copies
from it must be let in, or the image build fails far into the Compose stage."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def copied_sources() -> list[str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    sources = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def allowed(path: str, allow: list[str]) -> bool:
    path = path.rstrip("/")
    return any(path == entry.rstrip("/") or path.startswith(entry.rstrip("/") + "/")
               for entry in allow)  # fmt: skip


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    allow = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.startswith("!")]  # fmt: skip
    sources = copied_sources()
    assert sources, "no COPY found in the Dockerfile"
    missing = [s for s in sources if not allowed(s, allow)]
    assert missing == [], f"add to .dockerignore's allow-list: {missing}"
    assert all((ROOT / s).exists() for s in sources), sources

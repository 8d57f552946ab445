"""axe-core (Deque's accessibility engine, from npm, a pinned version) for the browser tests.

Installed once into .cache/axe-core-VERSION by `npm install` (npm checks the package's
integrity); .ci/run does the same before the suite. Injected into each page from that file:
never from a CDN.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

VERSION = "4.14.1"
REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / ".cache" / f"axe-core-{VERSION}"
SCRIPT = FOLDER / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.0/2.1/2.2 A and AA, and axe's best practices; what fails is a violation of impact serious or critical.
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
BLOCKING = ("serious", "critical")


def axe_script() -> Path:
    """The path of axe.min.js at the pinned version, installing it when missing (skip if npm cannot)."""
    if not SCRIPT.exists():
        try:
            subprocess.run(["npm", "install", "--prefix", str(FOLDER), "--no-audit", "--no-fund", "--no-save",
                            "--silent", f"axe-core@{VERSION}"], check=True, capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"axe-core {VERSION} is not installed and npm could not install it: {exc}")
    head = SCRIPT.read_text(encoding="utf-8")[:40]
    assert f"axe v{VERSION}" in head, f"{SCRIPT} is not axe-core {VERSION}: {head!r}"
    return SCRIPT


def serious_violations(page: Any) -> list[str]:
    """Run axe on the page as it is; each serious or critical violation as one readable line."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_script()))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
            for v in result["violations"] if v["impact"] in BLOCKING]

"""The README documents what the code does: its settings table is the code's own."""

from __future__ import annotations

import re
from pathlib import Path

from config import INSTANCE_SETTINGS, PINNED, SETTINGS, settings_markdown, where_kept

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    block = re.search(r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert block, "README lost its settings markers"
    assert block.group(1).strip() == settings_markdown().strip(), \
        "README settings table is stale: paste the output of `flask --app app settings markdown`"
    assert all(s.env in text for s in SETTINGS)


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick and "make test" in quick


def test_readme_says_where_each_setting_is_kept() -> None:
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip()
            for line in README.read_text().splitlines() if line.startswith("| `OPAUTH_")}
    for setting in SETTINGS:
        kept = rows[setting.env]
        assert kept == where_kept(setting.key)
        assert kept.startswith("instance") == (setting.key in INSTANCE_SETTINGS)
        assert ("pinned" in kept) == (setting.key in PINNED)
        assert ("restart" in kept) == (setting.key in INSTANCE_SETTINGS and INSTANCE_SETTINGS[setting.key].restart)

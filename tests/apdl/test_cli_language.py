"""The module's commands speak one language at a time, chosen as opauth's commands choose theirs: the shell's
locale (``LANG=en_US.UTF-8`` for English), Japanese otherwise — their own messages and the services' alike."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result

from apdl.app import create_app

ENGLISH = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "en_US.UTF-8"}
JAPANESE = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "ja_JP.UTF-8"}
SHELL_DEFAULT = {"LC_ALL": "", "LC_MESSAGES": "", "LANG": "C.UTF-8"}


def test_commands_follow_the_shells_language(tmp_path: Path) -> None:
    app = create_app({"INSTANCE_DIR": str(tmp_path / "apdl"), "ADMIN_TENANT": "apdlcenter"})
    cli = app.test_cli_runner()

    def run(env: dict[str, str], *args: str) -> Result:
        return cli.invoke(args=["apdl", *args], env=env)

    assert run(ENGLISH, "migrate").output.strip() == "apdl database is up to date."
    assert run(JAPANESE, "migrate").output.strip() == "apdlのデータベースは最新です。"
    assert run(SHELL_DEFAULT, "migrate").output.strip() == "apdlのデータベースは最新です。"

    register = ["terminal", "register", "--tenant", "minamiedo", "--organization", "南江戸市"]
    english = run(ENGLISH, *register, "--name", "desk-1")
    assert english.exit_code == 0 and english.output.strip() == \
        "Terminal desk-1 of minamiedo registered (O=南江戸市)."
    japanese = run(JAPANESE, *register, "--name", "desk-2")
    assert japanese.exit_code == 0 and japanese.output.strip() == \
        "利用機関 minamiedo の端末 desk-2 を登録しました（O=南江戸市）。"
    # a service's refusal, in the same language as the command's own words
    again = run(ENGLISH, *register, "--name", "desk-1")
    assert again.exit_code == 1 and "already registered" in again.output and "登録" not in again.output
    assert "すでに登録されています" in run(JAPANESE, *register, "--name", "desk-1").output
    assert run(ENGLISH, "terminal", "disable", "--tenant", "minamiedo", "--name", "desk-1").output.strip() == \
        "Terminal desk-1 of minamiedo disabled."
    assert run(JAPANESE, "terminal", "enable", "--tenant", "minamiedo", "--name", "desk-1").output.strip() == \
        "利用機関 minamiedo の端末 desk-1 を有効にしました。"
    unknown = run(ENGLISH, "terminal", "disable", "--tenant", "kitaedo", "--name", "desk-1")
    assert unknown.exit_code == 1 and "No terminal desk-1 is registered to tenant kitaedo." in unknown.output
    bad = run(JAPANESE, "terminal", "register", "--tenant", "not a code!", "--name", "x", "--organization", "o")
    assert bad.exit_code == 2 and "利用機関コードではありません。" in bad.output
    feed = tmp_path / "feed.csv"
    feed.write_text("card_identifier,status,residence_code,occurred_at\n1000000000001,lost,,2026-11-29\n")
    assert "batch b1 imported: 1 row, 1 changed" in run(ENGLISH, "import-status", str(feed), "--batch-id", "b1").output
    assert "バッチ b1 は取込済みです（1件）。" in run(JAPANESE, "import-status", str(feed), "--batch-id", "b1").output

"""CI runs the README's two commands as a new user types them: the same text, in the README's
order."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def readme_command(title: str) -> str:
    """The one-line bash block after the README's bold ``title``."""
    after = ROOT.joinpath("README.md").read_text().split(f"**{title}**", 1)[1]
    block = re.search(r"```bash\n(.*?)\n```", after, re.S)
    assert block and "\n" not in block.group(1), f"the README's {title!r} is one bash line"
    return block.group(1)


def test_ci_runs_both_readme_commands_verbatim_main_job_first():
    lines = ROOT.joinpath(".ci", "run").read_text().splitlines()
    main_job, tests = readme_command("Run the main job"), readme_command("Run the tests")
    assert main_job in lines and tests in lines
    assert (
        lines.index(main_job) < lines.index(".venv/bin/adaptloop kafka down") < lines.index(tests)
    )
    # the main job runs on the base install, before the test command adds the extra
    assert "'.[dev]'" not in main_job

"""The canary split in other languages: the Node and Java code of docs/services.md, run as they are
written, assign every decision id as ``adaptloop.learners.canary_split.in_canary`` does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from adaptloop.learners.canary_split import in_canary

DOC = Path(__file__).resolve().parents[2] / "docs" / "services.md"
IDS = [f"d{n}" for n in range(3000)] + [
    "",
    "décision-✓",
    "x" * 300,
    "8c1f0e4e-2b1a-4c4e-9a7e-1d2f3a4b5c6d",
]
SHARES = [0.01, 0.1, 0.25, 0.5, 0.9, 0.3333333333333333]


def _snippet(language: str) -> str:
    section = DOC.read_text().split("## Canary versions, in another language", 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match is not None, f"no {language} block in the section"
    return match.group(1)


def _expected() -> str:
    return "".join(
        "1" if in_canary(decision_id, share) else "0" for share in SHARES for decision_id in IDS
    )


@pytest.fixture
def ids_file(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(IDS), encoding="utf-8")
    return path


def test_the_documented_node_split_agrees_with_python(ids_file):
    program = (
        _snippet("js")
        + f"""
const ids = require("node:fs").readFileSync({str(ids_file)!r}, "utf8").split("\\n");
const shares = {SHARES};
process.stdout.write(shares.flatMap((share) => ids.map((id) => (inCanary(id, share) ? "1" : "0"))).join(""));
"""
    )
    result = subprocess.run(
        ["node", "-e", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == _expected()


def test_the_documented_java_split_agrees_with_python(ids_file, tmp_path):
    source = tmp_path / "Split.java"
    source.write_text(
        "import java.math.*; import java.nio.charset.StandardCharsets; import java.nio.file.*;\n"
        "import java.security.MessageDigest; import java.util.*;\n"
        "public class Split {\n"
        + _snippet("java")
        + f"""
public static void main(String[] args) throws Exception {{
    String[] ids = new String(Files.readAllBytes(Paths.get("{ids_file}")), StandardCharsets.UTF_8).split("\\n", -1);
    double[] shares = {{{", ".join(repr(share) for share in SHARES)}}};
    StringBuilder out = new StringBuilder();
    for (double share : shares) for (String id : ids) out.append(inCanary(id, share) ? '1' : '0');
    System.out.print(out);
}}
}}
"""
    )
    result = subprocess.run(
        ["java", str(source)], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout == _expected()

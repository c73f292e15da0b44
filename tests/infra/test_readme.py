"""The README's set-up, local and deploy instructions name things that exist.

A renamed make target, CLI option, event file or stack output makes a README command wrong
without any other test noticing; these tests read the commands out of the README (and
docs/deploy.md) and check each against the Makefile, the CLI, the repository and the template.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jobtracker_local import gates

pytestmark = pytest.mark.infra

ROOT = gates.ROOT
DOCS = [ROOT / "README.md", ROOT / "docs" / "deploy.md"]


def text(path: Path) -> str:
    return path.read_text()


def code_blocks(doc: str) -> list[str]:
    return re.findall(r"```(?:bash)?\n(.*?)```", doc, re.S)


def commands(doc: str) -> list[str]:
    """Shell commands of fenced blocks (continuations joined) and of inline code spans."""
    out = []
    for block in code_blocks(doc):
        out += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    out += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", doc, flags=re.S))
    return out


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", text(ROOT / "Makefile"), re.M))


def cli_options() -> dict[str, set[str]]:
    """`jobtracker local <command>` -> its options, read from the parser's source."""
    source = text(ROOT / "local" / "jobtracker_local" / "cli.py")
    out: dict[str, set[str]] = {}
    for var, name in re.findall(r'(\w+) = commands\.add_parser\("(\w+)"', source):
        out[name] = set(re.findall(rf'{var}\.add_argument\(\s*"(--[\w-]+)"', source))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_make_target_named_exists(doc: Path) -> None:
    named = {t for cmd in commands(text(doc)) for t in re.findall(r"\bmake ([a-z][\w-]*)", cmd)}
    assert named, doc
    assert named <= make_targets(), named - make_targets()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_jobtracker_command_and_option_exists(doc: Path) -> None:
    options = cli_options()
    for cmd in commands(text(doc)):
        for sub, rest in re.findall(r"jobtracker local (\w+)((?: [^|;&)]*)?)", cmd):
            assert sub in options, cmd
            used = set(re.findall(r"(--[\w-]+)", rest))
            assert used <= options[sub], (cmd, used - options[sub])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_named_exists(doc: Path) -> None:
    body = text(doc)
    paths = set(
        re.findall(r"(?<![\w/.])((?:events|docs|infra|functions|layers|local|tests)/[\w./-]*\w)", body)
    )
    paths |= set(re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", body))
    missing = sorted(p for p in paths if not (doc.parent / p).exists() and not (ROOT / p).exists())
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_stack_output_read_exists(doc: Path, template_doc: dict[str, Any]) -> None:
    wanted = set(re.findall(r"\$\(out (\w+)\)", text(doc)))
    wanted |= set(re.findall(r"`(\w+(?:TableName|Url|Arn|Id))`", text(doc))) & {
        k for k in template_doc["Outputs"] if k.endswith(("TableName", "Url", "Arn", "Id"))
    }
    assert set(re.findall(r"\$\(out (\w+)\)", text(ROOT / "README.md")))
    assert wanted <= set(template_doc["Outputs"]), wanted - set(template_doc["Outputs"])


def test_sam_commands_pass_an_absolute_config_file() -> None:
    # Same reason as the Makefile: a relative --config-file resolves against infra/ for some commands.
    for doc in DOCS:
        for cmd in commands(text(doc)):
            if re.search(r"\bsam (build|deploy|delete|validate)\b", cmd) and "--config-file" in cmd:
                assert '--config-file "$PWD/samconfig.toml"' in cmd, cmd


def test_readme_sets_up_with_two_commands_and_covers_deploy_and_local() -> None:
    readme = text(ROOT / "README.md")
    first_block = code_blocks(readme)[0]
    assert [line.split()[:2] for line in first_block.splitlines() if line] == [
        ["make", "run"],
        ["make", "test"],
    ]
    sections = re.findall(r"^#{2,3} (.+)$", readme, re.M)
    deploy = sections[sections.index("Deploy to AWS") + 1 :]
    for heading in (
        "Prerequisites",
        "Verify the SES sender",
        "Cognito or an external issuer",
        "First deploy",
    ):
        assert any(heading in s for s in deploy), heading
    for heading in ("Get a token", "Call the API", "Tear down"):
        assert any(heading in s for s in deploy), heading
    assert "Runs locally without Docker" in sections
    assert any("LocalStack" in s and "awslocal" in s for s in sections)
    # SES sandbox limits, spelled out
    assert "200 messages per 24 hours" in readme and "1 message per second" in readme

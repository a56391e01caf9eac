"""docs/cli.md, docs/policy.md and docs/metrics.md are generated (corral/docs.py): each test
here fails when a file is stale, and says how to regenerate it (`make docs`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from corral import docs
from corral.cli import COMMANDS
from corral.cli import main as corral_main
from enforce.policy import schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(docs.GENERATED))
def test_generated_doc_is_current(name: str) -> None:
    path = ROOT / "docs" / name
    assert path.exists(), f"docs/{name} is missing: regenerate it with `make docs`"
    assert path.read_text(encoding="utf-8") == docs.GENERATED[name](), (
        f"docs/{name} is stale: regenerate it with `make docs` (.venv/bin/python -m corral.docs)"
    )


def test_write_reports_only_changed_files(tmp_path: Path) -> None:
    assert sorted(p.name for p in docs.write(tmp_path)) == sorted(docs.GENERATED)
    (tmp_path / "cli.md").write_text("hand-edited\n", encoding="utf-8")
    assert docs.write(tmp_path) == [tmp_path / "cli.md"]
    assert docs.write(tmp_path) == []


def test_output_does_not_depend_on_the_terminal(tmp_path: Path) -> None:
    """click wraps help to the terminal's width (COLUMNS) when it formats for one; the
    generator must not, or the file would differ between a laptop and CI."""
    env = {**os.environ, "COLUMNS": "37", "LINES": "10"}
    done = subprocess.run(
        [sys.executable, "-m", "corral.docs", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for name, generate in docs.GENERATED.items():
        assert (tmp_path / name).read_text(encoding="utf-8") == generate(), name


def _all_commands() -> list[tuple[str, click.Command]]:
    def walk(cmd: click.Command, ctx: click.Context) -> list[tuple[str, click.Command]]:
        out = [(ctx.command_path, cmd)]
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                if not sub.hidden:
                    out += walk(sub, click.Context(sub, info_name=name, parent=ctx))
        return out

    return walk(corral_main, click.Context(corral_main, info_name="corral"))


def test_cli_md_has_every_command_and_option() -> None:
    text = docs.cli_markdown()
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[1:]}
    commands = _all_commands()
    assert {f"corral {name}" for name in COMMANDS} <= set(sections)
    assert {"corral machine run", "corral policy plan", "corral oci create"} <= set(sections)
    for path, command in commands[1:]:
        section = sections[path]
        assert f"\n{path} " in section or f"\n{path}\n" in section  # the usage line
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for flag in param.opts:
                    assert f"`{flag}`" in section, (path, flag)


def test_cli_md_escapes_pipes_in_table_cells() -> None:
    rows = [line for line in docs.cli_markdown().splitlines() if line.startswith("| `--policy`")]
    assert any("`FILE\\|DIR`" in row for row in rows)
    for line in docs.cli_markdown().splitlines():
        if line.startswith("| `"):
            assert line.replace("\\|", "").count("|") == 5, line


def test_policy_md_documents_every_key_of_the_default_policy() -> None:
    """Each key default.toml sets (the commented reference policy) has its row, under the
    table it is set in."""
    text = docs.policy_markdown()
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[1:]}
    policy = tomllib.loads((ROOT / "enforce/policies/default.toml").read_text())
    for key in policy["enforcer"]:
        assert f"| `{key}` |" in sections["`[enforcer]`"], key
    for rule in policy["rule"]:
        for key, value in rule.items():
            if isinstance(value, dict) and key != "select":
                for sub in value:
                    assert f"| `{sub}` |" in sections[f"`[rule.{key}]`"], (key, sub)
            else:
                assert f"| `{key}` |" in sections["`[[rule]]`"], key


def test_policy_md_rows_carry_type_default_and_bounds() -> None:
    text = docs.policy_markdown()
    assert '| `memory_max_margin_bytes` | size | `"64M"` |  |' in text
    assert '| `tick_seconds` | duration | `"1s"` | > 0, <= 60 |' in text
    assert '| `pressure` | duration | `"10ms"` | > 0 |' in text
    assert "| `percentile` | number | `95` | > 0, <= 100 |" in text
    assert "| `protect` | list of globs | required | at least 1 |" in text
    for controller in schema.CONTROLLERS:
        assert f"## `[rule.{controller}]`" in text


def test_every_policy_key_needs_a_description() -> None:
    class Bare(schema.LimitsParams):
        extra_key: int = 0

    with pytest.raises(ValueError, match=r"Bare\.extra_key has no Field"):
        docs._policy_section("[rule.bare]", Bare)


def test_config_md_documents_every_key_of_the_example_config() -> None:
    """dist/corral.toml (the annotated example) and docs/config.md name the same keys, each
    under its table: a key added to the schema must reach both."""
    text = docs.config_markdown()
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[1:]}
    example = (ROOT / "dist/corral.toml").read_text()
    # The example comments out the keys without a default value; uncomment to read them all.
    keys = tomllib.loads(re.sub(r"(?m)^# (?=[a-z_]+ = )", "", example))
    from corral.agent.config import AgentConfig

    for key, value in keys.items():
        if isinstance(value, dict):
            for sub in value:
                assert f"| `{sub}` |" in sections[f"`[{key}]`"], (key, sub)
            assert set(value) == set(AgentConfig.model_fields[key].annotation.model_fields)  # type: ignore[union-attr]
        else:
            assert f"| `{key}` |" in sections["Top-level keys"], key

"""The generated references in docs/: cli.md from the click commands, config.md and policy.md
from the agent's configuration and the policy schema's pydantic models, metrics.md from the
exporter's catalogue.

`make docs` (python -m corral.docs [DIR]) rewrites them; tests/unit/test_docs_generated.py
fails when one is stale. The text depends on the code only: click's help is never laid out for
a terminal (no width), commands come in `corral --help`'s sorted order, fields in model order.
"""

from __future__ import annotations

import enum
import inspect
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import click
from pydantic import AfterValidator, BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from corral.cli import main as corral_main
from enforce.metrics import FAMILIES
from enforce.policy import schema
from monitor.exporter.metrics import markdown as metrics_markdown
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.limit_syntax import format_size
from runtime.cgroupfs.pids import PIDS_LIMIT

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "make docs"
HEADER = "Generated from {source} by `{cmd}` (corral/docs.py); do not edit by hand."


def _cell(text: str) -> str:
    """A markdown table cell: pipes escaped (inside code spans too, as GFM tables need)."""
    return " ".join(text.split()).replace("|", "\\|")


def _help_paragraphs(text: str) -> list[str]:
    """click's help text as markdown: paragraphs rewrapped, a ``\\b`` paragraph kept verbatim
    (click's no-rewrap marker), anything after ``\\f`` dropped (click hides it too)."""
    out = []
    for para in inspect.cleandoc(text.split("\f")[0]).split("\n\n"):
        if para.startswith("\b"):
            out.append("```\n" + para[1:].strip("\n") + "\n```")
        elif para.strip():
            out.append(" ".join(para.split()))
    return out


def _option_row(option: click.Option, ctx: click.Context) -> str:
    flags = ", ".join(f"`{o}`" for o in option.opts)
    if option.secondary_opts:
        flags += " / " + ", ".join(f"`{o}`" for o in option.secondary_opts)
    value = "" if option.is_flag or option.count else f"`{option.make_metavar(ctx)}`"
    extra = option.get_help_extra(ctx)
    default = f"`{extra['default']}`" if "default" in extra else ""
    notes = [option.help or ""]
    if "range" in extra:
        notes.append(f"Range {extra['range']}.")
    if option.required:
        notes.append("Required.")
    if option.multiple:
        notes.append("May be repeated.")
    envvars = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar or ())
    envvars = [e for e in envvars if e not in notes[0]]
    if envvars:
        notes.append("Environment: " + ", ".join(f"`{e}`" for e in envvars) + ".")
    return "| " + " | ".join(_cell(c) for c in (flags, value, default, " ".join(notes))) + " |"


def _commands(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    """The command and every subcommand below it, depth first, each group's in sorted order."""
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, click.Context(sub, info_name=name, parent=ctx))


def _command_section(command: click.Command, ctx: click.Context) -> list[str]:
    lines = [f"## {ctx.command_path}", ""]
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    lines += ["```", usage, "```", ""]
    for para in _help_paragraphs(command.help or ""):
        lines += [para, ""]
    if isinstance(command, click.Group) and ctx.parent is not None:
        subs = [
            f"[`{ctx.command_path} {n}`](#{_anchor(f'{ctx.command_path} {n}')})"
            for n in command.list_commands(ctx)
        ]
        lines += ["Subcommands: " + ", ".join(subs) + ".", ""]
    options = [
        p
        for p in command.get_params(ctx)
        if isinstance(p, click.Option) and not p.hidden and "--help" not in p.opts
    ]
    if options:
        lines += ["| option | value | default | meaning |", "|---|---|---|---|"]
        lines += [_option_row(o, ctx) for o in options]
        lines.append("")
    return lines


def _anchor(title: str) -> str:
    """GitHub's heading anchor for the plain words of a command path."""
    return "-".join(title.lower().split())


def cli_markdown() -> str:
    """docs/cli.md: every command and subcommand of `corral` with usage, help and options."""
    root = click.Context(corral_main, info_name="corral")
    found = list(_commands(corral_main, root))
    lines = [
        "# corral's commands",
        "",
        HEADER.format(source="the click commands in `corral/cli/`", cmd=REGENERATE),
        "",
        "Every command also takes `-h`/`--help`. Sizes, CPU and io limits use the limit "
        "syntax in the [README](../README.md#limit-syntax-shared-by-every-command-and-policy); "
        "durations are `500ms`, `1s`, `2m`, `1h`.",
        "",
    ]
    lines += [f"- [`{c.command_path}`](#{_anchor(c.command_path)})" for _, c in found]
    lines.append("")
    for command, ctx in found:
        lines += _command_section(command, ctx)
    return "\n".join(lines).rstrip("\n") + "\n"


# The schema's annotated types, known by their validators (pydantic flattens the alias away).
_NAMED: tuple[tuple[Any, str], ...] = (
    (schema.Size, "size"),
    (schema.SizeOrMax, "size or `max`"),
    (schema.Duration, "duration"),
    (schema.Cores, "cores"),
    (schema.CpuLimit, "CPU limit (cores or QUOTA/PERIOD, or `max`)"),
    (schema.PidsLimit, "count or `max`"),
    (schema.IoLimits, 'list of io limits ("DEVICE KEY=VALUE ...")'),
    (schema.Glob, "glob"),
)
_PLAIN = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _validators(metadata: Any) -> set[Any]:
    return {m.func for m in metadata if isinstance(m, BeforeValidator | AfterValidator)}


def _alias(metadata: Any) -> Any:
    found = _validators(metadata)
    return next((a for a, _ in _NAMED if found and _validators(get_args(a)[1:]) == found), None)


def _type(annotation: Any, metadata: Any = ()) -> str:
    """The TOML type a key takes, in words."""
    alias = _alias(metadata)
    for named, text in _NAMED:
        if named is alias:
            return text
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type(args[0], args[1:])
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(f'`"{a}"`' for a in args)
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f'`"{m.value}"`' for m in annotation)
    if origin is tuple:
        item = _type(args[0])
        return f"list of {item}s" if " " not in item else f"list of {item}"
    if origin is dict:
        return "table of strings"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "table"
    if annotation in _PLAIN:
        return _PLAIN[annotation]
    raise TypeError(f"no words for the type {annotation!r}: add it to corral/docs.py")


def _constraints(annotation: Any, metadata: Any) -> list[Any]:
    out = list(metadata)
    for arg in get_args(annotation):
        if get_origin(arg) is Annotated:
            out += _constraints(arg, get_args(arg)[1:])
    return out


def _allowed(field: FieldInfo) -> str:
    """The bounds pydantic enforces on a key, from its Field() constraints."""
    found = {type(c): c for c in _constraints(field.annotation, field.metadata)}
    words = []
    if at.Ge in found and at.Le in found:
        words.append(f"{_num(found.pop(at.Ge).ge)} to {_num(found.pop(at.Le).le)}")
    for kind, op, attr in (
        (at.Gt, ">", "gt"),
        (at.Ge, ">=", "ge"),
        (at.Lt, "<", "lt"),
        (at.Le, "<=", "le"),
    ):
        if kind in found:
            words.append(f"{op} {_num(getattr(found[kind], attr))}")
    if at.MinLen in found:
        words.append(f"at least {found[at.MinLen].min_length}")
    words += [f"`{c.pattern}`" for c in found.values() if getattr(c, "pattern", None)]
    if _alias(field.metadata) is schema.PidsLimit:
        words.append(f"0 to {PIDS_LIMIT}")
    return ", ".join(words)


def _num(value: Any) -> str:
    """A number as written by hand: 1000000 not 1e+06, 0.5, 4 not 4.0."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _value(value: Any, alias: Any) -> str:
    """A default as it would be written in the TOML file."""
    if value is None:
        return "unset"
    if value is MAX:
        return '`"max"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f'`"{value.value}"`'
    if isinstance(value, BaseModel | dict):
        return "`{}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if alias is schema.Size:
        return f'`"{format_size(value)}"`'
    if alias is schema.Duration:
        text = f"{_num(value * 1000)}ms" if value < 1 else f"{_num(value)}s"
        if value >= 60 and value % 60 == 0:
            text = f"{_num(value / 60)}m"
        return f'`"{text}"`'
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{_num(value)}`"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory(), None)  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    return _value(field.default, _alias(field.metadata))


POLICY_INTRO = """\
A policy is a TOML file, or a directory of them merged in name order (rules keep file order,
rule names are unique across files, at most one file has an `[enforcer]` table). It has one
`[enforcer]` table and `[[rule]]` tables; each rule selects cgroups (`select`) and enables
controllers, each in its own table (`[rule.memory_pressure]`, a dotted key or an inline
table). Rules are tried in file order: for each controller, the first rule that enables it
and selects a cgroup governs that cgroup, so a later, broader rule fills in what an earlier,
narrower one left out. Only cgroups at or below `managed_root` are governed, never the root.

Unknown keys are refused everywhere, so a typo never silently disables a safeguard.
`corral policy check FILE` names FILE:LINE, the key, the value and what is allowed.
Values: sizes `"512M"`, `"1.5G"`, `1048576` (binary units: K = 1024); durations `"6s"`,
`"10ms"`, `"2m"`, `"1h"` or a number of seconds; cores `0.5`, `"2"`; fractions are 0 to 1.
The commented default policy is
[enforce/policies/default.toml](../enforce/policies/default.toml); another example is in
[enforce/policies/examples/](../enforce/policies/examples/).

The enforcer runs in the agent (`corral serve --policy`) or alone (`corral enforce`) on the
same polls, each rule in its `mode`. Safeguards refuse any write outside the managed root, to
init.scope, to the agent's own cgroup, or of memory.max below memory.current plus
`memory_max_margin_bytes`; every decision, applied, refused or dry-run, is a line of the
JSON-lines audit log. `corral policy plan` shows what a policy would change now and what a
safeguard would refuse; `corral simulate` replays a synthetic trace (diurnal, step, leak,
spiky_batch, fork_storm) or a recording through the same decision code against a model of the
kernel, beside fixed limits, the VPA recommender and an Autopilot-style moving window (slack,
OOM kills, throttled seconds, limit changes, reaction time)."""


def _sections() -> list[tuple[str, type[BaseModel]]]:
    """(TOML table, model) in the order a policy file has them; the controllers' models are
    read from Rule's fields, so a new controller shows up here by itself."""
    out: list[tuple[str, type[BaseModel]]] = [
        ("[enforcer]", schema.EnforcerSettings),
        ("[[rule]]", schema.Rule),
        ("[rule.select]", schema.Selector),
    ]
    for name in schema.CONTROLLERS:
        annotation = schema.Rule.model_fields[name].annotation
        model = next(a for a in get_args(annotation) if a is not type(None))
        out.append((f"[rule.{name}]", model))
    return out


def _policy_section(table: str, model: type[BaseModel]) -> list[str]:
    intro = " ".join(inspect.cleandoc(model.__doc__ or "").split()).replace("``", "`")
    lines = [f"## `{table}`", "", intro, ""]
    lines += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for key, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{key} has no Field(description=...)")
        cells = [
            f"`{key}`",
            _type(field.annotation, field.metadata),
            _default(field),
            _allowed(field),
            field.description,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*lines, ""]


def policy_markdown() -> str:
    """docs/policy.md: every table and key of a policy file with type, default and bounds."""
    source = "the pydantic models in `enforce/policy/schema.py`"
    lines = ["# corral's policy files", "", HEADER.format(source=source, cmd=REGENERATE), ""]
    lines += [POLICY_INTRO, ""]
    for table, model in _sections():
        lines += _policy_section(table, model)
    return "\n".join(lines).rstrip("\n") + "\n"


CONFIG_INTRO = """\
`corral serve` reads this TOML file (default `/etc/corral/corral.toml`, or `--config FILE`;
a missing default file means every default). A flag given on the command line overrides the
same key. `corral serve --check-config` validates the file and the policy it names and says
what would run; SIGHUP (`systemctl reload corral`) re-reads both: a bad new file or policy is
refused with its FILE:LINE and the running one stays; a key that "needs a restart" keeps its
running value and is logged. [dist/corral.toml](../dist/corral.toml) is an annotated copy of
every default. Durations: "1s", "500ms", "2m" or seconds; sizes: "64M", "1G" or bytes."""


def config_markdown() -> str:
    """docs/config.md: the agent's configuration file, from corral.agent.config's models."""
    from corral.agent.config import AgentConfig

    source = "the pydantic models in `corral/agent/config.py`"
    lines = [
        "# corral serve's configuration file",
        "",
        HEADER.format(source=source, cmd=REGENERATE),
    ]
    lines += ["", CONFIG_INTRO, ""]
    tables = {
        key: field.annotation
        for key, field in AgentConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    top = ["## Top-level keys", *_policy_section("", AgentConfig)[1:]]
    lines += [row for row in top if not any(row.startswith(f"| `{k}`") for k in tables)]
    for key, model in tables.items():
        lines += _policy_section(f"[{key}]", model)
    return "\n".join(lines).rstrip("\n") + "\n"


GENERATED: dict[str, Callable[[], str]] = {
    "cli.md": cli_markdown,
    "config.md": config_markdown,
    "policy.md": policy_markdown,
    "metrics.md": lambda: metrics_markdown(FAMILIES),
}


def write(docs: Path = DOCS) -> list[Path]:
    """Write every generated reference into ``docs``; return the files whose text changed."""
    docs.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, generate in GENERATED.items():
        path = docs / name
        text = generate()
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """python -m corral.docs [DIR]: regenerate the references (default: the checkout's docs/)."""
    args = sys.argv[1:] if argv is None else argv
    docs = Path(args[0]) if args else DOCS
    for path in write(docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The PromQL of corral's dashboard files (grafana/corral.json, prometheus/rules.yml).

The helpers below read every PromQL expression out of the two files and name the metrics
each one selects, so that tests can hold them against what corral exports: Grafana targets
and template-variable queries (with the variables substituted), and rule expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).parent
GRAFANA_DASHBOARD = HERE / "grafana" / "corral.json"
PROMETHEUS_RULES = HERE / "prometheus" / "rules.yml"
PROMETHEUS_RULE_TESTS = HERE / "prometheus" / "tests"

# Words of PromQL that are never metric names: the lexer reserves the aggregation operators
# even where a modifier, not "(", follows them ("sum by (cgroup) (...)").
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count"}
_AGGREGATIONS |= {"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2", *_AGGREGATIONS}
)
# Words followed by "(" that open a list of label names, not an expression.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[A-Za-z0-9_]*")
# Grafana's variable syntaxes: $name, ${name}, ${name:format}, [[name]].
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


class Expression(NamedTuple):
    """One PromQL expression, where it comes from ("panel 3 'CPU' target A", ...) and
    whether Grafana runs it as an instant query (else over the dashboard's time range)."""

    where: str
    promql: str
    instant: bool = True


class Selector(NamedTuple):
    """A vector selector: the metric name and the text of its label matchers ("" if none)."""

    name: str
    matchers: str


def load_dashboard(path: Path = GRAFANA_DASHBOARD) -> dict[str, Any]:
    """The Grafana dashboard as parsed JSON."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def load_rules(path: Path = PROMETHEUS_RULES) -> dict[str, Any]:
    """The Prometheus rule file as parsed YAML."""
    import yaml  # only the tests need it; `corral top` does not

    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and those folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every Grafana variable replaced by its value in ``values``; a variable
    that ``values`` lacks raises KeyError naming it."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g is not None)
        if name not in values:
            raise KeyError(f"variable ${name} in {text!r} is not one of {sorted(values)}")
        return values[name]

    return _VARIABLE.sub(value, text)


def variable_promql(query: str) -> str | None:
    """The PromQL behind a template variable's query: ``label_values(SEL, LABEL)`` asks for
    the LABEL values of SEL, which is ``group by (LABEL) (SEL)``; ``query_result(EXPR)`` is
    EXPR; ``label_values(LABEL)`` selects no metric (None). Other forms raise ValueError."""
    if match := _LABEL_VALUES.match(query):
        selector, label = match.groups()
        return None if selector is None else f"group by ({label}) ({selector})"
    if match := _QUERY_RESULT.match(query):
        return match.group(1)
    raise ValueError(f"variable query {query!r} is not label_values(...) or query_result(...)")


def grafana_expressions(
    dashboard: Mapping[str, Any], values: Mapping[str, str]
) -> list[Expression]:
    """Every target's expr and every query variable's PromQL, variables substituted."""
    out: list[Expression] = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        promql = variable_promql(query)
        if promql is not None:
            out.append(Expression(f"variable ${var['name']}", substitute(promql, values)))
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} target {target['refId']}"
            instant = bool(target.get("instant")) and not target.get("range")
            out.append(Expression(where, substitute(target["expr"], values), instant))
    return out


def rule_expressions(rules: Mapping[str, Any]) -> list[Expression]:
    """Every recording and alerting rule's expr."""
    return [
        Expression(f"rule {rule.get('record') or rule.get('alert')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def record_names(rules: Mapping[str, Any]) -> set[str]:
    """The series names the recording rules create."""
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def metric_names(promql: str) -> set[str]:
    """The metric names ``promql`` selects."""
    return {s.name for s in selectors(promql)}


def selectors(promql: str) -> list[Selector]:
    """The vector selectors of ``promql``, in order: a word that is not a keyword, a
    function's or aggregation's name, a label in by/without/on/ignoring/group_x (...), a
    number or duration, or inside a string, matchers or a range. ``{__name__="x"}`` selects
    x; a selector without a literal name (``{__name__=~"..."}``) raises ValueError, since
    the metrics it selects cannot be named."""
    found: list[Selector] = []
    i, n = 0, len(promql)
    while i < n:
        c = promql[i]
        if c in "\"'`":
            i = _skip_string(promql, i)
        elif c == "#":
            end = promql.find("\n", i)
            i = n if end < 0 else end
        elif c == "{":
            end = _closing(promql, i, "{", "}")
            found.append(_nameless(promql[i + 1 : end], promql))
            i = end + 1
        elif c == "[":
            i = _closing(promql, i, "[", "]") + 1
        elif c.isdigit() or (c == "." and promql[i + 1 : i + 2].isdigit()):
            match = _NUMBER.match(promql, i)
            assert match is not None  # a digit or ".digit" always starts a number
            i = match.end()
        elif match := _IDENT.match(promql, i):
            i = _word(promql, match, found)
        else:
            i += 1
    return found


def _word(promql: str, match: re.Match[str], found: list[Selector]) -> int:
    """Handle one identifier; return where scanning goes on."""
    word, end = match.group(), match.end()
    rest = end
    while rest < len(promql) and promql[rest].isspace():
        rest += 1
    opens = rest < len(promql) and promql[rest] == "("
    if opens and word.lower() in _LABEL_LISTS:
        return _closing(promql, rest, "(", ")") + 1
    if opens or word.lower() in _KEYWORDS:
        return end
    if rest < len(promql) and promql[rest] == "{":
        close = _closing(promql, rest, "{", "}")
        found.append(Selector(word, promql[rest + 1 : close].strip()))
        return close + 1
    found.append(Selector(word, ""))
    return end


def _nameless(matchers: str, promql: str) -> Selector:
    """A selector written as ``{...}``: its name comes from a ``__name__="x"`` matcher."""
    match = re.search(r"__name__\s*(=~|!=|!~|=)\s*(\"[^\"]*\"|'[^']*')", matchers)
    if match is None or match.group(1) != "=":
        raise ValueError(f"a selector without a literal metric name in {promql!r}")
    return Selector(match.group(2)[1:-1], matchers.strip())


def _skip_string(text: str, start: int) -> int:
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise ValueError(f"unterminated string at {start} in {text!r}")


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """The index of the bracket that closes the one at ``start``, strings skipped."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            i = _skip_string(text, i)
            continue
        depth += (c == opening) - (c == closing)
        if depth == 0:
            return i
        i += 1
    raise ValueError(f"unbalanced {opening!r} at {start} in {text!r}")

"""The agent's configuration file (corral.agent.config): defaults, every key, errors that name
FILE:LINE and what is allowed, flags laid over the file, `corral serve --check-config`, the
example config and the systemd unit that ship in dist/, and the leaf-cgroup refusals."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import corral.agent.config as config_module
from corral.agent.config import AgentConfig, ConfigError, load_config
from corral.agent.leaf import enter_leaf
from corral.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dist" / "corral.toml"
UNIT = REPO / "dist" / "systemd" / "corral.service"
CORRAL = REPO / ".venv" / "bin" / "corral"

FULL = """\
listen = "[::1]:9100"
interval = "500ms"
log_level = "debug"
web_config = "/etc/corral/web.yml"
cgroup_leaf = "supervisor"

[collector]
cgroup_root = "/sys/fs/cgroup"
subtree = "corral"
include = ["corral/*"]
exclude = ["corral/skip*"]
max_depth = 2
fd_limit = 0
recheck_every = 1

[enforcer]
enabled = false
policy = "/etc/corral/policy.d"
dry_run = true
audit_log = ""

[record]
path = "/var/lib/corral/agent.rec"
interval = "2s"
max_bytes = "64M"
keep = 0
"""


def write(tmp_path: Path, text: str, name: str = "corral.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_missing_default_file_means_every_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    config, source = load_config(None)
    assert source is None
    assert config == AgentConfig()
    assert (config.listen, config.interval, config.cgroup_leaf) == ("127.0.0.1:9847", 1.0, "agent")
    assert config.collector.include == ("**",) and config.collector.fd_limit == 32768
    assert config.enforcer.enabled and not config.enforcer.active
    assert config.record.path is None and config.record.keep == 3


def test_a_missing_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read the configuration"):
        load_config(str(tmp_path / "absent.toml"))


def test_every_key_is_read_with_its_units(tmp_path: Path) -> None:
    config, source = load_config(str(write(tmp_path, FULL)))
    assert source == str(tmp_path / "corral.toml")
    assert (config.listen, config.interval, config.log_level) == ("[::1]:9100", 0.5, "debug")
    assert (config.web_config, config.cgroup_leaf) == ("/etc/corral/web.yml", "supervisor")
    c = config.collector
    assert (c.cgroup_root, c.subtree, c.include, c.exclude) == (
        "/sys/fs/cgroup",
        "corral",
        ("corral/*",),
        ("corral/skip*",),
    )
    assert (c.max_depth, c.fd_limit, c.recheck_every) == (2, 0, 1)
    e = config.enforcer
    assert (e.enabled, e.policy, e.dry_run, e.audit_log, e.active) == (
        False,
        "/etc/corral/policy.d",
        True,
        "",
        False,
    )
    r = config.record
    assert (r.path, r.interval, r.max_bytes, r.keep) == (
        "/var/lib/corral/agent.rec",
        2.0,
        64 << 20,
        0,
    )


def test_the_config_is_frozen(tmp_path: Path) -> None:
    config, _ = load_config(str(write(tmp_path, FULL)))
    with pytest.raises(ValueError, match="frozen"):
        config.listen = "0.0.0.0:1"


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (
            'log_level = "info"\ninterval = "0s"\n',
            2,
            "interval: bad value '0s': allowed: at least 0.1",
        ),
        ('listen = "localhost"\n', 1, "listen: bad value 'localhost': allowed: HOST:PORT like"),
        ('cgroup_leaf = "a/b"\n', 1, "cgroup_leaf: bad value 'a/b': allowed: one cgroup name"),
        ("lisen = 1\n", 1, "lisen: unknown key: allowed keys listen, interval, log_level,"),
        (
            "[collector]\nsubtree = 'a'\nmax_depth = -1\n",
            3,
            "collector.max_depth: bad value -1: allowed: at least 0",
        ),
        (
            "listen = ':1'\n\n[collector]\nsubtree = '../etc'\n",
            4,
            "collector.subtree: bad value '../etc': allowed: a cgroup path below the root",
        ),
        (
            "[collector]\nfd_limit = 1\n\n[enforcer]\nenabled = true\npolicyy = 'p'\n",
            6,
            "enforcer.policyy: unknown key: allowed keys enabled, policy, dry_run, audit_log",
        ),
        ("collector.recheck_every = 0\n", 1, "collector.recheck_every: bad value 0: allowed"),
        (
            "record = { path = 'r', keep = 101 }\n",
            1,
            "record.keep: bad value 101: allowed: at most",
        ),
        (
            "[record]\npath = 'r'\nmax_bytes = '1K'\n",
            3,
            "record.max_bytes: bad value '1K': allowed",
        ),
        ("[record]\ninterval = 'soon'\n", 2, "record.interval: bad value 'soon': allowed: a dur"),
        ("[enforcer]\n\ndry_run = true\n", 3, "enforcer.dry_run: needs a policy: allowed: set"),
        ("[enforcer\n", 1, "not valid TOML"),
    ],
)
def test_errors_name_file_line_key_value_and_what_is_allowed(
    tmp_path: Path, text: str, where: int, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert f"{path}:{where}: {words}" in str(caught.value)


def test_every_fault_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'interval = "fast"\n[collector]\nfd_limit = -1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert [e.split(": ")[0] for e in caught.value.errors] == [f"{path}:1", f"{path}:3"]


def test_flags_override_the_file_and_are_named_in_their_errors(tmp_path: Path) -> None:
    path = str(write(tmp_path, FULL))
    config, _ = load_config(
        path,
        {("interval",): ("--interval", 2.0), ("collector", "subtree"): ("--subtree", "other")},
    )
    assert (config.interval, config.collector.subtree) == (2.0, "other")
    assert config.collector.include == ("corral/*",)  # the rest of the table stays
    with pytest.raises(ConfigError) as caught:
        load_config(path, {("collector", "max_depth"): ("--max-depth", -3)})
    assert str(caught.value) == "--max-depth: bad value -3: allowed: at least 0"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["serve", *args])
    return result.exit_code, result.output


def test_check_config_says_what_would_run_and_starts_binds_and_writes_nothing(
    tmp_path: Path,
) -> None:
    policy = write(
        tmp_path,
        '[enforcer]\naudit_log = ""\n[[rule]]\nname = "web"\nlimits.pids_max = 9\n',
        "p.toml",
    )
    audit, record = tmp_path / "audit.jsonl", tmp_path / "agent.rec"
    with socket.socket() as taken:  # the port is taken: a bind would fail
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(
            tmp_path,
            f'listen = "127.0.0.1:{port}"\ncgroup_leaf = ""\n[enforcer]\npolicy = "{policy}"\n'
            f'audit_log = "{audit}"\n[record]\npath = "{record}"\n',
        )
        status, output = invoke("--config", str(path), "--check-config", "--dry-run")
    assert status == 0, output
    text = " ".join(output.split())
    assert text.startswith(f"corral serve would: configuration {path}; listen on 127.0.0.1:{port};")
    assert f"enforcing {policy} as a dry run, audit to {audit} (1 rule(s): web)" in text
    assert f"record to {record} every poll" in text
    assert text.endswith("stay in the cgroup it is started in. The configuration is valid.")
    assert not audit.exists() and not record.exists()


@pytest.mark.parametrize(
    ("config", "policy", "words"),
    [
        ("[enforcer]\npolicy = '{policy}'\n", "[[rule]]\nname = 1\n", "{policy}:2: rule[0].name"),
        (
            "listen = 5\n",
            "",
            "{config}:1: listen: bad value 5: allowed: input should be a valid string",
        ),
        ("[enforcer]\npolicy = '{policy}'\nenabled = false\n", "bad", ""),
    ],
)
def test_check_config_exits_2_with_the_error(
    tmp_path: Path, config: str, policy: str, words: str
) -> None:
    policy_path = write(tmp_path, policy, "p.toml")
    path = write(tmp_path, config.format(policy=policy_path))
    status, output = invoke("--config", str(path), "--check-config")
    if not words:  # enforcement off: the policy is neither read nor enforced
        assert status == 0 and "enforcement off (enforcer.enabled = false" in output, output
        return
    assert status == 2, output
    assert words.format(policy=policy_path, config=path) in " ".join(output.split())


def test_check_config_refuses_a_missing_explicit_file_and_a_bad_web_config(tmp_path: Path) -> None:
    status, output = invoke("--config", str(tmp_path / "nope.toml"), "--check-config")
    assert status == 2 and "nope.toml: cannot read the configuration" in output
    web = write(tmp_path, "basic_auth_users: {prom: hunter2}\n", "web.yml")
    path = write(tmp_path, f'web_config = "{web}"\n')
    status, output = invoke("--config", str(path), "--check-config")
    assert status == 2 and "basic_auth_users.prom: not a bcrypt hash" in " ".join(output.split())


def test_a_flag_overrides_the_file_in_check_config(tmp_path: Path) -> None:
    path = write(tmp_path, 'interval = "5s"\ncgroup_leaf = "x"\n')
    status, output = invoke("--config", str(path), "--check-config", "--interval", "250ms")
    assert status == 0 and "every 0.25s" in output and "leaf cgroup 'x'" in output, output
    status, output = invoke("--config", str(path), "--check-config", "--subtree", "../etc")
    assert status == 2 and "--subtree: bad value '../etc'" in output, output


def test_no_enforce_turns_off_a_policy_the_file_names(tmp_path: Path) -> None:
    policy = write(tmp_path, "[[rule]]\nname = 1\n", "p.toml")  # not even read
    path = write(tmp_path, f'[enforcer]\npolicy = "{policy}"\n')
    status, output = invoke("--config", str(path), "--check-config", "--no-enforce")
    assert status == 0, output
    assert f"enforcement off (enforcer.enabled = false; policy {policy})" in output
    status, output = invoke("--config", str(path), "--check-config")
    assert status == 2 and f"{policy}:2: rule[0].name" in output, output


def test_the_example_config_loads_and_holds_every_key_at_its_default() -> None:
    config, _ = load_config(str(EXAMPLE))
    assert config == AgentConfig()  # the values it sets are the defaults
    text = EXAMPLE.read_text()
    sections = {"": AgentConfig, **{n: f.annotation for n, f in AgentConfig.model_fields.items()}}
    for table, model in sections.items():
        for key in getattr(model, "model_fields", {}):
            if table == "" and key in ("collector", "enforcer", "record"):
                assert f"\n[{key}]\n" in text
                continue
            # Every key appears set or commented out, with a comment line above it.
            assert re.search(rf"\n# [^\n]+\n(# )?{key} = ", text), f"{table}.{key}"


def test_the_systemd_unit_verifies_cleanly(tmp_path: Path) -> None:
    """systemd-analyze verify checks every directive and that ExecStart= is executable: the
    unit is verified as shipped but with this checkout's corral in ExecStart."""
    local = tmp_path / "corral.service"
    local.write_text(UNIT.read_text().replace("/usr/local/bin/corral", str(CORRAL)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # The same check on a unit with a typo speaks up (so the empty output above means clean).
    bad = tmp_path / "bad.service"
    bad.write_text(local.read_text().replace("KillMode=mixed", "KillMode=mixd"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert "Failed to parse kill mode" in done.stderr
    unit = UNIT.read_text()
    for line in ("Delegate=yes", "ExecReload=/bin/kill -HUP $MAINPID", "Type=notify"):
        assert f"\n{line}\n" in unit


@pytest.mark.parametrize(
    ("proc", "name", "words"),
    [
        ("0::/\n", "agent", "in the root cgroup, which may hold processes: staying there"),
        ("0::/system.slice/corral.service/agent\n", "agent", "already in its leaf cgroup"),
        ("1:cpu:/\n", "agent", "no cgroup v2 membership in"),
        ("0::/a\n", "", "own leaf cgroup disabled"),
    ],
)
def test_the_leaf_move_is_skipped_where_it_has_nothing_to_do(
    tmp_path: Path, proc: str, name: str, words: str
) -> None:
    moved, what = enter_leaf(name, str(write(tmp_path, proc, "cgroup")))
    assert not moved
    assert words in what


def test_a_leaf_that_cannot_be_made_is_reported_and_the_process_stays(tmp_path: Path) -> None:
    """A cgroup that does not exist (the real cgroup2 mount answers ENOENT to the mkdir)."""
    path = write(tmp_path, "0::/corral-absent-parent-for-test/x\n", "cgroup")
    moved, what = enter_leaf("agent", str(path))
    assert not moved
    assert (
        "cannot move into " in what
        and "/corral-absent-parent-for-test/x/agent (mkdir: ENOENT" in what
    )
    assert what.endswith("running in /corral-absent-parent-for-test/x")

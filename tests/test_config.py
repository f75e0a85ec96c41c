"""Options of a recommendation run: validation, YAML files, and replace()."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from recommender import ConfigError, InputError, RecommendConfig, load_config
from recommender.config import DEFAULT_EXCLUDED_NAMESPACES

INT_OPTIONS = (
    "min_connections",
    "rare_connections",
    "port_range_budget",
    "cidr_budget",
    "internet_ingress_sources",
    "max_ephemeral_ports",
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recommend.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_leave_system_namespaces_out() -> None:
    config = RecommendConfig()
    assert config.namespaces == ()
    assert "kube-system" in config.exclude_namespaces
    assert config.exclude_namespaces == DEFAULT_EXCLUDED_NAMESPACES
    assert config.since is None and config.until is None


@pytest.mark.parametrize("name", INT_OPTIONS)
@pytest.mark.parametrize("value", [-1, True, False, 1.5, "2", None])
def test_whole_number_options_refuse_other_values(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        RecommendConfig(**{name: value})
    assert name in str(info.value)
    assert isinstance(info.value, InputError)  # the CLI's exit 2, not an internal error


@pytest.mark.parametrize("name", INT_OPTIONS)
def test_zero_is_a_valid_whole_number(name: str) -> None:
    assert getattr(RecommendConfig(**{name: 0}), name) == 0


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (datetime(2026, 1, 5, 10, tzinfo=UTC), datetime(2026, 1, 5, 9, tzinfo=UTC)),
        (datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 5, 9, tzinfo=UTC)),
        # the same instant written in two zones
        (datetime(2026, 1, 5, 9, tzinfo=UTC),
         datetime(2026, 1, 5, 10, tzinfo=timezone(timedelta(hours=1)))),
    ],
)
def test_since_must_be_before_until(since: datetime, until: datetime) -> None:
    with pytest.raises(ConfigError, match="since must be before until"):
        RecommendConfig(since=since, until=until)


def test_naive_times_are_taken_as_utc() -> None:
    config = RecommendConfig(since=datetime(2026, 1, 5, 9), until=datetime(2026, 1, 5, 10))
    assert config.since == datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert config.until is not None and config.until.utcoffset() == timedelta(0)


def test_times_given_as_iso_text_are_parsed() -> None:
    config = RecommendConfig(since="2026-01-05T09:00:00Z", until="2026-01-05T11:00:00+01:00")
    assert config.since == datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert config.until == datetime(2026, 1, 5, 10, tzinfo=UTC)
    with pytest.raises(ConfigError, match="ISO 8601"):
        RecommendConfig(since="yesterday")
    with pytest.raises(ConfigError, match="ISO 8601"):
        RecommendConfig(until=1767603600)


def test_one_namespace_given_as_text_is_one_pattern() -> None:
    assert RecommendConfig(namespaces="shop").namespaces == ("shop",)
    assert RecommendConfig(namespaces=["shop", "pay*"]).namespaces == ("shop", "pay*")
    with pytest.raises(ConfigError, match="namespaces"):
        RecommendConfig(exclude_namespaces=[1, 2])


@pytest.mark.parametrize(
    "changes",
    [{"allow_node_probes": "false"}, {"dns_both_protocols": 0}, {"policy_prefix": 5}],
)
def test_flags_and_prefix_are_type_checked(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(changes))):
        RecommendConfig(**changes)


def test_replace_ignores_none_and_validates() -> None:
    base = RecommendConfig(min_connections=3, namespaces=("shop",))
    same = base.replace(min_connections=None, namespaces=None, since=None)
    assert same == base
    changed = base.replace(min_connections=5, cidr_budget=None)
    assert (changed.min_connections, changed.cidr_budget, changed.namespaces) == (5, 0, ("shop",))
    assert base.min_connections == 3  # frozen: the original is untouched
    with pytest.raises(ConfigError, match="min_connections"):
        base.replace(min_connections=-1)
    with pytest.raises(ConfigError, match="min_conections"):
        base.replace(min_conections=2)


# --- load_config --------------------------------------------------------------------------


def test_load_config_reads_lists_times_and_dashed_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
namespaces: [shop, payments]
exclude-namespaces:
  - kube-*
since: 2026-01-05T09:00:00Z
until: "2026-01-05T12:00:00+01:00"
min_connections: 2
port-range-budget: 4
allow_node_probes: false
cli:
  output: policies/
""",
    )
    config = load_config(path)
    assert config.namespaces == ("shop", "payments")
    assert config.exclude_namespaces == ("kube-*",)
    assert config.since == datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert config.until == datetime(2026, 1, 5, 11, tzinfo=UTC)
    assert (config.min_connections, config.port_range_budget) == (2, 4)
    assert config.allow_node_probes is False
    assert config.extra == {"output": "policies/"}


def test_load_config_single_namespace_and_plain_date(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "namespaces: shop\nsince: 2026-01-05\n"))
    assert config.namespaces == ("shop",)
    assert config.since == datetime.combine(date(2026, 1, 5), datetime.min.time(), tzinfo=UTC)


def test_empty_config_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing set yet\n")) == RecommendConfig()


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "min_connections: 2\nmin_conections: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "min_conections" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- shop\n- payments\n", "just text\n", "42\n"])
def test_a_config_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, text))


def test_cli_section_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'cli'"):
        load_config(write(tmp_path, "cli: [output]\n"))


@pytest.mark.parametrize("text", ["namespaces: [shop\n", "a: b: c\n", "since: '2026\n"])
def test_bad_yaml_is_a_one_line_config_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML")
    assert "line" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("min_connections: -1\n", "min_connections"),
        ("cidr_budget: yes\n", "cidr_budget"),  # YAML 1.1: yes is a boolean
        ("since: last tuesday\n", "since"),
        ("namespaces: [1, 2]\n", "namespaces"),
        ("since: 2026-01-05T10:00:00Z\nuntil: 2026-01-05T09:00:00Z\n", "since"),
        ("allow_node_probes: 'no'\n", "allow_node_probes"),
    ],
)
def test_bad_values_name_the_option_and_the_file(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert named in str(info.value)
    assert str(path) in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read") as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)

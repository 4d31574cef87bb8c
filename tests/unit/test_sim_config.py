"""Fleet configuration for ``pcache sim``: flags, YAML, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcache.sim.config import ConfigError, FaultSettings, ReplicaSpec, load_fleet_config

EXAMPLE = Path(__file__).parent.parent.parent / "configs" / "sim-fleet.example.yaml"
BASE = ReplicaSpec(name="r1", model="flag-model", seed=5)


def load(path: Path | None, replicas: int | None = None, base_port: int = 8100) -> list[ReplicaSpec]:
    return list(
        load_fleet_config(path, replicas=replicas, base_port=base_port, host="127.0.0.1", base=BASE).replicas
    )


def test_flags_alone_name_replicas_and_number_ports_consecutively() -> None:
    specs = load(None, replicas=3)
    assert [(spec.name, spec.port, spec.model) for spec in specs] == [
        ("r1", 8100, "flag-model"),
        ("r2", 8101, "flag-model"),
        ("r3", 8102, "flag-model"),
    ]
    assert len({spec.seed for spec in specs}) == 3  # each replica draws its own fault sequence
    assert {spec.port for spec in load(None, replicas=2, base_port=0)} == {0}


def test_example_config_loads() -> None:
    specs = load(EXAMPLE)
    assert [spec.name for spec in specs] == ["r1", "r2", "r3", "r4"]
    assert specs[2].num_gpu_blocks == 1024
    assert specs[3].faults == FaultSettings(slow_factor=2.0, error_rate=0.02)
    assert specs[0].timing.t0 == pytest.approx(0.002)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("replicas: 3\n", "replicas must be a list"),
        ("replicas:\n  - name: a\n    cache: 5\n", "unknown key(s) cache"),
        ("replicas:\n  - name: a\n  - name: a\n", "names must be unique"),
        ("replicas:\n  - port: 9000\n  - port: 9000\n", "ports must be unique"),
        ("replicas:\n  - num_gpu_blocks: 0\n", "num_gpu_blocks must be a positive integer"),
        ("replicas:\n  - speed: -1\n", "speed must be a positive number"),
        ("replicas:\n  - faults: {die_after_chunks: -2}\n", "die_after_chunks"),
        ("defaults: [1]\n", "defaults must be a mapping"),
        ("surprise: 1\n", "unknown key(s) surprise"),
        ("replicas: [\n", "not valid YAML"),
    ],
)
def test_invalid_configs_name_the_problem(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(path)


def test_replica_count_flag_must_match_the_config(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("replicas:\n  - name: a\n  - name: b\n", encoding="utf-8")
    assert len(load(path, replicas=2)) == 2
    with pytest.raises(ConfigError, match="lists 2 replicas"):
        load(path, replicas=3)


def test_runtime_fault_updates_are_validated() -> None:
    faults = FaultSettings()
    assert faults.updated({"stall": True, "restart": True}).stall is True
    with pytest.raises(ConfigError, match="unknown fault"):
        faults.updated({"slowness": 2})
    with pytest.raises(ConfigError, match="error_rate"):
        faults.updated({"error_rate": True})

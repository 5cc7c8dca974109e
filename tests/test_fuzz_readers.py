"""Property-based fuzzing of the config and training-state readers: whatever the bytes or values,
they return a valid object or raise VaelabError — never another exception."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab import rundir
from vaelab.config import RunConfig, read_config
from vaelab.errors import VaelabError

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)
FIELDS = sorted({name for section in RunConfig().to_dict().values() if isinstance(section, dict) for name in section})


@settings(max_examples=200, deadline=None)
@given(section=st.sampled_from(["data", "model", "train"]), field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_value_of_any_setting_is_accepted_or_a_vaelab_error(section, field, value):
    try:
        RunConfig.from_dict({section: {field: value}})
    except VaelabError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_any_config_file_bytes_are_read_or_refused(tmp_path, data):
    path = tmp_path / "config.json"
    path.write_bytes(data)
    try:
        read_config(path)
    except VaelabError:
        pass


@pytest.fixture(scope="module")
def state_file(trained_run, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(trained_run.path, copy)
    return copy


METADATA_KEYS = ["format", "epoch", "param_groups", "best_loss", "best_epoch", "finished", "metrics", "initial_loss"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(METADATA_KEYS), st.text(max_size=20) | JSON_VALUES.map(json.dumps), max_size=3),
       dropped=st.lists(st.sampled_from(["generator", "model.encoder_net.head.0.weight", "optimizer.0.exp_avg"]), max_size=2))
def test_any_damage_to_the_training_state_loads_or_is_a_vaelab_error(state_file, changes, dropped):
    tensors, metadata = rundir.read_safetensors(state_file / rundir.TRAINING_STATE)
    for name in dropped:
        tensors.pop(name, None)
    damaged = state_file.parent / "damaged"
    damaged.mkdir(exist_ok=True)
    rundir.write_safetensors(damaged / rundir.TRAINING_STATE, tensors, {**metadata, **changes})
    try:
        rundir.load_training_state(damaged)
    except VaelabError:
        pass

"""Tests of geojax.xla_flags: which XLA:CPU flags ``import geojax`` adds, and when it does not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from geojax import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SUPPORTED = xla_flags.SUPPORTED_JAXLIB[0]


def test_adds_the_defaults_to_empty_or_unrelated_flags():
    assert xla_flags.flags_to_add("", {}, SUPPORTED) == [f"{FLAG}=individual_dot,reduce"]
    assert xla_flags.flags_to_add("--xla_cpu_enable_fast_math=false", {}, SUPPORTED) == [
        f"{FLAG}=individual_dot,reduce"]


def test_user_flag_wins_and_opt_out_and_version_guard():
    # A value the user set, even the empty one (YNNPACK off), is kept.
    assert xla_flags.flags_to_add(f"{FLAG}=", {}, SUPPORTED) == []
    assert xla_flags.flags_to_add(f"--foo=1 {FLAG}=dot", {}, SUPPORTED) == []
    for off in ("0", "false", "No", "off"):
        assert xla_flags.flags_to_add("", {xla_flags.OPT_OUT: off}, SUPPORTED) == []
    assert xla_flags.flags_to_add("", {xla_flags.OPT_OUT: "1"}, SUPPORTED)
    # XLA aborts on unknown flags: nothing is added for a jaxlib the flags were not measured on.
    assert xla_flags.flags_to_add("", {}, (0, 99)) == []
    assert xla_flags.flags_to_add("", {}, None) == []


def test_apply_appends_once_and_not_after_the_backend_started(monkeypatch):
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: SUPPORTED)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_flags.apply_cpu_defaults(env) == [f"{FLAG}=individual_dot,reduce"]
    assert env["XLA_FLAGS"] == (f"--xla_force_host_platform_device_count=8 "
                                f"{FLAG}=individual_dot,reduce")
    assert xla_flags.apply_cpu_defaults(env) == []  # idempotent
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: True)
    env = {}
    assert xla_flags.apply_cpu_defaults(env) == [] and env == {}


def _flags_seen_by_a_fresh_interpreter(env_updates: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
    env.update(env_updates)
    code = "import os, geojax, jax; jax.devices(); print(os.environ.get('XLA_FLAGS', ''))"
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, text=True,
                          capture_output=True).stdout.strip()


@pytest.mark.skipif(xla_flags._jaxlib_version() not in xla_flags.SUPPORTED_JAXLIB,
                    reason="flags only applied on the jaxlib versions they were measured on")
def test_import_geojax_sets_the_flags_and_xla_accepts_them():
    # jax.devices() starts the CPU backend: XLA parses the flags (and would abort on a bad one).
    assert _flags_seen_by_a_fresh_interpreter({}) == f"{FLAG}=individual_dot,reduce"
    assert _flags_seen_by_a_fresh_interpreter({xla_flags.OPT_OUT: "0"}) == ""
    assert _flags_seen_by_a_fresh_interpreter({"XLA_FLAGS": f"{FLAG}="}) == f"{FLAG}="

"""Tests of geojax.runtime: ``import geojax`` changes nothing; ``configure_cpu`` sets the XLA:CPU
flag and the glibc malloc options, within its guards; ``python -m geojax.main`` applies it.

The checks that matter run in fresh interpreters (this process already ran ``configure_cpu``
from conftest.py). The allocator's state is observed through glibc itself: with its defaults a
64 MiB ``malloc`` is served by its own ``mmap`` (``mallinfo2().hblks`` grows by one); with
``M_MMAP_MAX=0`` it is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from geojax import runtime

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
FLAG_SET = f"{FLAG}=individual_dot,reduce"
MALLOC_SET = ["M_ARENA_MAX=1", "M_MMAP_MAX=0", "M_TRIM_THRESHOLD=-1"]
SUPPORTED = runtime.SUPPORTED_JAXLIB[0]
# pylint: disable=protected-access
GLIBC = runtime._mallopt() is not None
JAXLIB_SUPPORTED = runtime._jaxlib_version() in runtime.SUPPORTED_JAXLIB
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

needs_glibc = pytest.mark.skipif(not GLIBC, reason="the malloc settings are glibc mallopt options")
needs_jaxlib = pytest.mark.skipif(not JAXLIB_SUPPORTED,
                                  reason="the flag is only added on the jaxlib it was measured on")

# Defines report(**extra): prints, as JSON, XLA_FLAGS and whether a 64 MiB malloc was mmapped.
REPORT = textwrap.dedent("""
    import ctypes, json, os

    def _mmapped_64mib():
        libc = ctypes.CDLL(None)
        info = getattr(libc, "mallinfo2", None) or libc.mallinfo
        size = ctypes.c_size_t if hasattr(libc, "mallinfo2") else ctypes.c_int
        class MallInfo(ctypes.Structure):
            _fields_ = [(name, size) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
        info.restype = MallInfo
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = (ctypes.c_void_p,)
        before = info().hblks
        block = libc.malloc(64 << 20)
        mapped = info().hblks - before
        libc.free(block)
        return mapped == 1

    def report(**extra):
        print(json.dumps(dict(XLA_FLAGS=os.environ.get("XLA_FLAGS"), mmapped=_mmapped_64mib(),
                              **extra)))
""")


def _fresh_env(updates: dict[str, str] | None = None) -> dict[str, str]:
    drop = ("XLA_FLAGS", runtime.XLA_OPT_OUT, runtime.MALLOC_OPT_OUT)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(updates or {})
    return env


def _run(args: list[str], env_updates: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, *args], env=_fresh_env(env_updates), cwd=REPO,
                         check=True, text=True, capture_output=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _python(code: str, env_updates: dict[str, str] | None = None) -> dict:
    return _run(["-c", REPORT + textwrap.dedent(code)], env_updates)


# ------------------------------------------------------------------- in process, with fakes
@pytest.fixture
def fresh_state(monkeypatch):
    """A supported jaxlib, no backend yet, nothing applied; a fake mallopt that records calls."""
    calls = []
    monkeypatch.setattr(runtime, "APPLIED", {"xla_flags": [], "malloc": []})
    monkeypatch.setattr(runtime, "_warned_late", False)
    monkeypatch.setattr(runtime, "_backend_started", lambda: False)
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: SUPPORTED)
    monkeypatch.setattr(runtime, "_mallopt", lambda: lambda p, v: calls.append((p, v)) or 1)
    return calls


def test_flags_to_add_user_flag_wins_and_opt_out_and_version_guard():
    assert runtime.flags_to_add("", {}, SUPPORTED) == [FLAG_SET]
    assert runtime.flags_to_add("--xla_cpu_enable_fast_math=false", {}, SUPPORTED) == [FLAG_SET]
    # A value the user set, even the empty one (YNNPACK off), is kept.
    assert runtime.flags_to_add(f"{FLAG}=", {}, SUPPORTED) == []
    assert runtime.flags_to_add(f"--foo=1 {FLAG}=dot", {}, SUPPORTED) == []
    for off in ("0", "false", "No", "off"):
        assert runtime.flags_to_add("", {runtime.XLA_OPT_OUT: off}, SUPPORTED) == []
    assert runtime.flags_to_add("", {runtime.XLA_OPT_OUT: "1"}, SUPPORTED) == [FLAG_SET]
    # XLA aborts on unknown flags: nothing is added for a jaxlib the flag was not measured on.
    assert runtime.flags_to_add("", {}, (0, 99)) == []
    assert runtime.flags_to_add("", {}, None) == []


def test_configure_cpu_applies_once(fresh_state):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert runtime.configure_cpu(env) == {"xla_flags": [FLAG_SET], "malloc": MALLOC_SET,
                                          "skipped": {}}
    assert env == {"XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {FLAG_SET}"}
    assert fresh_state == [(runtime.M_ARENA_MAX, 1), (runtime.M_MMAP_MAX, 0),
                           (runtime.M_TRIM_THRESHOLD, -1)]
    assert runtime.APPLIED == {"xla_flags": [FLAG_SET], "malloc": MALLOC_SET}
    again = runtime.configure_cpu(env)
    assert again["xla_flags"] == [] and again["malloc"] == []
    assert set(again["skipped"]) == {"xla_flags", "malloc"}
    assert env == {"XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {FLAG_SET}"}
    assert len(fresh_state) == 3


def test_opt_outs_and_missing_glibc(fresh_state, monkeypatch):
    for off in ("0", "false", "No", "off"):
        env = {runtime.XLA_OPT_OUT: off, runtime.MALLOC_OPT_OUT: off}
        result = runtime.configure_cpu(env)
        assert result["xla_flags"] == [] and result["malloc"] == []
        assert result["skipped"] == {"xla_flags": f"{runtime.XLA_OPT_OUT}={off}",
                                     "malloc": f"{runtime.MALLOC_OPT_OUT}={off}"}
        assert "XLA_FLAGS" not in env
    assert fresh_state == []
    monkeypatch.setattr(runtime, "_mallopt", lambda: None)  # no glibc (macOS, musl)
    env = {runtime.XLA_OPT_OUT: "0"}
    assert runtime.configure_cpu(env)["skipped"]["malloc"] == "no glibc mallopt in this process"
    monkeypatch.setattr(runtime, "_mallopt", lambda: lambda p, v: int(p != runtime.M_MMAP_MAX))
    result = runtime.configure_cpu(env)
    assert result["malloc"] == ["M_ARENA_MAX=1"]
    assert result["skipped"]["malloc"] == "glibc refused mallopt(M_MMAP_MAX, 0)"


def test_unsupported_jaxlib_and_user_flag(fresh_state, monkeypatch):
    env = {"XLA_FLAGS": f"{FLAG}=", runtime.MALLOC_OPT_OUT: "0"}
    result = runtime.configure_cpu(env)
    assert result["xla_flags"] == [] and "kept" in result["skipped"]["xla_flags"]
    assert env["XLA_FLAGS"] == f"{FLAG}="
    monkeypatch.setattr(runtime, "_jaxlib_version", lambda: (0, 99))
    env = {runtime.MALLOC_OPT_OUT: "0"}
    result = runtime.configure_cpu(env)
    assert "jaxlib (0, 99)" in result["skipped"]["xla_flags"] and "XLA_FLAGS" not in env


def test_too_late_changes_nothing_and_warns_once(fresh_state, monkeypatch):
    monkeypatch.setattr(runtime, "_backend_started", lambda: True)
    env = {}
    with pytest.warns(RuntimeWarning, match="backend is already running"):
        result = runtime.configure_cpu(env)
    assert result["xla_flags"] == [] and result["malloc"] == []
    assert set(result["skipped"]) == {"xla_flags", "malloc"}
    assert env == {} and fresh_state == []
    assert runtime.APPLIED == {"xla_flags": [], "malloc": []}


# ------------------------------------------------------------------------- fresh interpreters
@needs_glibc
def test_import_geojax_and_every_module_changes_nothing():
    seen = _python("""
        import importlib, pkgutil, geojax
        modules = [m.name for m in pkgutil.walk_packages(geojax.__path__, "geojax.")
                   if not m.name.endswith(".__main__")]  # a __main__ runs its program
        for name in modules:
            importlib.import_module(name)
        from geojax import runtime
        report(applied=runtime.APPLIED, modules=modules)
    """)
    assert "geojax.main" in seen["modules"] and "geojax.training.train" in seen["modules"]
    assert seen["XLA_FLAGS"] is None
    assert seen["applied"] == {"xla_flags": [], "malloc": []}
    assert seen["mmapped"] is True  # glibc's own M_MMAP_MAX: nobody called mallopt


@needs_glibc
@needs_jaxlib
def test_configure_cpu_in_a_fresh_interpreter_and_xla_accepts_the_flag():
    code = """
        from geojax import runtime
        result = runtime.configure_cpu()
        import jax
        jax.devices()  # starts the CPU backend: XLA parses the flags (it aborts on a bad one)
        report(result=result)
    """
    seen = _python(code)
    assert seen["XLA_FLAGS"] == FLAG_SET and seen["mmapped"] is False
    assert seen["result"] == {"xla_flags": [FLAG_SET], "malloc": MALLOC_SET, "skipped": {}}
    seen = _python(code, {runtime.XLA_OPT_OUT: "0", runtime.MALLOC_OPT_OUT: "0"})
    assert seen["XLA_FLAGS"] is None and seen["mmapped"] is True
    seen = _python(code, {"XLA_FLAGS": f"{FLAG}="})
    assert seen["XLA_FLAGS"] == f"{FLAG}=" and seen["mmapped"] is False


@needs_glibc
def test_a_call_after_the_backend_started_changes_nothing_and_warns_once():
    seen = _python("""
        import warnings
        import jax
        from geojax import runtime
        jax.devices()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = runtime.configure_cpu()
            runtime.configure_cpu()
        report(result=result, warnings=[str(w.message) for w in caught])
    """)
    assert seen["XLA_FLAGS"] is None and seen["mmapped"] is True
    assert seen["result"]["xla_flags"] == [] and seen["result"]["malloc"] == []
    assert "backend is already running" in seen["result"]["skipped"]["xla_flags"]
    assert len(seen["warnings"]) == 1 and "changed nothing" in seen["warnings"][0]


@needs_glibc
@needs_jaxlib
def test_the_cli_applies_it_before_loading_the_config(tmp_path):
    """``python -m geojax.main`` with a config file that reports the process state when
    ml_collections loads it (during flag parsing), then exits."""
    config = tmp_path / "probe_config.py"
    config.write_text(REPORT + textwrap.dedent("""
        def get_config():
            import sys
            report(jax_imported="jax" in sys.modules)
            raise SystemExit(0)
    """))
    seen = _run(["-m", "geojax.main", f"--config={config}"])
    assert seen == {"XLA_FLAGS": FLAG_SET, "mmapped": False, "jax_imported": False}
    seen = _run(["-m", "geojax.main", f"--config={config}"], {runtime.MALLOC_OPT_OUT: "0"})
    assert seen == {"XLA_FLAGS": FLAG_SET, "mmapped": True, "jax_imported": False}


# Runs a jitted computation with a 98 MiB temporary buffer (which XLA:CPU allocates from a
# worker thread and frees at the end of the execution) REPEAT times and prints the minor page
# faults per repetition after the first.
PAGE_FAULTS = """
import resource
from geojax import runtime
runtime.configure_cpu()
import jax, jax.numpy as jnp
REPEAT = 20
x, k = jnp.ones((100352, 64)), jnp.ones((64, 256))
# x @ k, read by two reductions, is a temporary buffer of the execution.
step = jax.jit(lambda x, k: (lambda y: (y.max(0), y.sum(1)))(x @ k))
def once():
    jax.block_until_ready(step(x, k))
once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(REPEAT):
    once()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // REPEAT)
"""


def _faults_per_step(opt_out: bool) -> int:
    env = _fresh_env({runtime.MALLOC_OPT_OUT: "0"} if opt_out else {})
    out = subprocess.run([sys.executable, "-c", PAGE_FAULTS], env=env, check=True, text=True,
                         capture_output=True).stdout
    return int(out.split()[-1])


@needs_glibc
def test_xla_output_buffers_are_reused_instead_of_mapped_fresh():
    """With glibc's defaults the buffer is a fresh mmap every time: a page fault (and a zeroed
    page) for each of its ~25,000 pages. With geojax's settings the freed heap is reused; some
    executions still get fresh memory when the heap is fragmented (0-25 % of the pages over
    20 executions, measured), never every one."""
    pages = 100352 * 256 * 4 // os.sysconf("SC_PAGE_SIZE")
    fresh = _faults_per_step(opt_out=True)
    reused = _faults_per_step(opt_out=False)
    assert fresh >= 0.9 * pages, (fresh, pages)
    assert reused <= 0.5 * pages, (reused, pages)

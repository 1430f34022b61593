"""The device mesh and the shardings of the train state and the batch.

A config's ``mesh`` section names the mesh axes and their sizes::

    config.mesh = dict(data=-1, fsdp=1)     # default: pure data parallelism

``-1`` takes every device the other axes leave. Two axes, as in maxtext:

* ``data`` — data parallelism: the batch is split over it, parameters are replicated.
* ``fsdp`` — fully-sharded data parallelism: the batch is split over it *too*, and, with
  ``param_sharding="fsdp"``, every parameter (and its optimizer state) is split over it
  along its largest dimension that the axis size divides (parameters smaller than
  ``fsdp_min_size`` elements, or with no divisible dimension, stay replicated). XLA inserts
  the all-gathers and reduce-scatters.

So the global batch is split over ``data × fsdp`` devices and must be a multiple of that
product; :func:`check_batch_size` says so before any compute. The mesh is built with
``jax.make_mesh`` (device order suited to the hardware's interconnect).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
PARAM_SHARDINGS = ("replicate", "fsdp")


class MeshError(ValueError):
    """A mesh shape or batch size that cannot work on the available devices."""


def mesh_shape(mesh_config: Mapping[str, Any] | None, num_devices: int) -> dict[str, int]:
    """``{"data": d, "fsdp": f}`` with ``d * f == num_devices`` (one ``-1`` filled in)."""
    cfg = dict(mesh_config or {})
    unknown = sorted(set(cfg) - set(AXES))
    if unknown:
        raise MeshError(f"config.mesh has unknown axes {unknown}; the axes are {list(AXES)}, "
                        "e.g. config.mesh = dict(data=-1, fsdp=1).")
    sizes = {axis: int(cfg.get(axis, -1 if axis == "data" else 1)) for axis in AXES}
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise MeshError(f"config.mesh {sizes}: at most one axis may be -1.")
    bad = [axis for axis, size in sizes.items() if size == 0 or size < -1]
    if bad:
        raise MeshError(f"config.mesh {sizes}: axis sizes must be positive or -1 ({bad}).")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise MeshError(f"config.mesh {sizes}: {num_devices} devices cannot be split into "
                            f"groups of {fixed}; choose axis sizes whose product divides "
                            f"{num_devices}.")
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise MeshError(f"config.mesh {sizes} needs {fixed} devices but {num_devices} are "
                        "available; make the product of the axis sizes equal the device count "
                        "(or set one axis to -1).")
    return sizes


def make_mesh(mesh_config: Mapping[str, Any] | None = None,
              devices: Any = None) -> Mesh:
    """The ``("data", "fsdp")`` mesh of ``mesh_config`` over ``devices`` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(mesh_config, len(devices))
    shape = tuple(sizes[axis] for axis in AXES)
    # Auto axes: shardings of intermediates are left to XLA's propagation (the explicit-axes
    # default of jax.make_mesh would require an out_sharding on every reshape).
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, AXES, devices=devices, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)


def batch_devices(mesh: Mesh) -> int:
    """How many ways the batch is split (``data × fsdp``)."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def check_batch_size(global_batch_size: int, mesh: Mesh, *, what: str = "batch_size") -> None:
    """Raises :class:`MeshError` unless the batch splits evenly over the mesh and processes."""
    ways = batch_devices(mesh)
    if global_batch_size < 1 or global_batch_size % ways:
        raise MeshError(f"{what}={global_batch_size} cannot be split over the {ways} devices of "
                        f"the mesh {dict(mesh.shape)}; use a multiple of {ways}.")
    if global_batch_size % jax.process_count():
        raise MeshError(f"{what}={global_batch_size} is not a multiple of the "
                        f"{jax.process_count()} processes.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over ``data × fsdp``."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """Shard the largest dimension divisible by ``fsdp`` over ``"fsdp"``; else replicate."""
    if fsdp == 1 or math.prod(shape) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(abstract_state: Any, mesh: Mesh, rule: str = "replicate", *,
                    fsdp_min_size: int = 2 ** 14) -> Any:
    """A ``NamedSharding`` per leaf of ``abstract_state`` (a pytree of shapes).

    Args:
      abstract_state: e.g. ``jax.eval_shape(init_fn, ...)``.
      mesh: from :func:`make_mesh`.
      rule: ``"replicate"`` (data parallel) or ``"fsdp"`` (see the module docstring).
      fsdp_min_size: leaves with fewer elements stay replicated under ``"fsdp"``.
    """
    if rule not in PARAM_SHARDINGS:
        raise MeshError(f"param_sharding={rule!r} is not one of {PARAM_SHARDINGS}.")
    fsdp = mesh.shape["fsdp"]

    def one(leaf: Any) -> NamedSharding:
        shape = tuple(getattr(leaf, "shape", ()))
        if rule == "replicate" or not shape:
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, _fsdp_spec(shape, fsdp, fsdp_min_size))

    return jax.tree.map(one, abstract_state)

"""Per-process numpy batches → global ``jax.Array``s (re-exported by ``pipeline``)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np

from geojax.data.batching import PipelineError


# ---------------------------------------------------------------------------- to the devices
def batch_sharding(mesh_or_sharding: Any, axis: str = "data") -> Any:
    """``NamedSharding(mesh, PartitionSpec(axis))`` for a ``Mesh``; a ``Sharding`` as it is."""
    if isinstance(mesh_or_sharding, jax.sharding.Sharding):
        return mesh_or_sharding
    mesh = mesh_or_sharding
    if axis not in mesh.axis_names:
        raise PipelineError(f"the mesh has axes {mesh.axis_names}, no {axis!r} axis to shard the "
                            "batch over.")
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))


def to_global_arrays(batch: Mapping[str, Any], mesh_or_sharding: Any, *,
                     keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-process numpy batch → global ``jax.Array``s, batch dimension sharded over ``"data"``.

    Uses ``jax.make_array_from_process_local_data``: the global batch is the
    concatenation of every process's rows, in process order.  Converted are the
    per-example numeric / bool fields (leading dimension = the per-process batch
    size) or just ``keys``; strings (``id``) and the per-batch counters stay on
    the host.  64-bit types become jax's canonical 32-bit ones (float64 lat/lng →
    float32, ~1 m) unless ``jax_enable_x64`` is on.
    """
    sharding = batch_sharding(mesh_or_sharding)
    local_batch = int(np.shape(batch["valid"])[0]) if "valid" in batch else None
    if keys is None:
        keys = [k for k, v in batch.items()
                if np.ndim(v) >= 1 and np.asarray(v).dtype.kind in "biuf"
                and (local_batch is None or np.shape(v)[0] == local_batch)]
    data_devices = sharding.mesh.shape.get("data", 1) if hasattr(sharding, "mesh") else None
    out = {}
    for key in keys:
        arr = np.asarray(batch[key])
        arr = arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype), copy=False)
        global_rows = arr.shape[0] * jax.process_count()
        if data_devices and global_rows % data_devices:
            raise PipelineError(f"global batch of {global_rows} rows cannot be split over "
                                f"{data_devices} devices on the 'data' axis.")
        out[key] = jax.make_array_from_process_local_data(sharding, arr)
    return out


def iterate_global(iterator: Iterator[Mapping[str, Any]], mesh_or_sharding: Any
                   ) -> Iterator[tuple[dict[str, Any], Mapping[str, Any]]]:
    """Yields ``(global_arrays, host_batch)`` pairs from a pipeline iterator."""
    for batch in iterator:
        yield to_global_arrays(batch, mesh_or_sharding), batch

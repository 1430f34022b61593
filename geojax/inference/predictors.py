"""Predictors: a model's outputs → a location, one per method; the registry a config names.

**The contract.** A predictor has a ``name`` (its row in the results table) and is called on
the outputs of a model for one batch — ``{"logits": {head: (B, C)}, "features": (B, D)}``,
what :class:`geojax.models.GeoModel` returns — and returns a :class:`Prediction`: ``lat``,
``lng`` of shape ``(B,)`` in degrees, and optionally the ``k`` best candidates
(``topk_lat``, ``topk_lng``, ``topk_score``, ``topk_id``, each ``(B, k)``, best first). Every predictor is
jittable; its constant arrays (centroids, maps, the combinatorial index) are numpy and become
constants of the jitted function.

* :class:`ArgmaxCentroid` — the class of highest probability, predicted at its imagery
  centroid (the mean of its training images, 002 §3.1.2; 003 §3.5 "the mean location of
  the training images in the predicted class") or its cell centroid.
* :class:`HierarchicalProduct` — 003 §3.5: the probability of each class of the finest
  partition times the probabilities of its parents in every coarser partition, arg-max,
  then its centroid (the product is taken in log space, which has the same arg-max).
* :class:`Combinatorial` — 004 Eq. 3 (NormalizedSum, or SimpleSum) over the fine partitions
  formed by several geoclass sets, then Eq. 4 (mean in 3D of the training images of the
  arg-max fine partitions).
* :class:`TenCrop` — wraps any predictor for multi-crop batches (003 §8.4.2's TenCrop,
  or FiveCrop): outputs with a crop axis ``(B, n, ...)`` are averaged (class probabilities,
  features) before the wrapped predictor sees them.

**Retrieval predictors** (001 §3.2) search a database index (``geojax.inference.retrieval``)
with the query's L2-normalised backbone features, so they run on the host after the jitted
part (``on_host = True``; ScaNN is a host library): :class:`NearestNeighbour` (001 "NN"),
:class:`KernelDensity` (001 "kNN", Eq. 1, with the ``vo2017``, ``latlng`` or ``spherical``
mode search of ``geojax.inference.kde``) and :class:`Hybrid` (classify, then the kernel density of the
neighbours inside the top class). Predictors on one index share one search per batch
(:func:`run_host`: the largest ``k`` among them, each takes its first ``k``).

**The registry.** ``config.eval.predictors`` lists predictor kinds by name (:data:`REGISTRY`:
``"argmax"``, ``"hierarchical"``, ``"combinatorial"``, ``"nn"``, ``"knn"``, ``"hybrid"``);
:func:`build` turns them into predictors for a model with given heads. :func:`register` adds
a kind. :func:`make_predict_fn` runs the model and every on-device predictor on an eval batch
(jitted); :func:`run_host` then adds the host predictors' answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from geojax.geo import sphere
from geojax.inference import kde
from geojax.models import heads as heads_lib
from geojax.partitions import base, combinatorial, hierarchy
from geojax.training.steps import normalize_images

Outputs = Mapping[str, Any]  # {"logits": {head: (B, C)}, "features": (B, D)}


class Prediction(NamedTuple):
    """Where a predictor puts each image of a batch (degrees); ``topk_*`` are ``None`` unless
    the predictor was asked for its ``k`` best candidates."""

    lat: jax.Array  # (B,)
    lng: jax.Array  # (B,)
    topk_lat: jax.Array | None = None  # (B, k), best first
    topk_lng: jax.Array | None = None
    topk_score: jax.Array | None = None  # the candidates' probabilities (or Eq. 3 scores)
    # int32: the candidates' class ids (the finest head's classes for the hierarchical product,
    # the fine partitions for the combinatorial one), or database rows for retrieval predictors.
    topk_id: jax.Array | None = None


class Predictor(Protocol):
    """One method's row: ``name`` and ``outputs → Prediction`` (jittable)."""

    name: str

    def __call__(self, outputs: Outputs) -> Prediction: ...


def _centroids_xyz(partition: base.Partition, kind: str) -> np.ndarray:
    latlng = np.asarray(partition.centroids(kind), np.float64)
    return np.asarray(sphere.latlng_to_xyz(latlng[:, 0], latlng[:, 1]), np.float32)


def _at(xyz: jax.Array, best: jax.Array) -> tuple[jax.Array, jax.Array]:
    return sphere.xyz_to_latlng(jnp.take(xyz, best, axis=0), xp=jnp)


def _prediction(scores: jax.Array, xyz: np.ndarray, top_k: int, to_score: Callable[[Any], Any]
                ) -> Prediction:
    """Arg-max of ``scores`` (B, C) at ``xyz`` (C, 3); with ``top_k`` > 0 the k best too."""
    xyz = jnp.asarray(xyz)
    lat, lng = _at(xyz, jnp.argmax(scores, axis=-1))
    if top_k <= 0:
        return Prediction(lat, lng)
    values, classes = jax.lax.top_k(scores, min(top_k, scores.shape[-1]))
    topk_lat, topk_lng = _at(xyz, classes)
    return Prediction(lat, lng, topk_lat, topk_lng, to_score(values), classes.astype(jnp.int32))


def _probs(outputs: Outputs, head: str) -> jax.Array:
    return jax.nn.softmax(outputs["logits"][head].astype(jnp.float32), axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class ArgmaxCentroid:
    """The arg-max class of head ``head``, at its ``kind`` centroid (``"imagery"`` or ``"cell"``)."""

    name: str
    head: str
    centroids_xyz: np.ndarray  # (C, 3) float32 unit vectors
    top_k: int = 0

    @classmethod
    def from_partition(cls, partition: base.Partition, head: str | None = None, *,
                       kind: str = "imagery", name: str | None = None,
                       top_k: int = 0) -> "ArgmaxCentroid":
        head = head or partition.name
        return cls(name or f"{head} ({partition.num_classes} cl.)", head,
                   _centroids_xyz(partition, kind), top_k)

    def __call__(self, outputs: Outputs) -> Prediction:
        logits = outputs["logits"][self.head].astype(jnp.float32)
        return _prediction(logits, self.centroids_xyz, self.top_k,  # scores: probabilities
                           lambda v: jnp.exp(v - jax.nn.logsumexp(logits, -1, keepdims=True)))


@dataclasses.dataclass(frozen=True, eq=False)
class HierarchicalProduct:
    """003 §3.5's product over a hierarchy of heads (``heads`` ordered coarse → fine)."""

    name: str
    heads: tuple[str, ...]
    maps: tuple[np.ndarray, ...]  # per head, (C_finest,) finest class → that head's class
    centroids_xyz: np.ndarray  # (C_finest, 3)
    top_k: int = 0

    @classmethod
    def from_partitions(cls, partitions: Sequence[base.Partition],
                        heads: Sequence[str] | None = None, *, lat: Any = None, lng: Any = None,
                        kind: str = "imagery", name: str = "hierarchical product",
                        top_k: int = 0) -> "HierarchicalProduct":
        """``partitions`` in any order (sorted coarse → fine by class count here); ``lat``,
        ``lng``: training points, needed when the partitions are not nested S2 cells."""
        order = sorted(range(len(partitions)), key=lambda i: partitions[i].num_classes)
        parts = [partitions[i] for i in order]
        heads = [p.name for p in parts] if heads is None else [heads[i] for i in order]
        maps = tuple(np.asarray(m, np.int32) for m in hierarchy.hierarchy_maps(parts, lat, lng))
        return cls(name, tuple(heads), maps, _centroids_xyz(parts[-1], kind), top_k)

    def __call__(self, outputs: Outputs) -> Prediction:
        probs = [_probs(outputs, h) for h in self.heads]
        score = hierarchy.hierarchical_product(probs, [jnp.asarray(m) for m in self.maps], log=True)
        return _prediction(score, self.centroids_xyz, self.top_k, jnp.exp)


@dataclasses.dataclass(frozen=True, eq=False)
class Combinatorial:
    """004's combinatorial partitioning over the heads of several geoclass sets."""

    name: str
    heads: tuple[str, ...]
    arrays: Mapping[str, np.ndarray]  # CombinatorialIndex.arrays()
    normalized: bool = True
    top_k: int = 0

    @classmethod
    def from_index(cls, index: combinatorial.CombinatorialIndex, *, normalized: bool = True,
                   name: str | None = None, top_k: int = 0) -> "Combinatorial":
        method = "NormalizedSum" if normalized else "SimpleSum"
        name = name or f"combinatorial {method} ({index.num_fine_partitions} fine)"
        arrays = {k: np.asarray(v, np.float32 if v.dtype.kind == "f" else np.int32)
                  for k, v in index.arrays().items()}
        return cls(name, tuple(index.partition_names), arrays, normalized, top_k)

    def __call__(self, outputs: Outputs) -> Prediction:
        probs = [_probs(outputs, h) for h in self.heads]
        arrays = {k: jnp.asarray(v) for k, v in self.arrays.items()}
        scores = combinatorial.fine_scores(probs, arrays, normalized=self.normalized)
        lat, lng, _ = combinatorial.predict_from_scores(scores, arrays["fine_xyz_sum"])
        if self.top_k <= 0:
            return Prediction(lat, lng)
        values, fine = jax.lax.top_k(scores, min(self.top_k, scores.shape[-1]))
        topk_lat, topk_lng = _at(arrays["fine_xyz_sum"], fine)  # Eq. 4 for each candidate
        return Prediction(lat, lng, topk_lat, topk_lng, values, fine.astype(jnp.int32))


@dataclasses.dataclass(frozen=True, eq=False)
class TenCrop:
    """``inner`` on multi-crop outputs: logits ``(B, n, C)`` become the log of the crops'
    mean class probabilities (003 §8.4.2), features ``(B, n, D)`` their mean."""

    inner: Predictor

    @property
    def name(self) -> str:
        return self.inner.name

    def __call__(self, outputs: Outputs) -> Prediction:
        return self.inner(average_crops(outputs))


def average_crops(outputs: Outputs) -> dict[str, Any]:
    """Multi-crop outputs (a crop axis after the batch) → single-view outputs."""
    out = dict(outputs)
    out["logits"] = {h: jnp.log(jax.nn.softmax(v.astype(jnp.float32), -1).mean(1) + 1e-30)
                     for h, v in outputs["logits"].items()}
    if "features" in outputs:
        out["features"] = outputs["features"].mean(1)
    return out


# ---------------------------------------------------------------------------- retrieval (001)
HOST_OUTPUTS = "__host_outputs__"  # make_predict_fn's entry for the host predictors' inputs


def is_host(predictor: Any) -> bool:
    """Whether ``predictor`` runs on the host after the jitted part (retrieval)."""
    return bool(getattr(predictor, "on_host", False))


def _neighbour_prediction(lat: np.ndarray, lng: np.ndarray, top_lat: np.ndarray,
                          top_lng: np.ndarray, top_score: np.ndarray, rows: np.ndarray,
                          top_k: int) -> Prediction:
    if top_k <= 0:
        return Prediction(lat, lng)
    return Prediction(lat, lng, top_lat[:, :top_k], top_lng[:, :top_k], top_score[:, :top_k],
                      np.asarray(rows[:, :top_k], np.int32))


@dataclasses.dataclass(frozen=True, eq=False)
class NearestNeighbour:
    """001's "NN": the location of the database image whose features are most similar to the
    query's (inner product of L2-normalised features). Candidates: the ``top_k`` nearest
    neighbours with their similarities."""

    name: str
    index: Any  # geojax.inference.retrieval.Index
    top_k: int = 0
    on_host: ClassVar[bool] = True

    @property
    def k(self) -> int:
        return max(1, self.top_k)

    def from_neighbours(self, outputs: Outputs, scores: np.ndarray, rows: np.ndarray) -> Prediction:
        del outputs
        lat, lng = self.index.lat[rows], self.index.lng[rows]
        return _neighbour_prediction(lat[:, 0], lng[:, 0], lat, lng, scores, rows, self.top_k)


@dataclasses.dataclass(frozen=True, eq=False)
class KernelDensity:
    """001's "kNN" (§3.2, Eq. 1): the mode of ``f(x) = Σ_i w_i K_σ(x, x_i)`` over the ``k``
    nearest neighbours' locations ``x_i``, ``w_i = s_i^m`` (:func:`kde.neighbour_weights`).

    ``mode="vo2017"``: the grid search of 001's released code, σ in degrees
    (:func:`kde.vo2017_mode`); ``mode="latlng"``: the mode of the same lat/lng-plane
    density by mean shift, σ in degrees (:func:`kde.latlng_mode`); ``mode="spherical"``:
    geojax's great-circle kernel, σ in km (:func:`kde.spherical_mode`, ``kernel``
    ``"gaussian"`` or ``"vmf"``). Candidates: the
    ``top_k`` nearest neighbours with their normalised weights."""

    name: str
    index: Any
    sigma: float
    mode: str = "spherical"
    k: int = 100
    m: float = 10.0
    kernel: str = "gaussian"
    top_k: int = 0
    on_host: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.mode not in ("vo2017", "latlng", "spherical"):
            raise ValueError(f"kernel density mode {self.mode!r}; use 'vo2017', 'latlng' or "
                             "'spherical'.")

    def mode_of(self, lat: np.ndarray, lng: np.ndarray, w: np.ndarray) -> tuple[Any, Any]:
        if self.mode == "vo2017":
            return kde.vo2017_mode(lat, lng, w, self.sigma)
        if self.mode == "latlng":
            return kde.latlng_mode(lat, lng, w, self.sigma)
        return kde.spherical_mode(lat, lng, w, self.sigma, kernel=self.kernel)

    def from_neighbours(self, outputs: Outputs, scores: np.ndarray, rows: np.ndarray) -> Prediction:
        del outputs
        lat, lng = self.index.lat[rows], self.index.lng[rows]
        w = np.asarray(kde.neighbour_weights(scores, self.m), np.float64)
        mode = self.mode_of(lat, lng, w)
        plat, plng = np.array(mode.lat, np.float64), np.array(mode.lng, np.float64)
        if self.mode == "vo2017":  # snapped to a neighbour: its exact (float64) location
            snap = np.asarray(mode.neighbour)
            at = np.nonzero(snap >= 0)[0]
            plat[at], plng[at] = lat[at, snap[at]], lng[at, snap[at]]
        share = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
        return _neighbour_prediction(plat, plng, lat, lng, share, rows, self.top_k)


@dataclasses.dataclass(frozen=True, eq=False)
class Hybrid:
    """Classification, then retrieval inside it: the spherical kernel density
    (:class:`KernelDensity`) of those of the ``k`` nearest neighbours whose class (in head
    ``head``'s partition) is among the ``top_classes`` most probable classes of the query.
    A query with no such neighbour is predicted at its arg-max class's imagery centroid.
    (geojax's combination of 001's two approaches; not a row of 001.)"""

    name: str
    index: Any
    head: str
    row_classes: np.ndarray  # (N,) int32: the head's class of every database row
    centroids_xyz: np.ndarray  # (C, 3) imagery centroids of the head's classes
    sigma_km: float
    k: int = 100
    m: float = 10.0
    top_classes: int = 1
    kernel: str = "gaussian"
    top_k: int = 0
    on_host: ClassVar[bool] = True

    def from_neighbours(self, outputs: Outputs, scores: np.ndarray, rows: np.ndarray) -> Prediction:
        logits = np.asarray(outputs["logits"][self.head], np.float32)
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :self.top_classes]
        inside = (self.row_classes[rows][:, :, None] == top[:, None, :]).any(-1)
        lat, lng = self.index.lat[rows], self.index.lng[rows]
        w = np.asarray(kde.neighbour_weights(scores, self.m), np.float64) * inside
        none = ~inside.any(-1)
        w[none] = 1.0  # any finite weights: these rows take the class centroid below
        mode = kde.spherical_mode(lat, lng, w, self.sigma_km, kernel=self.kernel)
        plat, plng = np.array(mode.lat, np.float64), np.array(mode.lng, np.float64)
        if none.any():
            clat, clng = sphere.xyz_to_latlng(self.centroids_xyz[top[none, 0]].astype(np.float64))
            plat[none], plng[none] = clat, clng
        share = w * ~none[:, None] / np.maximum(w.sum(-1, keepdims=True), 1e-300)
        return _neighbour_prediction(plat, plng, lat, lng, share, rows, self.top_k)


def run_host(predictors: Sequence[Any], device_out: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: Prediction}`` of every predictor, in order: the on-device ones from
    ``device_out`` (what :func:`make_predict_fn` returned, fetched to the host), the host
    ones computed here from its :data:`HOST_OUTPUTS` with one index search per index (the
    largest ``k`` of the predictors on it; each takes its first ``k`` neighbours)."""
    host = [p for p in predictors if is_host(p)]
    out = {k: v for k, v in device_out.items() if k != HOST_OUTPUTS}
    if host:
        outputs = device_out[HOST_OUTPUTS]
        queries = np.asarray(outputs["features"], np.float32)
        searched: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for index in {id(p.index): p.index for p in host}.values():
            k = max(p.k for p in host if p.index is index)
            searched[id(index)] = index.search(queries, k)
        for p in host:
            scores, rows = searched[id(p.index)]
            out[p.name] = p.from_neighbours(outputs, scores[:, :p.k], rows[:, :p.k])
    return {p.name: out[p.name] for p in predictors}


# ---------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class BuildInputs:
    """What a registered builder may use to make its predictors for one model.

    ``groups``: partition group → its partitions that are heads of the model (groups without
    any are left out); ``heads``: the model's head names in its order (the order of the
    per-head rows). ``train``: the training ``(lat, lng)``. ``config``: the run's config
    (builders read their own section, e.g. ``config.combinatorial``).
    ``combinatorial_index(group, partitions)``: CPlaNet's offline index, loaded or built.
    ``retrieval_index()``: the database index of the model's features (``config.retrieval``),
    loaded or built; ``None`` where the evaluation has none (retrieval kinds then give no rows,
    e.g. in the periodic evaluations during training).
    """

    groups: Mapping[str, Sequence[base.Partition]]
    heads: Sequence[str]
    train: tuple[np.ndarray, np.ndarray]
    config: Any
    combinatorial_index: Callable[[str, Sequence[base.Partition]],
                                  combinatorial.CombinatorialIndex]
    retrieval_index: Callable[[], Any] | None = None


Builder = Callable[[BuildInputs], list[Predictor]]
REGISTRY: dict[str, Builder] = {}


def register(kind: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("name")`` makes ``name`` usable in ``config.eval.predictors``."""
    def add(builder: Builder) -> Builder:
        REGISTRY[kind] = builder
        return builder
    return add


@register("argmax")
def _argmax(inputs: BuildInputs) -> list[Predictor]:
    """One row per head, in the model's order: its arg-max class at the imagery centroid."""
    by_name = {p.name: p for parts in inputs.groups.values() for p in parts}
    return [ArgmaxCentroid.from_partition(by_name[h]) for h in inputs.heads]


@register("hierarchical")
def _hierarchical(inputs: BuildInputs) -> list[Predictor]:
    """003's product, one row per group of ``config.hierarchical.groups`` with ≥ 2 heads."""
    out: list[Predictor] = []
    for group in inputs.config.get("hierarchical", {}).get("groups", ()):
        parts = inputs.groups.get(group, ())
        if len(parts) > 1:
            out.append(HierarchicalProduct.from_partitions(
                parts, lat=inputs.train[0], lng=inputs.train[1],
                name=f"{group} hierarchical product"))
    return out


@register("combinatorial")
def _combinatorial(inputs: BuildInputs) -> list[Predictor]:
    """004's NormalizedSum and SimpleSum rows per group of ``config.combinatorial.groups``."""
    out: list[Predictor] = []
    for group in inputs.config.get("combinatorial", {}).get("groups", ()):
        parts = inputs.groups.get(group, ())
        if len(parts) < 2:
            continue
        index = inputs.combinatorial_index(group, parts)
        out += [Combinatorial.from_index(index, normalized=n) for n in (True, False)]
    return out


def _retrieval(inputs: BuildInputs) -> tuple[Any, Any] | None:
    """(index, ``config.retrieval``) when the evaluation has a retrieval index, else None."""
    cfg = inputs.config.get("retrieval")
    if cfg is None or inputs.retrieval_index is None:
        return None
    return inputs.retrieval_index(), cfg


@register("nn")
def _nn(inputs: BuildInputs) -> list[Predictor]:
    """001's NN row (``config.retrieval``; none without a retrieval index)."""
    found = _retrieval(inputs)
    if found is None:
        return []
    index, cfg = found
    return [NearestNeighbour(f"{cfg.get('name_prefix', '')}NN", index)]


@register("knn")
def _knn(inputs: BuildInputs) -> list[Predictor]:
    """001's kNN kernel density: one row per σ of ``config.retrieval.vo2017_sigmas``
    (degrees, the authors' grid search), of ``config.retrieval.latlng_sigmas`` (degrees, the
    same density's mode by mean shift) and of ``config.retrieval.sigmas_km`` (spherical)."""
    found = _retrieval(inputs)
    if found is None:
        return []
    index, cfg = found
    k, m, kernel = int(cfg.k), float(cfg.m), cfg.get("kernel", "gaussian")
    return [KernelDensity(name, index, sigma, mode, k, m,
                          kernel if mode == "spherical" else "gaussian")
            for name, sigma, mode in knn_rows(cfg)]


def knn_rows(retrieval_config: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    """``(row name, σ, mode)`` of each kNN row that ``config.retrieval`` gives, in row order:
    ``vo2017_sigmas`` (degrees, mode ``"vo2017"``), ``latlng_sigmas`` (degrees, ``"latlng"``),
    ``sigmas_km`` (km, ``"spherical"``)."""
    cfg = retrieval_config
    prefix, kernel = cfg.get("name_prefix", ""), cfg.get("kernel", "gaussian")
    rows = [(f"{prefix}kNN σ={float(s):g}° (vo2017)", float(s), "vo2017")
            for s in cfg.get("vo2017_sigmas", ())]
    rows += [(f"{prefix}kNN σ={float(s):g}° (lat/lng mean shift)", float(s), "latlng")
             for s in cfg.get("latlng_sigmas", ())]
    rows += [(f"{prefix}kNN σ={float(s):g} km ({'vMF' if kernel == 'vmf' else 'spherical'})",
              float(s), "spherical") for s in cfg.get("sigmas_km", ())]
    return rows


@register("hybrid")
def _hybrid(inputs: BuildInputs) -> list[Predictor]:
    """Classification then kernel density inside the top class(es) of head
    ``config.retrieval.hybrid.head`` (default: the model's coarsest head, whose arg-max is
    the most reliable)."""
    found = _retrieval(inputs)
    if found is None:
        return []
    index, cfg = found
    hcfg = cfg.get("hybrid", {})
    by_name = {p.name: p for parts in inputs.groups.values() for p in parts}
    head = hcfg.get("head") or min((h for h in inputs.heads if h in by_name),
                                   key=lambda h: by_name[h].num_classes)
    if head not in by_name:
        raise ValueError(f"config.retrieval.hybrid.head={head!r} is not a head of the model "
                         f"({list(inputs.heads)}).")
    partition = by_name[head]
    sigma = float(hcfg.get("sigma_km", 25.0))
    top = int(hcfg.get("top_classes", 1))
    return [Hybrid(f"{cfg.get('name_prefix', '')}hybrid: {head} top-{top} → kNN σ={sigma:g} km",
                   index, head, np.asarray(partition.assign(index.lat, index.lng), np.int32),
                   _centroids_xyz(partition, "imagery"), sigma, int(cfg.k), float(cfg.m), top,
                   cfg.get("kernel", "gaussian"))]


def check_kinds(kinds: Sequence[str]) -> None:
    """Raises ``ValueError`` naming the unknown kinds of ``config.eval.predictors``."""
    unknown = [k for k in kinds if k not in REGISTRY]
    if unknown:
        raise ValueError(f"config.eval.predictors names {unknown}; registered predictors: "
                         f"{sorted(REGISTRY)}.")


def build(kinds: Sequence[str], inputs: BuildInputs) -> list[Predictor]:
    """The predictors of ``kinds`` (in that order) for a model; names are unique."""
    check_kinds(kinds)
    out = [p for kind in kinds for p in REGISTRY[kind](inputs)]
    names = [p.name for p in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"predictor names {dupes} occur twice; list each kind once.")
    return out


# ---------------------------------------------------------------------------- model + predictors
def make_predict_fn(model: heads_lib.GeoModel, predictors: Sequence[Predictor]
                    ) -> Callable[[Any, Any, Mapping[str, Any]], dict[str, Any]]:
    """``(params, batch_stats, batch) -> {predictor name: Prediction}`` for eval batches
    (jittable): the on-device predictors' answers; with host predictors among
    ``predictors`` also :data:`HOST_OUTPUTS` → their inputs (``features`` L2-normalised in
    float32, ``logits``), which :func:`run_host` turns into their answers.

    Multi-crop batches (``image`` of shape ``(B, n, S, S, 3)``, FiveCrop / TenCrop) are
    scored per crop and every predictor is wrapped in :class:`TenCrop` (host predictors see
    the crop-averaged outputs).
    """
    device = [p for p in predictors if not is_host(p)]
    host = len(device) < len(predictors)

    def predict(params: Any, batch_stats: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        images = batch["image"]
        crops = images.shape[1] if images.ndim == 5 else 0
        if crops:
            images = images.reshape((-1,) + images.shape[2:])
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        outputs = model.apply(variables, normalize_images(images), train=False)
        if crops:
            outputs = jax.tree.map(lambda v: v.reshape((-1, crops) + v.shape[1:]), outputs)
            out: dict[str, Any] = {p.name: TenCrop(p)(outputs) for p in device}
            outputs = average_crops(outputs)
        else:
            out = {p.name: p(outputs) for p in device}
        if host:
            features = outputs["features"].astype(jnp.float32)
            features = features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True),
                                              1e-12)
            out[HOST_OUTPUTS] = {"features": features, "logits": outputs["logits"]}
        return out

    return predict

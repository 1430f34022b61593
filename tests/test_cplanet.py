"""CPlaNet geoclass-set generation (004 §3.3, Eq. 1–2, Table 1).

Exact answers on graphs small enough to merge by hand, an independent
brute-force greedy on random graphs, and the properties every geoclass set
must have (covers the sphere, disjoint, N classes, contains its training
points, reloads identically).
"""

from __future__ import annotations

import heapq
import math
import struct

import numpy as np
import pytest
from scipy import sparse
from scipy import spatial
from scipy.sparse import csgraph

from geojax.geo import s2, sphere
from geojax.partitions import base, cplanet, cplanet_graph, cplanet_merge


# The six cube faces of S2 and a point at the centre of each: face 0 = +x,
# 1 = +y, 2 = +z, 3 = −x, 4 = −y, 5 = −z.  At base level 0 the faces are the
# nodes; each face borders the four faces other than itself and its opposite
# (0–3, 1–4 and 2–5 are not adjacent).
FACE_CENTRES = np.array([[0.0, 0.0], [0.0, 90.0], [90.0, 0.0], [0.0, -180.0], [0.0, -90.0],
                         [-90.0, 0.0]])


def _repeat_points(latlng: np.ndarray, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    pts = np.repeat(latlng, counts, axis=0)
    return pts[:, 0], pts[:, 1]


def _clustered(rng: np.random.Generator, n: int, centres: int = 40,
               spread_deg: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    c_lat, c_lng = sphere.sample_uniform(rng, centres)
    k = rng.integers(0, centres, n)
    lat = np.clip(c_lat[k] + rng.normal(0.0, spread_deg, n), -90.0, 90.0)
    lng = np.mod(c_lng[k] + rng.normal(0.0, spread_deg, n) + 180.0, 360.0) - 180.0
    return lat, lng


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(7)
    lat, lng = _clustered(rng, 6000)
    return lat, lng


# ------------------------------------------------------------------ Table 1
def test_table1_presets_are_the_papers():
    got = [(p.num_classes, p.feature_dims, p.alpha, p.beta) for p in cplanet.TABLE1_PRESETS]
    assert got == [
        (9969, 2048, (1.0, 0.0, 0.0), (1.0, 0.0)),
        (9969, 0, (1.0, 0.0, 0.0), (0.0, 1.0)),
        (12977, 1187, (0.501, 0.490, 0.009), (0.421, 0.579)),
        (12333, 1113, (0.953, 0.044, 0.003), (0.628, 0.372)),
        (11262, 1498, (0.713, 0.287, 0.000), (0.057, 0.943)),
    ]


def test_scaled_presets():
    # MP-16: 4.72M of the paper's 30.3M images.
    assert [p.num_classes for p in cplanet.scaled_presets(4_720_000)] == [1553, 1553, 2021, 1921, 1754]
    assert [p.num_classes for p in cplanet.scaled_presets(30_300_000)] == [9969, 9969, 12977, 12333,
                                                                          11262]
    # Tiny datasets: the smallest set gets min_classes, the ratios are kept.
    assert [p.num_classes for p in cplanet.scaled_presets(1000)] == [10, 10, 13, 12, 11]
    assert [p.num_classes for p in cplanet.scaled_presets(1000, min_classes=100)] == [100, 100, 130,
                                                                                      124, 113]
    assert [p.alpha for p in cplanet.scaled_presets(1000)] == [p.alpha for p in cplanet.TABLE1_PRESETS]
    with pytest.raises(base.PartitionError, match="num_points"):
        cplanet.scaled_presets(0)


# ------------------------------------------------------------------ hand-computed merges
def _face_classes(part) -> list[int]:
    return part.assign(FACE_CENTRES[:, 0], FACE_CENTRES[:, 1]).tolist()


def test_merge_order_by_hand_visual_distance():
    """β = (1, 0): merges follow the cosine distance of 2-D features.

    Face k has n_k images (the scores, α = (1, 0, 0)) whose feature is the unit
    vector at angle θ_k; the cosine distance 1 − cos Δθ grows with Δθ:

        face   0    1    2    3    4    5
        n      1   10   20    2   30   40
        θ      0   10   50  100  170  120   (degrees)

    1. Lowest score: face 0 (1).  Neighbours 1, 2, 4, 5 at Δθ = 10, 50, 170,
       120 → merges into 1.  A = {0, 1}: score 11, mean feature at
       atan2(10 sin 10°, 1 + 10 cos 10°) = 9.09°, neighbours 2, 3, 4, 5.
    2. Lowest: face 3 (2).  Neighbours A, 2, 4, 5 at Δθ = 90.9, 50, 70, 20
       → merges into 5.  B = {3, 5}: score 42, feature ≈ 119°.
    3. Lowest: A (11).  Neighbours 2, 4, B at Δθ = 40.9, 160.9, ≈110 → into 2.
    With N = 3 the classes are {0, 1, 2}, {3, 5}, {4}, numbered by their
    first face: face → class 0, 0, 0, 1, 2, 1.
    """
    counts = [1, 10, 20, 2, 30, 40]
    theta = np.radians(np.repeat([0.0, 10.0, 50.0, 100.0, 170.0, 120.0], counts))
    lat, lng = _repeat_points(FACE_CENTRES, counts)
    feats = np.stack([np.cos(theta), np.sin(theta)], -1)
    expect = {5: [0, 0, 1, 2, 3, 4], 4: [0, 0, 1, 2, 3, 2], 3: [0, 0, 0, 1, 2, 1],
              1: [0, 0, 0, 0, 0, 0]}
    for n, classes in expect.items():
        part = cplanet.build_geoclass_set(lat, lng, num_classes=n, alpha=(1, 0, 0), beta=(1, 0),
                                          base_level=0, features=feats)
        assert _face_classes(part) == classes, n
        assert part.num_classes == n
    assert part.params["visual_distance_used"]


def test_merge_order_by_hand_geographic_distance():
    """β = (0, 1): merges follow great-circle distances between imagery centroids.

        face   0         1         2          3           4          5
        n      1         5         10         4           3          20
        point  (0, 40)   (0, 50)   (50, 40)   (0, −140)   (0, −60)   (−70, 40)

    1. Lowest: face 0.  To 1, 2, 4, 5: 10°, 50°, 100°, 70° → into 1.
       A = {0, 1}: score 6, centroid on the equator at
       atan2(sin 40° + 5 sin 50°, cos 40° + 5 cos 50°) = 48.34° E.
    2. Lowest: face 4 (3).  To A: 108.3°; to 2: acos(cos 50° cos 100°) = 96.4°;
       to 3: 80°; to 5: acos(cos 70° cos 100°) = 93.4° → into 3.
       B = {3, 4}: score 7, centroid at 106.8° W; neighbours A, 2, 5.
    3. Lowest: A (6).  To 2: acos(cos 50° cos 8.34°) = 50.5°; to 5: 70.2°;
       to B: 155.1° → into 2.
    With N = 3: {0, 1, 2}, {3, 4}, {5} → face classes 0, 0, 0, 1, 1, 2.
    """
    counts = [1, 5, 10, 4, 3, 20]
    points = np.array([[0.0, 40.0], [0.0, 50.0], [50.0, 40.0], [0.0, -140.0], [0.0, -60.0],
                       [-70.0, 40.0]])
    assert s2.face(s2.cell_id_from_latlng(points[:, 0], points[:, 1])).tolist() == list(range(6))
    lat, lng = _repeat_points(points, counts)
    expect = {5: [0, 0, 1, 2, 3, 4], 4: [0, 0, 1, 2, 2, 3], 3: [0, 0, 0, 1, 1, 2]}
    for n, classes in expect.items():
        part = cplanet.build_geoclass_set(lat, lng, num_classes=n, base_level=0)
        assert _face_classes(part) == classes, n
        assert part.counts.sum() == sum(counts)
    # Class 1 = {3, 4}: its imagery centroid is the mean of its 7 images.
    c_lat, c_lng = sphere.spherical_mean(np.repeat(points[3:5, 0], counts[3:5]),
                                         np.repeat(points[3:5, 1], counts[3:5]))
    np.testing.assert_allclose(part.imagery_latlng[1], [c_lat, c_lng], atol=1e-9)
    np.testing.assert_allclose(part.imagery_latlng[1, 1], -106.83, atol=0.01)


def test_node_scores_count_folded_empty_cells(clustered):
    """Eq. 1's n_S2 counts every base cell of a node's region, folded empty ones included."""
    lat, lng = clustered
    graph = cplanet._base_graph(lat, lng, 3)
    # Enumerate all 6·4³ level-3 cells and look each one up in the folded tiling.
    cells = s2.children(s2.children(s2.children(cplanet_graph._FACE_IDS).ravel()).ravel()).ravel()
    k = np.searchsorted(s2.range_min(graph.cover_ids), cells, side="right") - 1
    assert s2.contains(graph.cover_ids[k], cells).all()
    node = graph.cover_node[k]
    np.testing.assert_array_equal(np.bincount(node, minlength=graph.num_nodes), graph.n_s2)
    occupied = np.isin(cells, graph.node_ids)
    np.testing.assert_array_equal(node[occupied], np.searchsorted(graph.node_ids, cells[occupied]))
    task, _ = cplanet._plan_set(graph, num_classes=5, alpha=(0.2, 0.3, 0.5), beta=(0, 1),
                                features=None, feature_subspace_dim=None, seed=0)
    np.testing.assert_allclose(task.score, 0.2 * graph.n_img + 0.3 + 0.5 * graph.n_s2)


# ------------------------------------------------------------------ independent reference
def _reference_greedy(graph, score, num_classes, prio, vis_weight, geo_weight, feats):
    """Brute-force greedy of 004 §3.3: rescans every live node and recomputes adjacency."""
    n = graph.num_nodes
    root = np.arange(n)
    alive = np.ones(n, bool)
    score = score.astype(np.float64).copy()
    sums = graph.xyz_sum.copy()
    feats = None if feats is None else feats.astype(np.float64).copy()
    for _ in range(n - num_classes):
        live = np.flatnonzero(alive)
        u = live[np.lexsort((prio[live], score[live]))[0]]
        ends = root[graph.edges]
        nbrs = np.unique(np.concatenate([ends[ends[:, 0] == u, 1], ends[ends[:, 1] == u, 0]]))
        nbrs = nbrs[nbrs != u]
        cu = sums[u] / np.linalg.norm(sums[u])
        cn = sums[nbrs] / np.linalg.norm(sums[nbrs], axis=1, keepdims=True)
        geo = 2.0 * np.arcsin(np.minimum(np.linalg.norm(cn - cu, axis=1) / 2.0, 1.0))
        w = geo_weight * geo
        if feats is not None and vis_weight > 0:
            cos = feats[nbrs] @ feats[u] / (np.linalg.norm(feats[nbrs], axis=1)
                                             * np.linalg.norm(feats[u]))
            w = w + vis_weight * (1.0 - cos)
        # Ties in Eq. 2 go to the nearer centre, then to the lower priority.
        v = nbrs[np.lexsort((prio[nbrs], geo, w))[0]]
        alive[u] = False
        root[root == u] = v
        score[v] += score[u]
        sums[v] = sums[v] + sums[u]
        if feats is not None:
            feats[v] += feats[u]
    return root


@pytest.mark.parametrize("alpha,beta,with_features", [
    ((1.0, 0.0, 0.0), (0.0, 1.0), False),
    ((0.501, 0.490, 0.009), (0.421, 0.579), True),
    ((0.953, 0.044, 0.003), (0.628, 0.372), True),
    ((1.0, 0.0, 0.0), (1.0, 0.0), True),
    ((0.3, 0.7, 0.0), (0.0, 1.0), False),
])
def test_greedy_matches_brute_force_reference(alpha, beta, with_features):
    rng = np.random.default_rng(11)
    lat, lng = _clustered(rng, 1500, centres=12, spread_deg=2.0)
    lat, lng, level, _ = cplanet._prepare(lat, lng, 6, None)
    graph = cplanet._base_graph(lat, lng, level)
    # Small integer features: node sums are exact in float32 and float64 alike.
    features = rng.integers(-3, 4, size=(lat.size, 5)).astype(np.float32) if with_features else None
    num_classes = graph.num_nodes // 4
    task, params = cplanet._plan_set(graph, num_classes=num_classes, alpha=alpha, beta=beta,
                                     features=features, feature_subspace_dim=None, seed=3)
    got = cplanet._run_merge(task)
    want = _reference_greedy(graph, task.score, num_classes, task.prio, task.vis_weight,
                             task.geo_weight, task.feats)
    np.testing.assert_array_equal(got, want)
    assert np.unique(got).size == num_classes
    assert params["visual_distance_used"] == (with_features and beta[0] > 0)


def _sequential_greedy(task):
    """The sequential greedy merge that ``cplanet_merge._batched_merge`` replaced, verbatim.

    It is the reference the batched rounds must reproduce exactly (ties
    included).  It returns the surviving node of every node.

    The hot loop runs once per merge (≈ n times).  A node's queue key is one
    Python int, ``bits(score) << shift | prio``, where ``bits`` is the
    IEEE-754 bit pattern of the score (monotone for non-negative floats), so
    comparisons are int comparisons and the key order is exactly
    (score, priority).  The queue holds one entry per live node whose key is
    at most that node's current key: the initial keys, sorted once with numpy
    and read in order, plus a small heap of re-queued keys.  An entry popped
    with an outdated key is queued again with the current key (so a node
    that absorbs many others is re-queued once, not once per merge); the
    first entry popped with an up-to-date key is the live node of lowest key.
    """
    n = task.score.size
    if n <= task.num_classes:
        return np.arange(n, dtype=np.int64)
    prio = np.asarray(task.prio, np.int64)
    pr = prio.tolist()
    sc = task.score.astype(np.float64).tolist()
    shift = max(1, int(n - 1).bit_length())
    mask = (1 << shift) - 1
    node_of_prio = np.empty(n, np.int64)
    node_of_prio[prio] = np.arange(n)
    node_of_prio = node_of_prio.tolist()
    bits = np.ascontiguousarray(task.score, np.float64).view(np.int64)
    cur = [(b << shift) | p for b, p in zip(bits.tolist(), pr)]  # current key; −1: merged
    order = np.lexsort((prio, bits)).tolist()
    initial = [cur[i] for i in order] + [1 << (64 + shift)]  # sentinel above every key
    next_initial = 0
    heap: list[int] = []
    adj = [set() for _ in range(n)]
    for a, b in task.edges.tolist():
        adj[a].add(b)
        adj[b].add(a)
    centres = cplanet._unit_rows(task.xyz_sum)
    xyz_sum = list(map(tuple, task.xyz_sum.tolist()))
    cen = list(map(tuple, centres.tolist()))
    root = list(range(n))
    feats = task.feats
    use_feats = feats is not None and task.vis_weight > 0
    if use_feats:
        feats = feats.copy()
        fnorm = np.linalg.norm(feats.astype(np.float64), axis=-1)
    vis_weight, geo_weight = task.vis_weight, task.geo_weight
    pop, push, sqrt = heapq.heappop, heapq.heappush, math.sqrt
    pack = struct.Struct("<d").pack
    alive = n
    while alive > task.num_classes:
        k = initial[next_initial]
        if heap and heap[0] < k:
            k = pop(heap)
        else:
            next_initial += 1
        u = node_of_prio[k & mask]
        ku = cur[u]
        if ku != k:
            if ku >= 0:  # u grew since this entry was queued: queue its current key
                push(heap, ku)
            continue
        nb = adj[u]
        # --- u's nearest neighbour by Eq. 2; ties to the nearer centre, then lower priority.
        if use_feats:
            idx = np.fromiter(nb, np.int64, len(nb))
            d = centres[idx] - centres[u]
            geo = 2.0 * np.arcsin(np.minimum(np.sqrt(np.einsum("ij,ij->i", d, d)) * 0.5, 1.0))
            den = fnorm[idx] * fnorm[u]
            dots = feats[idx].astype(np.float64) @ feats[u].astype(np.float64)
            vis = np.where(den > 0, 1.0 - dots / np.where(den > 0, den, 1.0), 1.0)
            w = vis_weight * vis + geo_weight * geo
            tied = w == w.min()
            best, geo = idx[tied], geo[tied]
            best = best[geo == geo.min()]
            v = int(best[np.argmin(prio[best])])
        else:  # Eq. 2 is β2·dist_geo (or 0): the nearest centre wins
            ux, uy, uz = cen[u]
            v, bd, bp = -1, math.inf, 0
            for x in nb:  # the chord is monotone in the great-circle distance
                px, py, pz = cen[x]
                dx, dy, dz = px - ux, py - uy, pz - uz
                dd = dx * dx + dy * dy + dz * dz
                if dd < bd or (dd == bd and pr[x] < bp):
                    v, bd, bp = x, dd, pr[x]
        if v < 0:
            raise AssertionError("internal error: a node has no neighbour in a connected graph.")
        # --- merge u into v; the new node lives in v's slot and keeps v's priority.
        cur[u] = -1
        root[u] = v
        for x in nb:  # v is among them; its self-loop is dropped below
            adj_x = adj[x]
            adj_x.discard(u)
            adj_x.add(v)
        adj_v = adj[v]
        adj_v |= nb
        adj_v.discard(v)
        adj[u] = None
        alive -= 1
        s = sc[u]
        if s != 0.0:
            s += sc[v]
            sc[v] = s
            cur[v] = (int.from_bytes(pack(s), "little") << shift) | pr[v]
        ux, uy, uz = xyz_sum[u]
        vx, vy, vz = xyz_sum[v]
        vx, vy, vz = vx + ux, vy + uy, vz + uz
        xyz_sum[v] = (vx, vy, vz)
        norm = sqrt(vx * vx + vy * vy + vz * vz)
        if norm > 0:
            cen[v] = (vx / norm, vy / norm, vz / norm)
        if use_feats:
            centres[v] = cen[v]
            feats[v] += feats[u]
            fv = feats[v].astype(np.float64)
            fnorm[v] = math.sqrt(float(fv @ fv))
    out = np.asarray(root, np.int64)
    while True:  # pointer jumping: every node to its surviving node
        nxt = out[out]
        if np.array_equal(nxt, out):
            return out
        out = nxt


# ------------------------------------------------------------------ batched rounds = sequential loop
def _random_task(rng, n, *, integer_scores, lattice, feature_dim, vis_weight, num_classes):
    """A merge task on a random connected planar graph: the spherical Delaunay graph of n points.

    With ``lattice`` the node centres are a few cube-grid directions (many
    equal distances, so ties in Eq. 2 are common); with ``integer_scores``
    the scores are small integers (ties in Eq. 1 are common).
    """
    xyz = rng.normal(size=(n, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    if lattice:  # centres on a few cube-grid directions, whatever the graph
        g = rng.integers(-2, 3, size=(n, 3)).astype(np.float64)
        g[np.all(g == 0, axis=1)] = (1.0, 0.0, 0.0)
        xyz_sum = g / np.linalg.norm(g, axis=1, keepdims=True) * rng.integers(1, 4, (n, 1))
    else:
        xyz_sum = xyz * rng.integers(1, 5, (n, 1)) + rng.normal(0.0, 0.05, (n, 3))
    tri = spatial.ConvexHull(xyz).simplices
    e = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [0, 2]]]), axis=1)
    edges = np.unique(e, axis=0).astype(np.int64)
    score = (rng.integers(1, 4, n).astype(np.float64) if integer_scores
             else rng.choice([0.5, 0.75, 1.25], n) + rng.integers(0, 3, n) * 0.009)
    feats = (rng.integers(-2, 3, size=(n, feature_dim)).astype(np.float32) if feature_dim else None)
    return cplanet._MergeTask(edges=edges, score=score, prio=rng.permutation(n).astype(np.int64),
                              xyz_sum=xyz_sum, num_classes=num_classes,
                              vis_weight=vis_weight if feature_dim else 0.0, geo_weight=1.3,
                              feats=feats)


@pytest.mark.parametrize("seed", range(12))
def test_batched_merge_matches_the_sequential_loop(seed):
    """Rounds of 2-hop minima reproduce the sequential heap loop exactly, ties and stop included."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(30, 400))
    for num_classes in (1, 2, n // 7, n // 2, n - 3, n - 1, n):
        task = _random_task(rng, n, integer_scores=seed % 2 == 0, lattice=seed % 3 == 0,
                            feature_dim=(0, 0, 3)[seed % 3], vis_weight=(0.0, 0.7)[seed % 2],
                            num_classes=max(num_classes, 1))
        want = _sequential_greedy(task)
        got = cplanet_merge._batched_merge(task)
        np.testing.assert_array_equal(got, want, err_msg=f"n={n} num_classes={num_classes}")
        assert np.unique(got).size == max(num_classes, 1)


def test_batched_merge_matches_the_sequential_loop_on_s2_graphs(clustered):
    """The same on real initial graphs (folded empty cells, mixed degrees), all five Table 1 sets."""
    lat, lng = clustered
    feats = np.random.default_rng(4).integers(-3, 4, size=(lat.size, 6)).astype(np.float32)
    for level in (6, 9):
        graph = cplanet._base_graph(lat, lng, level)
        for i, preset in enumerate(cplanet.TABLE1_PRESETS):
            task, _ = cplanet._plan_set(graph, num_classes=max(1, graph.num_nodes // (3 + i)),
                                        alpha=preset.alpha, beta=preset.beta,
                                        features=feats if i % 2 == 0 else None,
                                        feature_subspace_dim=None, seed=i)
            np.testing.assert_array_equal(cplanet_merge._batched_merge(task), _sequential_greedy(task))


# ------------------------------------------------------------------ properties
@pytest.fixture(scope="module")
def geoclass_set(clustered):
    lat, lng = clustered
    return cplanet.build_geoclass_set(lat, lng, num_classes=40, alpha=(0.501, 0.490, 0.009),
                                      beta=(0.0, 1.0), base_level=9, seed=1)


def test_covers_the_sphere_with_disjoint_cells(geoclass_set):
    part = geoclass_set
    assert part.num_classes == 40
    assert np.unique(part.cell_class).size == 40
    # Disjoint (checked by S2CellPartition) and of total area 6 face areas: a tiling.
    assert (4.0 ** -s2.level(part.cell_ids).astype(np.float64)).sum() == pytest.approx(6.0, abs=1e-12)
    rng = np.random.default_rng(0)
    lat, lng = sphere.sample_uniform(rng, 200_000)
    assert (part.assign(lat, lng) >= 0).all()
    corners = np.array([[90.0, 0.0], [-90.0, 0.0], [0.0, 180.0], [0.0, -180.0], [45.0, 45.0],
                        [35.26438968275466, 45.0]])
    assert (part.assign(corners[:, 0], corners[:, 1]) >= 0).all()


def test_training_points_lie_in_their_class(clustered, geoclass_set):
    lat, lng = clustered
    part = geoclass_set
    leaves = s2.cell_id_from_latlng(lat, lng)
    k = np.searchsorted(s2.range_min(part.cell_ids), leaves, side="right") - 1
    assert s2.contains(part.cell_ids[k], leaves).all()
    assert (part.cell_class[k] == part.assign(lat, lng)).all()
    assert part.counts.sum() == lat.size and part.num_dropped_points == 0
    # A base cell is never split between classes.
    base_cell = s2.parent(leaves, 9)
    cls = part.assign(lat, lng)
    for cell in np.unique(base_cell)[:200]:
        assert np.unique(cls[base_cell == cell]).size == 1
    # Imagery centroids are the spherical means of the class's points.
    c = 3
    np.testing.assert_allclose(part.imagery_latlng[c],
                               sphere.spherical_mean(lat[cls == c], lng[cls == c]), atol=1e-9)


def test_save_load_round_trip(tmp_path, geoclass_set):
    part = geoclass_set
    part.save(tmp_path / "set")
    back = base.Partition.load(tmp_path / "set")
    assert type(back) is type(part)
    np.testing.assert_array_equal(back.cell_ids, part.cell_ids)
    np.testing.assert_array_equal(back.cell_class, part.cell_class)
    np.testing.assert_array_equal(back.counts, part.counts)
    np.testing.assert_array_equal(back.imagery_latlng, part.imagery_latlng)
    assert back.params == part.params and back.name == part.name


def test_seeds_and_feature_subspaces_diversify(clustered):
    lat, lng = clustered
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(lat.size, 32))
    kw = dict(num_classes=200, alpha=(1, 0, 0), beta=(0.7, 0.3), base_level=8, features=feats)
    a = cplanet.build_geoclass_set(lat, lng, feature_subspace_dim=8, seed=0, **kw)
    a2 = cplanet.build_geoclass_set(lat, lng, feature_subspace_dim=8, seed=0, **kw)
    b = cplanet.build_geoclass_set(lat, lng, feature_subspace_dim=8, seed=1, **kw)
    c = cplanet.build_geoclass_set(lat, lng, feature_subspace_dim=None, seed=0, **kw)
    assert a.params["feature_subspace"] != b.params["feature_subspace"]
    assert len(a.params["feature_subspace"]) == 8 and len(c.params["feature_subspace"]) == 32
    np.testing.assert_array_equal(a.cell_ids, a2.cell_ids)  # deterministic for a seed
    np.testing.assert_array_equal(a.cell_class, a2.cell_class)
    labels = [p.assign(lat, lng) for p in (a, b, c)]
    assert not np.array_equal(labels[0], labels[1])
    assert not np.array_equal(labels[0], labels[2])


def test_build_table1_sets(clustered):
    lat, lng = clustered
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(lat.size, 64)).astype(np.float32)
    sets = cplanet.build_table1_sets(lat, lng, base_level=8, features=feats, seed=4)
    assert [p.name for p in sets] == [f"cplanet_set{i}" for i in range(1, 6)]
    assert [p.num_classes for p in sets] == [10, 10, 13, 12, 11]
    assert [p.params["table1_set"] for p in sets] == [1, 2, 3, 4, 5]
    assert [len(p.params["feature_subspace"]) for p in sets] == [64, 0, 37, 35, 47]
    assert [p.params["visual_distance_used"] for p in sets] == [True, False, True, True, True]
    assert [p.params["seed"] for p in sets] == [4, 5, 6, 7, 8]
    for p in sets:
        assert p.counts.sum() == lat.size
        assert (4.0 ** -s2.level(p.cell_ids).astype(np.float64)).sum() == pytest.approx(6.0)
    labels = np.stack([p.assign(lat, lng) for p in sets])
    assert len({row.tobytes() for row in labels}) == 5  # five different geoclass sets
    with pytest.raises(base.PartitionError, match="num_classes=9969"):
        cplanet.build_table1_sets(lat, lng, base_level=8, scale=False)
    # Scaled from a smaller reference size: the counts scaled_presets gives, ratios kept.
    more = cplanet.build_table1_sets(lat, lng, base_level=8, reference_num_points=lat.size * 100)
    expected = [p.num_classes for p in cplanet.scaled_presets(lat.size,
                                                              reference_num_points=lat.size * 100)]
    assert [p.num_classes for p in more] == expected == [100, 100, 130, 123, 113]  # N · 0.01


def test_zero_edge_weights_fall_back_to_geographic_distance(clustered):
    # Table 1's set 1 (β = (1, 0)) without features: Eq. 2 is 0 on every edge, so
    # the nearest centre decides, exactly as with β = (0, 1).
    lat, lng = clustered
    kw = dict(num_classes=100, alpha=(1, 0, 0), base_level=8, seed=3)
    a = cplanet.build_geoclass_set(lat, lng, beta=(1.0, 0.0), **kw)
    b = cplanet.build_geoclass_set(lat, lng, beta=(0.0, 1.0), **kw)
    assert not a.params["visual_distance_used"]
    np.testing.assert_array_equal(a.cell_ids, b.cell_ids)
    np.testing.assert_array_equal(a.cell_class, b.cell_class)


def test_worker_processes_give_the_same_sets(clustered):
    lat, lng = clustered
    feats = np.random.default_rng(1).normal(size=(lat.size, 8))
    one = cplanet.build_table1_sets(lat, lng, base_level=7, features=feats)
    two = cplanet.build_table1_sets(lat, lng, base_level=7, features=feats, processes=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.cell_ids, b.cell_ids)
        np.testing.assert_array_equal(a.cell_class, b.cell_class)
        assert a.params == b.params


# ------------------------------------------------------------------ building blocks
def test_edge_neighbors_fast_path_matches_s2():
    rng = np.random.default_rng(3)
    lat, lng = sphere.sample_uniform(rng, 20_000)
    levels = rng.integers(0, 31, lat.size)
    ids = s2.parent(s2.cell_id_from_latlng(lat, lng), levels)
    # Cells on face borders and corners too.
    u = rng.choice([-1.0, 1.0], 2000) * (1 - rng.random(2000) * 1e-9)
    edge_pts = np.stack([u, rng.uniform(-1, 1, 2000), np.ones(2000)], -1)
    border = s2.parent(s2.cell_id_from_xyz(edge_pts), rng.integers(0, 31, 2000))
    ids = np.concatenate([ids, border])
    np.testing.assert_array_equal(cplanet_graph._edge_neighbors(ids, s2.level(ids)), s2.edge_neighbors(ids))


def test_uniform_level_adjacency_is_the_s2_grid():
    # All 24 level-1 cells non-empty: each borders exactly its 4 edge neighbours.
    cells = s2.children(s2.cell_id_from_latlng(FACE_CENTRES[:, 0], FACE_CENTRES[:, 1], 0)).ravel()
    lat, lng = s2.cell_center_latlng(cells)
    graph = cplanet._base_graph(*cplanet._prepare(lat, lng, 1, None)[:2], 1)
    assert graph.num_nodes == 24 and graph.edges.shape == (48, 2)
    want = np.sort(np.searchsorted(graph.node_ids, s2.edge_neighbors(graph.node_ids)), axis=1)
    got = [sorted(graph.edges[graph.edges[:, 0] == i, 1].tolist()
                  + graph.edges[graph.edges[:, 1] == i, 0].tolist()) for i in range(24)]
    assert got == want.tolist()


def test_folded_tiling_covers_sphere_and_counts_every_cell(clustered):
    lat, lng = clustered
    for level in (3, 10):
        graph = cplanet._base_graph(lat, lng, level)
        assert graph.n_s2.sum() == 6 * 4 ** level
        assert graph.n_img.sum() == lat.size
        assert (4.0 ** -s2.level(graph.cover_ids).astype(np.float64)).sum() == pytest.approx(6.0)
        lo, hi = s2.range_min(graph.cover_ids), s2.range_max(graph.cover_ids)
        assert (lo[1:] > hi[:-1]).all()  # sorted and disjoint
        # Every node's own cell belongs to it.
        k = np.searchsorted(lo, graph.node_ids, side="right") - 1
        assert (graph.cover_node[k] == np.arange(graph.num_nodes)).all()
        # Connected, so merging can go down to one class.
        adjacency = sparse.coo_matrix((np.ones(len(graph.edges)), tuple(graph.edges.T)),
                                      shape=(graph.num_nodes,) * 2)
        assert csgraph.connected_components(adjacency, directed=False)[0] == 1


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes=0 must be between 1"),
    (dict(num_classes=10**6), "num_classes=1000000 must be between 1 and the number of non-empty"),
    (dict(num_classes=2.5), "num_classes must be an integer"),
    (dict(num_classes=5, alpha=(1.0, -0.1, 0.0)), "alpha .* non-negative"),
    (dict(num_classes=5, alpha=(1.0, 0.0)), "alpha .* 3 entries"),
    (dict(num_classes=5, beta=(0.5, math.nan)), "beta .* finite and non-negative"),
    (dict(num_classes=5, beta=(-1.0, 1.0)), "beta .* non-negative"),
    (dict(num_classes=5, features=np.zeros((10, 4))), r"features must have shape \(num_points, dim\)"),
    (dict(num_classes=5, features=np.zeros(6000)), r"features must have shape"),
    (dict(num_classes=5, features=np.full((6000, 3), np.nan)), "NaN or infinite"),
    (dict(num_classes=5, features=np.zeros((6000, 3)), feature_subspace_dim=4), "feature_subspace_dim=4"),
    (dict(num_classes=5, base_level=31), "base_level must be in"),
])
def test_bad_input(clustered, kwargs, match):
    lat, lng = clustered
    kwargs = {"base_level": 6, **kwargs}
    with pytest.raises(base.PartitionError, match=match):
        cplanet.build_geoclass_set(lat, lng, **kwargs)


def test_bad_coordinates():
    with pytest.raises(base.PartitionError):
        cplanet.build_geoclass_set([10.0, 95.0], [0.0, 0.0], num_classes=1)
    with pytest.raises(base.PartitionError):
        cplanet.build_geoclass_set([], [], num_classes=1)
    with pytest.raises(base.PartitionError, match="processes"):
        cplanet.build_table1_sets([0.0], [0.0], processes=0)

"""geojax.evaluation.findings: each seed's claim decided on hand-made result rows whose
answers are known, the "beats" rule, missing runs, and the Markdown table."""

from __future__ import annotations

from geojax.evaluation import findings


def fig(*accs: float) -> dict[str, float]:
    return dict(zip(("acc@1km", "acc@25km", "acc@200km", "acc@750km", "acc@2500km"), accs))


M = {  # 001's [M]: six heads (two here), the oracle, retrieval rows; one other split
    "im2gps3k/constant (densest cell)": fig(.012, .032, .051, .099, .231),
    "im2gps3k/boxes1 (188 cl.)": fig(.005, .068, .300, .549, .702),
    "im2gps3k/boxes6 (6397 cl.)": fig(.033, .328, .431, .546, .684),
    "im2gps3k/oracle: boxes1": fig(1, 1, 1, 1, 1),
    "im2gps3k/[M] NN": fig(.017, .270, .461, .584, .703),
    "im2gps3k/[M] kNN σ=25 km (spherical)": fig(.023, .359, .499, .599, .711),
    "yfcc4k/boxes1 (188 cl.)": fig(.9, .9, .9, .9, .9),
}


def test_beats_counts_thresholds_and_ties_count_for_neither():
    a, b = fig(.1, .2, .3, .1, .1), fig(.1, .1, .1, .2, .2)  # 1 km tied, 2 wins, 2 losses
    assert not findings.beats(a, b) and not findings.beats(b, a)
    assert findings.beats(fig(.1, .2, .3, .3, .1), fig(.1, .1, .1, .2, .2))  # 3 wins, 1 loss
    assert findings.beats(fig(.1, .2, .1, .1, .1), fig(.1, .1, .1, .1, .1))  # 1 win, 4 ties
    assert findings.at_least_as_good(fig(.1, .2, .3, .4, .5), fig(.1, .2, .3, .4, .5))
    assert not findings.at_least_as_good(fig(.1, .2, .3, .4, .49), fig(.1, .2, .3, .4, .5))


def test_scale_claim_and_retrieval_at_1km():
    f = findings.finer_vs_coarser({"knn_kde_M": M}, "knn_kde_M")
    assert f.holds is True  # 3.3 > 0.5 and 32.8 > 6.8; 54.9 > 54.6 and 70.2 > 68.4
    assert f.numbers == ("boxes6 (6397 cl.) vs boxes1 (188 cl.): 1 km 3.3 vs 0.50, 25 km 32.8 "
                         "vs 6.8, 200 km 43.1 vs 30.0, 750 km 54.6 vs 54.9, 2500 km 68.4 vs "
                         "70.2")
    r = findings.retrieval_at_1km({"knn_kde_M": M}, "knn_kde_M")
    assert r.holds is False
    assert r.numbers == "[M] kNN σ=25 km (spherical) 2.3 vs boxes6 (6397 cl.) 3.3 at 1 km"
    better = {**M, "im2gps3k/[M] NN": fig(.034, 0, 0, 0, 0)}
    assert findings.retrieval_at_1km({"knn_kde_M": better}, "knn_kde_M").holds is True


def test_hierarchical_product_against_the_best_level_per_threshold():
    levels = {"im2gps3k/hierarchy1 (585 cl.)": fig(.00, .02, .10, .30, .60),
              "im2gps3k/hierarchy7 (22601 cl.)": fig(.04, .20, .25, .28, .50)}
    ok = {**levels, "im2gps3k/hierarchy hierarchical product": fig(.04, .21, .25, .30, .61)}
    f = findings.product_vs_levels({"hierarchical": ok})
    assert f.holds is True  # ties with the best level count as "at least as good"
    assert f.numbers.startswith("1 km 4.0 vs 4.0 (hierarchy7), 25 km 21.0 vs 20.0 "
                                "(hierarchy7), 200 km 25.0 vs 25.0 (hierarchy7), 750 km 30.0 "
                                "vs 30.0 (hierarchy1)")
    low = {**levels, "im2gps3k/hierarchy hierarchical product": fig(.04, .21, .25, .29, .61)}
    assert findings.product_vs_levels({"hierarchical": low}).holds is False


def test_cplanet_geodecoder_and_missing_runs():
    cp = {"im2gps3k/geoclass1 (132 cl.)": fig(0, .03, .16, .35, .54),
          "im2gps3k/geoclass2 (132 cl.)": fig(0, .02, .15, .36, .55),
          "im2gps3k/combinatorial NormalizedSum (1007 fine)": fig(0, .07, .23, .38, .56),
          "im2gps3k/combinatorial SimpleSum (1007 fine)": fig(0, .07, .23, .39, .56),
          "im2gps3k/oracle: geoclass1": fig(1, 1, 1, 1, 1)}
    runs = {"cplanet": cp}
    assert findings.combinatorial_vs_heads(runs).holds is True
    assert findings.combinatorial_vs_heads(runs).numbers.startswith("beats 2 of 2 heads")
    assert findings.normalized_vs_simple(runs).holds is False  # 750 km: 38 < 39, else ties
    assert findings.visual_vs_geographic_sets(runs).holds is False  # 2 wins, 2 losses
    g = findings.geodecoder_vs_classifier(runs)
    assert g.holds is None and g.numbers == "needs the run(s) geodecoder, hierarchical_800"
    table = findings.format_findings([g, findings.normalized_vs_simple(runs)])
    assert table.splitlines()[2] == ("| GeoDecoder beats the hierarchical classifier with the "
                                     "same partitions and budget (800 steps) | 003 | not run | "
                                     "needs the run(s) geodecoder, hierarchical_800 |")
    assert table.splitlines()[3].startswith(
        "| NormalizedSum beats SimpleSum (cplanet) | 004 | no | ")
    # The three-epoch run's claims are decided on its own rows.
    long = findings.normalized_vs_simple({"cplanet_9000": cp}, "cplanet_9000")
    assert long.claim == "NormalizedSum beats SimpleSum (cplanet_9000)" and long.holds is False
    # Every GeoDecoder budget is checked: 800 steps (against hierarchical_800), 3,000 and 9,000.
    product = "im2gps3k/hierarchy hierarchical product"
    runs = {"geodecoder_3000": {product: fig(.01, .10, .20, .30, .50)},
            "hierarchical": {product: fig(.02, .09, .19, .30, .49)}}
    decided = [f for f in findings.findings(runs) if f.claim.startswith("GeoDecoder")]
    assert [f.holds for f in decided] == [None, True, None]  # 3 of 5 ahead, 1 tie
    assert decided[1].numbers.startswith("geodecoder_3000 vs hierarchical: 1 km 1.0 vs 2.0")


def test_002_claims_on_the_metadata_split():
    split = "metadata split, evaluation users, all photos"
    rows = {f"{split}/M1 (cell centroid)": fig(.0007, .032, .158, .292, .489),
            f"{split}/M1 (imagery centroid)": fig(.0010, .053, .172, .293, .489),
            f"{split}/M2 time inputs": fig(.0003, .038, .141, .287, .520),
            f"{split}/M3 user albums": fig(.0002, .023, .158, .365, .605),
            "metadata split, evaluation users, outdoor only/M1 (cell centroid)": fig(1, 1, 1, 1, 1),
            "tests/all photos: M2 time inputs vs M1 (imagery centroid)": {
                "p_value": 7.46e-15, "mean_difference": -494.3}}
    imagery, m2, m3 = findings.meta_claims({"delaunay_meta": rows})
    assert imagery.holds is True  # 1 km 0.10 > 0.07, 25 and 200 km higher, 750 km higher
    assert imagery.numbers.startswith("1 km 0.10 vs 0.07, 25 km 5.3 vs 3.2")
    assert m2.holds is False and m2.numbers.endswith(
        "; paired Wilcoxon mean error -494 km, p = 7.5e-15")
    assert m3.holds is False  # ahead at 750 and 2500 km only
    assert [f.holds for f in findings.meta_claims({})] == [None, None, None]
    # delaunay_meta_9000's claims read that run's rows, not the default run's.
    long = findings.meta_claims({"delaunay_meta_9000": rows}, "delaunay_meta_9000")
    assert [f.holds for f in long] == [True, False, False]
    assert long[1].claim == "M2 (time inputs) beats M1 (delaunay_meta_9000)"

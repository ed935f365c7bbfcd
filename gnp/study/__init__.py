"""The reproduction study on MNIST-1D: both papers' claims, with declared paired contrasts.

    python -m gnp.study --mode=full  [--out=runs/study] [--only=icml2022|icml2024]
    python -m gnp.study --mode=pilot [--out=runs/pilot]    # every step, fewer seeds and r
    python -m gnp.study --mode=smoke [--out=runs/smoke]    # digits, a 2-minute check
    python -m gnp.study --mode=confirm --only=icml2022 [--out=runs/study2]  # plan shard 1

ICML 2022 (CNN1D_64 with BatchNorm, SGD-momentum, 0 % and 30 % flipped labels): SGD, SAM,
GNP α = 0.8 with the paper's formula, GNP α = 0.8 normalized as the released code mixes it,
and GNP α = 0.5. Each variant's r is chosen on the validation split from ``r_grid`` (mean
over the tuning seeds, which are not the final seeds), then the final seeds train at that r
and are evaluated once on the test split.

ICML 2024 (ViT1D of width 32 and 64, AdamW with learning-rate warmup, α = 1, r = 0.1):
Adam, GR from step 0, GR with r-, λ- and zero-warmup, and Adam and GR without the
learning-rate warmup. For the first 300 steps the mean and coefficient of variation of
Adam's √ν̂ and of its per-parameter step size lr/(√ν̂ + ε) are recorded.

Every final run is measured at its final checkpoint: train error on the flipped and the
clean labels, the whole-training-set ‖∇L‖, the top Hessian eigenvalue and the Hutchinson
trace (the same probes for every run, so trace differences have a paired standard error).
The declared contrasts (``DECLARED``) get a paired difference of test error with a 95 % t
interval and an exact sign test, Holm-corrected over the family.

A run lives in ``OUT/<part>/<stage>/<group>/<variant>/r<r>/seed<k>``; it is finished when its
``study_run.json`` exists, and a re-run skips it, so the study resumes part by part.
``OUT/results.json``, ``OUT/results.md`` and the PNGs are rewritten after every part.

``--mode=confirm`` is the confirmatory study declared in ``docs/study/plan.md`` (its plan
shard 1 is ``--only=icml2022``, shard 2 ``--only=icml2024``): one λ = α·r grid for every
penalized variant, chosen on 4,000 validation signals with flipped labels over three tuning
seeds; matched-λ SAM, the released form's term alone at r = 1e-4 and an lr ablation; GR's r
tuned for the 2024 part, 20 seeds at width 64 and three widths; one Holm family of 19 rows
on the paired t-test, with the exact sign test and a bootstrap over test signals (every final
run saves which test signals it gets right) beside it; and the plan's budget rule
(``budget``), decided once from the measured ``cpu_seconds``. Last, descriptive and outside
the family and the budget: Figure 3's runs (stage ``figure3``), α = 0.5 and 0.8 under both
mixes and α = 1 at the r GNP (paper) chose on clean labels, on validation, with ‖g1‖, ‖g2‖
and the combined norm per epoch.

The package: ``plan`` (the design: scales, variants, contrasts, runs, the choice of r), ``run``
(running the runs resumably, in shards, with an ETA), ``measure`` (what is measured of a run),
``budget`` (the confirmatory plan's cut rule), ``report`` (tables, contrasts, figures) and
``main`` (the command line).
"""

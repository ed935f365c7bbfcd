"""The study's report: per-variant tables, the declared contrasts, correlations, figures.

Everything here is a function of the per-run results ``gnp.study`` collects, so the
report can be rebuilt from ``results.json`` without training. "±" in every table is the
half-width of a 95 % Student-t interval over seeds, never a standard deviation; a cell
with one seed shows the value alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from gnp.analysis import statistics
from gnp.analysis.plots import json_ready
from gnp.study import wording

TEST_CORRECT = "test_correct.npy"  # a final run's per-signal test correctness (gnp.study.measure)

GATE_THRESHOLD = 0.02  # SGD's train error on the flipped labels must fall below this
CURVATURE = ("top_eigenvalue", "trace", "full_gradient_norm")
ADAM_STATS = ("mean_sqrt_nu", "cv_sqrt_nu", "mean_step_size", "cv_step_size")


Labels = dict[str, dict[str, str]]  # part → variant key → label, in table order


def tidy(value: float) -> float:
    """``value`` to 10 significant digits: λ/α and α·r as the grid's own numbers
    (0.56 / 0.8 is 0.7000000000000001 in floating point)."""
    return float(f"{value:.10g}")


def estimate(values: Sequence[float], factor: float = 1.0, digits: int = 2) -> str:
    """``mean ± 95 % CI half-width`` (``mean`` alone for one value)."""
    array = factor * np.asarray(values, np.float64)
    if len(array) == 1:
        return f"{array[0]:.{digits}f}"
    low, high = statistics.t_interval(array)
    return f"{array.mean():.{digits}f} ± {(high - low) / 2:.{digits}f}"


def _groups(runs: Sequence[dict]) -> list[str]:
    return sorted(
        {run["group"] for run in runs},
        key=lambda g: float(g.removeprefix("noise").removeprefix("width")),
    )


def by_seed(runs: Sequence[dict], group: str, variant: str) -> dict[int, dict]:
    return {run["seed"]: run for run in runs if (run["group"], run["variant"]) == (group, variant)}


def variant_table(results: dict[str, Any], labels: dict[str, str]) -> str:
    runs, part = results["runs"], results["runs"][0]["part"]
    columns = ["group", "variant", "r", "seeds", "test error (%), mean ± 95 % CI"]
    if part == "icml2022":
        columns.append("train error on flipped labels (%)")
    columns += ["λ₁ (top Hessian eigenvalue)", "Hutchinson trace", "whole-set ‖∇L‖"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for group in _groups(runs):
        for key, label in labels.items():
            seeds = by_seed(runs, group, key)
            if not seeds:
                continue
            chosen = sorted(seeds.values(), key=lambda run: run["seed"])
            r = (
                "—"
                if chosen[0]["r"] == 0 or key.startswith(("sgd", "adam"))
                else f"{chosen[0]['r']:g}"
            )
            cells = [group, label, r, str(len(chosen))]
            cells.append(estimate([run["error_rate"] for run in chosen], 100))
            if part == "icml2022":
                flipped = [run.get("flipped_train_error_rate") for run in chosen]
                cells.append("—" if None in flipped else estimate(flipped, 100))
            cells += [estimate([run[k] for run in chosen], 1, 3) for k in CURVATURE]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


Term = tuple[int, str, str]  # (sign, group, variant): one summand of a contrast's side


def sides(contrast: Any, group: str) -> tuple[list[Term], list[Term]]:
    """The two sides a and b of a contrast in ``group``, each a signed sum of variants' runs
    (an interaction: a − b in ``group`` against a − b in ``contrast.versus``)."""
    if getattr(contrast, "versus", ""):
        low = contrast.versus
        return [(1, group, contrast.a), (-1, group, contrast.b)], [
            (1, low, contrast.a),
            (-1, low, contrast.b),
        ]
    return [(1, group, contrast.a)], [(1, group, contrast.b)]


def _side(runs: Sequence[dict], side: list[Term], seeds: list[int], key: str) -> list[Any]:
    """Per seed, the signed sum of the side's runs' ``key`` (numbers or lists of numbers)."""
    members = [(sign, by_seed(runs, group, variant)) for sign, group, variant in side]
    return [
        sum(sign * np.asarray(found[seed][key], np.float64) for sign, found in members)
        for seed in seeds
    ]


def _common_seeds(runs: Sequence[dict], terms: list[Term]) -> list[int]:
    found = [set(by_seed(runs, group, variant)) for _, group, variant in terms]
    return sorted(set.intersection(*found))


def signal_bootstrap(
    runs: Sequence[dict], a: list[Term], b: list[Term], seeds: list[int], out: Path, resamples: int
) -> dict[str, Any] | None:
    """The contrast's mean over seeds, resampled over test signals: every final run saved
    which test signals it got right; the per-signal difference of errors (mean over seeds) is
    resampled. None where a run has no saved correctness (a run from before it was saved)."""
    total = None
    for side, factor in ((a, 1), (b, -1)):
        for sign, group, variant in side:
            found = by_seed(runs, group, variant)
            for seed in seeds:
                path = out / found[seed].get("directory", "-") / TEST_CORRECT
                if not path.exists():
                    return None
                wrong = 1.0 - np.load(path).astype(np.float64)
                total = factor * sign * wrong + (0.0 if total is None else total)
    delta = total / len(seeds)
    low, high = statistics.bootstrap_interval(delta, resamples)
    return {"resamples": resamples, "mean": float(delta.mean()), "ci_low": low, "ci_high": high}


def contrasts(
    results: dict[str, Any],
    declared: Sequence[Any],
    labels: Labels,
    *,
    holm_on: str = "sign_test_p",
    family_size: int | None = None,
    out: Path | None = None,
    resamples: int = 10_000,
) -> list[dict[str, Any]]:
    """Every declared contrast (``.part``, ``.a``, ``.b``, optionally ``.groups`` and
    ``.versus``) in every group it names (none named: every group of its part that ran),
    Holm-corrected together on ``holm_on``. A family of ``family_size`` rows of which some did
    not run yet counts each missing row at p = 1, so the adjusted p of the rows present can
    only fall when the rest arrive. With ``out``, a bootstrap over test signals beside."""
    rows = []
    for contrast in declared:
        if contrast.part not in results:
            continue
        runs = results[contrast.part]["runs"]
        names = labels[contrast.part]
        for group in getattr(contrast, "groups", ()) or _groups(runs):
            a, b = sides(contrast, group)
            seeds = _common_seeds(runs, a + b)
            if not seeds:
                continue
            error = statistics.paired_difference(
                _side(runs, a, seeds, "error_rate"), _side(runs, b, seeds, "error_rate")
            )
            samples_a = _side(runs, a, seeds, "trace_samples")
            samples_b = _side(runs, b, seeds, "trace_samples")
            name = f"{names[contrast.a]} − {names[contrast.b]}"
            if getattr(contrast, "versus", ""):
                name = f"({name}) {group} − {contrast.versus}"
            row = {
                "part": contrast.part,
                "group": group,
                "a": contrast.a,
                "b": contrast.b,
                "name": name,
                "seeds": seeds,
                "test_error_difference": error.__dict__
                | {"t_test_p": statistics.t_test_p(error.differences)},
                "trace_difference": [
                    float(x - y)
                    for x, y in zip(
                        _side(runs, a, seeds, "trace"), _side(runs, b, seeds, "trace"), strict=True
                    )
                ],
                "trace_difference_paired_standard_error": [
                    statistics.paired_standard_error(x, y)
                    for x, y in zip(samples_a, samples_b, strict=True)
                ],
            }
            if getattr(contrast, "versus", ""):
                row["versus"] = contrast.versus
            if out is not None:
                bootstrap = signal_bootstrap(runs, a, b, seeds, out, resamples)
                if bootstrap is not None:
                    row["test_signal_bootstrap"] = bootstrap
            rows.append(row)
    size = len(rows) if family_size is None else family_size
    p_values = [row["test_error_difference"][holm_on] for row in rows]
    p_values = [1.0 if math.isnan(p) else p for p in p_values] + [1.0] * (size - len(rows))
    for row, p in zip(rows, statistics.holm(p_values), strict=False):
        row["holm_p"] = p
        row["holm_on"] = holm_on
        row["holm_family_size"] = size
    return rows


def contrast_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| contrast (test error, a − b) | group | seeds | mean (pp) | 95 % CI (pp) "
        "| a worse / better | sign test p | Holm p | trace a − b (mean ± paired SE of seed 1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        error = row["test_error_difference"]
        interval = (
            "—"
            if math.isnan(error["ci_low"])
            else f"[{100 * error['ci_low']:+.2f}, {100 * error['ci_high']:+.2f}]"
        )
        trace = f"{np.mean(row['trace_difference']):+.3g}"
        if not math.isnan(row["trace_difference_paired_standard_error"][0]):
            trace += f" ± {row['trace_difference_paired_standard_error'][0]:.2g}"
        lines.append(
            f"| {row['name']} | {row['group']} | {len(row['seeds'])} "
            f"| {100 * error['mean']:+.2f} | {interval} "
            f"| {error['positive']} / {error['negative']} | {error['sign_test_p']:.3g} "
            f"| {row['holm_p']:.3g} | {trace} |"
        )
    return "\n".join(lines)


def confirmatory_table(rows: Sequence[dict[str, Any]]) -> str:
    """The one Holm family: paired t (primary, Holm-adjusted), the sign test and the test
    signals' bootstrap interval beside the seeds' t interval."""
    lines = [
        "| contrast (test error, a − b) | group | seeds | mean (pp) | 95 % t CI (pp) | t p "
        "| a worse / better | sign test p | test-signal bootstrap 95 % CI (pp) "
        "| Holm p (t, family) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        error = row["test_error_difference"]
        interval = "—" if math.isnan(error["ci_low"]) else _pp_interval(error)
        bootstrap = row.get("test_signal_bootstrap")
        lines.append(
            f"| {row['name']} | {row['group']} | {len(row['seeds'])} "
            f"| {100 * error['mean']:+.2f} | {interval} | {error['t_test_p']:.3g} "
            f"| {error['positive']} / {error['negative']} | {error['sign_test_p']:.3g} "
            f"| {_pp_interval(bootstrap) if bootstrap else '—'} "
            f"| {row['holm_p']:.3g} (of {row['holm_family_size']}) |"
        )
    return "\n".join(lines)


def _pp_interval(values: dict[str, float]) -> str:
    return f"[{100 * values['ci_low']:+.2f}, {100 * values['ci_high']:+.2f}]"


def lambda_tuning_table(
    tuning: Sequence[dict], labels: dict[str, str], alphas: dict[str, float]
) -> str:
    """Mean validation error (%) over the tuning seeds per group, variant and λ = α·r: on
    the flipped validation labels (what λ is chosen by), the clean ones in parentheses."""
    flipped = validation_errors(tuning)
    clean = validation_errors(
        [run | {"error_rate": run.get("clean_validation_error_rate", math.nan)} for run in tuning]
    )
    lam = lambda key, r: tidy(alphas[key] * r)
    grid = sorted({lam(run["variant"], run["r"]) for run in tuning if alphas[run["variant"]]})
    lines = [
        "| group | variant | " + " | ".join(f"λ = {x:g}" for x in grid) + " |",
        "|---|---|" + "---|" * len(grid),
    ]
    for group in _groups(tuning):
        for key, label in labels.items():
            if (group, key) not in flipped or not alphas[key]:
                continue
            by_lambda = {lam(key, r): r for r in flipped[(group, key)]}
            cells = [
                _with_clean(flipped[(group, key)][by_lambda[x]], clean[(group, key)][by_lambda[x]])
                if x in by_lambda
                else "—"
                for x in grid
            ]
            lines.append(f"| {group} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _with_clean(error: float, clean: float) -> str:
    """``error`` in %, the clean-label error beside it where the run measured one."""
    return f"{100 * error:.2f}" + ("" if math.isnan(clean) else f" ({100 * clean:.2f})")


def chosen_table(chosen: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    lines = ["| group | variant | chosen r | λ = α·r | inside the grid |", "|---|---|---|---|---|"]
    for name, setting in chosen.items():
        group, key = name.split("/")
        inside = "yes" if setting["bracketed"] else "no: optimum not bracketed"
        lines.append(
            f"| {group} | {labels[key]} | {setting['r']:g} | {setting['lambda']:g} | {inside} |"
        )
    return "\n".join(lines)


def lr_table(results: dict[str, Any], labels: dict[str, str], lr_grid: Sequence[float]) -> str:
    """The lr ablation (descriptive): mean flipped validation error (%) over the tuning seeds
    per variant at its chosen r; base lr 0.1's column is the tuning runs at that r."""
    chosen = {tuple(k.split("/")): r for k, r in results["chosen_r"].items()}
    rates = sorted({0.1, *lr_grid})
    cells: dict[tuple[str, str, float], list[float]] = {}
    for run in results.get("tuning", []):
        if chosen.get((run["group"], run["variant"])) == run["r"]:
            cells.setdefault((run["group"], run["variant"], 0.1), []).append(run["error_rate"])
    for run in results.get("lr_ablation", []):
        key, _, rate = run["variant"].rpartition("_lr")
        cells.setdefault((run["group"], key, float(rate)), []).append(run["error_rate"])
    lines = [
        "| group | variant | " + " | ".join(f"lr {x:g}" for x in rates) + " |",
        "|---|---|" + "---|" * len(rates),
    ]
    for group in _groups(results.get("lr_ablation", [])):
        for key, label in labels.items():
            row = [cells.get((group, key, x)) for x in rates]
            if not any(row[i] for i, x in enumerate(rates) if x != 0.1):
                continue
            text = [f"{100 * np.mean(v):.2f} ({len(v)})" if v else "—" for v in row]
            lines.append(f"| {group} | {label} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def validation_errors(tuning: Sequence[dict]) -> dict[tuple[str, str], dict[float, float]]:
    """Per (group, variant) and r: the tuning runs' mean validation error, the numbers r is
    chosen from (``gnp.study.choose_r``) and ``tuning_table`` shows."""
    errors: dict[tuple[str, str], dict[float, list[float]]] = {}
    for run in tuning:
        by_r = errors.setdefault((run["group"], run["variant"]), {})
        by_r.setdefault(run["r"], []).append(run["error_rate"])
    return {
        key: {r: float(np.mean(values)) for r, values in by_r.items()}
        for key, by_r in errors.items()
    }


def tuning_table(results: dict[str, Any], labels: dict[str, str]) -> str:
    """Validation error (%) of the tuning runs per group, variant and r (mean over tuning
    seeds), the numbers r was chosen from; a diverged run shows as 100."""
    tuning = results.get("tuning", [])
    means = validation_errors(tuning)
    radii = sorted({run["r"] for run in tuning})
    lines = [
        "| group | variant | " + " | ".join(f"r = {r:g}" for r in radii) + " |",
        "|---|---|" + "---|" * len(radii),
    ]
    for group in _groups(tuning):
        for key, label in labels.items():
            by_r = means.get((group, key))
            if by_r is None:
                continue
            cells = [f"{100 * by_r[r]:.2f}" if r in by_r else "—" for r in radii]
            lines.append(f"| {group} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gradient_norm_table(results: dict[str, Any], labels: dict[str, str]) -> str:
    """Figure 3's two norms at the last epoch, per group and variant, mean over seeds: the
    clean mini-batch ‖g1‖ and the combined gradient's norm (what the released trainer logs)."""
    runs = results["runs"]
    lines = [
        "| group | variant | clean mini-batch ‖g1‖ | combined ‖g‖ (the released trainer's log) |",
        "|---|---|---|---|",
    ]
    for group in _groups(runs):
        for key, label in labels.items():
            members = list(by_seed(runs, group, key).values())
            if not members or members[0]["curve"][-1]["combined_gradient_norm"] is None:
                continue
            last = [member["curve"][-1] for member in members]
            clean = np.mean([row["clean_gradient_norm"] for row in last])
            combined = np.mean([row["combined_gradient_norm"] for row in last])
            lines.append(f"| {group} | {label} | {clean:.3f} | {combined:.3f} |")
    return "\n".join(lines)


def mix_term_norms(
    curve: Sequence[dict[str, Any]], alpha: float, norm_perturbations: bool
) -> list[float]:
    """Per epoch, the norm of the (1 − α) term of the mix: ‖(1 − α)·g1‖ under the paper's mix,
    ‖(1 − α)·g1/‖g1‖‖ under the released one.

    Computed from the logged values because it is exact, so no run needs to log it: a norm is
    absolutely homogeneous, so ‖(1 − α)·g1‖ = |1 − α|·‖g1‖ at every step, and the epoch's mean
    of it is |1 − α| times the epoch's mean ‖g1‖ (``clean_gradient_norm``); g1/‖g1‖ has norm 1,
    so the released term's norm is |1 − α| at every step. (The study's runs are on one device,
    every step a GNP step at a constant α: the g1 logged is the one mixed.)"""
    factor = abs(1.0 - alpha)
    if norm_perturbations:
        return [factor for _ in curve]
    return [factor * row["clean_gradient_norm"] for row in curve]


# Figure 3's norms: the key of each in a figure3 run's curve (the (1 − α) term's is computed).
FIGURE3_NORMS = {
    "clean_gradient_norm": "clean ‖g1‖",
    "perturbed_gradient_norm": "perturbed ‖g2‖",
    "term": "‖(1 − α) term‖",
    "combined_gradient_norm": "combined ‖g‖ (the released trainer's log)",
}


def figure3_series(run: dict[str, Any]) -> dict[str, list[float | None]]:
    """A Figure 3 run's four norms per epoch (None where its trainer did not log one)."""
    curve = run["curve"]
    series = {key: [row.get(key) for row in curve] for key in FIGURE3_NORMS if key != "term"}
    series["term"] = mix_term_norms(curve, run["alpha"], run["norm_perturbations"])
    return {key: series[key] for key in FIGURE3_NORMS}


def _settings(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs by variant (a setting: α and mix), in the order they ran, each in seed order."""
    settings: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        settings.setdefault(run["variant"], []).append(run)
    return {key: sorted(members, key=lambda run: run["seed"]) for key, members in settings.items()}


def figure3_table(runs: Sequence[dict[str, Any]]) -> str:
    """Figure 3's four norms at the last epoch, per setting, mean over seeds."""
    names = " | ".join(FIGURE3_NORMS.values())
    lines = [f"| group | setting | r | seeds | {names} |", "|---|---|---|---|" + "---|" * 4]
    for members in _settings(runs).values():
        last = [{k: v[-1] for k, v in figure3_series(run).items()} for run in members]
        cells = [
            "—" if None in values else f"{np.mean(values):.3f}"
            for values in ([row[key] for row in last] for key in FIGURE3_NORMS)
        ]
        first = members[0]
        head = f"| {first['group']} | {first['label']} | {first['r']:g} | {len(members)} | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


def correlations(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Spearman's ρ of each curvature measure with test error, over a group's final runs."""
    runs = results["runs"]
    table = {}
    for group in _groups(runs):
        members = [run for run in runs if run["group"] == group]
        errors = [run["error_rate"] for run in members]
        table[group] = {
            key: statistics.spearman([run[key] for run in members], errors) for key in CURVATURE
        }
    return table


FLATNESS = ("top_eigenvalue", "trace")


def _rank_test(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    return {
        "rho": statistics.spearman(x, y),
        "permutation_p": statistics.spearman_permutation_p(x, y),
        "n": len(x),
    }


def flatness(results: dict[str, Any], plain: str = "sgd") -> dict[str, dict[str, Any]]:
    """What flatness ranks (descriptive): per group and measure, Spearman's ρ with test error
    within each variant (over its seeds: does the flatter seed generalize better?) and between
    variants (over variant means, with and without the unpenalized ``plain``, SGD or Adam:
    does the flatter method?). The first study pooled both, which let the between-variant gap
    stand for a within-variant law. The between keys: "all" and "without <plain>"."""
    runs = results["runs"]
    table = {}
    for group in _groups(runs):
        variants = {key: list(by_seed(runs, group, key).values()) for key in _variants(runs)}
        variants = _distinct({key: members for key, members in variants.items() if members})
        entry: dict[str, Any] = {}
        for measure in FLATNESS:
            within = {
                key: _rank_test([m[measure] for m in members], [m["error_rate"] for m in members])
                for key, members in variants.items()
            }
            means = {
                key: (np.mean([m[measure] for m in ms]), np.mean([m["error_rate"] for m in ms]))
                for key, ms in variants.items()
            }
            between = {}
            for name, keys in (
                ("all", list(means)),
                (f"without {plain}", [k for k in means if k != plain]),
            ):
                between[name] = _rank_test([means[k][0] for k in keys], [means[k][1] for k in keys])
            entry[measure] = {"within": within, "between": between}
        table[group] = entry
    return table


def _distinct(variants: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The variants whose runs are not another's (matched-λ SAM shares SAM's runs where the
    two λ coincide: counted once, or the between-variant ρ would count one method twice)."""
    seen, kept = set(), {}
    for key, members in variants.items():
        runs = frozenset(member.get("directory", f"{key}/{i}") for i, member in enumerate(members))
        if runs not in seen:
            seen.add(runs)
            kept[key] = members
    return kept


def _variants(runs: Sequence[dict]) -> list[str]:
    """Variant keys in the order their first run appears."""
    return list(dict.fromkeys(run["variant"] for run in runs))


def flatness_table(table: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    """``flatness``: ρ (permutation p, n) of λ₁ and of the trace with test error."""
    cell = lambda t: (
        f"— (n {t['n']})"
        if math.isnan(t["rho"])
        else f"{t['rho']:+.2f} (p {t['permutation_p']:.2g}, n {t['n']})"
    )
    lines = [
        "| group | over | λ₁: ρ with test error (p, n) | trace: ρ with test error (p, n) |",
        "|---|---|---|---|",
    ]
    for group, entry in table.items():
        first = entry[FLATNESS[0]]
        for key in first["within"]:
            cells = " | ".join(cell(entry[m]["within"][key]) for m in FLATNESS)
            lines.append(f"| {group} | seeds of {labels.get(key, key)} | {cells} |")
        for name in first["between"]:
            cells = " | ".join(cell(entry[m]["between"][name]) for m in FLATNESS)
            without = name.removeprefix("without ")
            said = name if name == without else f"without {labels.get(without, without)}"
            lines.append(f"| {group} | variant means, {said} | {cells} |")
    return "\n".join(lines)


def gate(results: dict[str, Any]) -> dict[str, Any] | None:
    """SGD must memorize the flipped labels of the noisiest group (else: widen the model)."""
    runs = [
        run
        for run in results["runs"]
        if run["variant"] == "sgd" and "flipped_train_error_rate" in run
    ]
    if not runs:
        return None
    group = _groups(runs)[-1]
    values = [run["flipped_train_error_rate"] for run in runs if run["group"] == group]
    worst = max(values)
    return {
        "group": group,
        "flipped_train_error_rate": values,
        "passed": worst < GATE_THRESHOLD,
        "threshold": GATE_THRESHOLD,
    }


def confirmatory_sections(
    results: dict[str, Any], labels: dict[str, str], confirmatory: dict[str, Any]
) -> list[str]:
    """The chosen λ (with grid edges said), the tuning runs by λ, the lr ablation, the budget."""
    sections = []
    if results.get("chosen"):
        sections.append("Chosen settings\n\n" + chosen_table(results["chosen"], labels) + "\n")
    sections.append(
        "Validation error (%) of the tuning runs by λ = α·r, mean over the tuning seeds, on "
        "the validation labels flipped at the training rate (clean ones in parentheses, where "
        "labels are flipped)\n\n"
        + lambda_tuning_table(results["tuning"], labels, confirmatory["alphas"])
        + "\n"
    )
    if results.get("lr_ablation"):
        sections.append(
            "Learning-rate ablation (descriptive; flipped validation error %, tuning seeds "
            "in parentheses)\n\n" + lr_table(results, labels, confirmatory["lr_grid"]) + "\n"
        )
    if results.get("budget"):
        decision = results["budget"]
        cuts = ", ".join(decision["cut_rules"].values()) or "none"
        sections.append(
            f"Budget: projected {decision['projected_seconds'] / 3600:.2f} h of CPU for the "
            f"shard (from {decision['runs_finished_at_decision']} finished runs' cpu_seconds; "
            f"budget {decision['budget_seconds'] / 3600:g} h); cuts: {cuts}.\n"
        )
    return sections


STAGES = {"tuning": "tuning", "runs": "final", "lr_ablation": "lr ablation", "figure3": "Figure 3"}


def cost(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """What the study cost, from each run's recorded ``cpu_seconds`` (user + system CPU of its
    process, so two processes on 2 cores add up): per part and stage, the distinct runs (a
    run two variants share, matched SAM's with SAM's, counted once), their total and mean."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for part in ("icml2022", "icml2024"):
        for key, stage in STAGES.items():
            distinct = {
                run.get("directory", id(run)): run for run in results.get(part, {}).get(key, [])
            }
            seconds = [run["cpu_seconds"] for run in distinct.values() if "cpu_seconds" in run]
            if seconds:
                table.setdefault(part, {})[stage] = {
                    "runs": len(seconds),
                    "cpu_hours": float(np.sum(seconds)) / 3600,
                    "mean_seconds": float(np.mean(seconds)),
                }
    return table


def cost_table(table: dict[str, dict[str, dict[str, float]]], budget_hours: float) -> str:
    lines = ["| part | stage | runs | CPU (h) | mean per run (s) |", "|---|---|---|---|---|"]
    for part, stages in table.items():
        for stage, entry in stages.items():
            lines.append(
                f"| {part} | {stage} | {entry['runs']} | {entry['cpu_hours']:.2f} "
                f"| {entry['mean_seconds']:.1f} |"
            )
    total = sum(entry["cpu_hours"] for stages in table.values() for entry in stages.values())
    runs = sum(entry["runs"] for stages in table.values() for entry in stages.values())
    lines.append(f"| all | | {runs} | {total:.2f} (budget {budget_hours:g}) | |")
    return "\n".join(lines)


def figure3_section(runs: Sequence[dict[str, Any]]) -> str:
    """Figure 3's table, headed by what its runs are (validation, not the family) and how the
    (1 − α) term is computed, so the numbers read without the code."""
    return (
        "Figure 3 at one r (descriptive, validation runs; last epoch, mean over seeds; the "
        "(1 − α) term: (1 − α)·‖g1‖ under the paper's mix, 1 − α under the released one)\n\n"
        + figure3_table(runs)
        + "\n"
    )


# Figures.


def _band(axes: Any, x: np.ndarray, curves: np.ndarray, label: str, **style: Any) -> None:
    """Mean over seeds (rows) with its 95 % t band; the band needs two seeds. ``style``: the
    line's matplotlib keywords."""
    mean = curves.mean(axis=0)
    (line,) = axes.plot(x, mean, label=label, **style)
    if len(curves) > 1:
        low, high = np.transpose([statistics.t_interval(column) for column in curves.T])
        axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_contrasts(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Per-seed paired differences (points) and their mean with the 95 % CI (bar)."""
    figure = Figure(figsize=(8, 0.45 * len(rows) + 1.2), layout="constrained")
    axes = figure.subplots()
    for index, row in enumerate(rows):
        error = row["test_error_difference"]
        differences = 100 * np.asarray(error["differences"])
        axes.scatter(differences, np.full(len(differences), index), s=12, color="0.5", zorder=2)
        if not math.isnan(error["ci_low"]):
            axes.plot([100 * error["ci_low"], 100 * error["ci_high"]], [index, index], "k-", lw=2)
        axes.plot(100 * error["mean"], index, "kD", ms=5, zorder=3)
    axes.axvline(0, color="tab:red", lw=0.8)
    axes.set_yticks(range(len(rows)), [f"{row['name']} ({row['group']})" for row in rows])
    axes.invert_yaxis()
    axes.set_xlabel("test error difference a − b (pp): seeds (grey), mean and 95 % CI (black)")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_test_errors(results: dict[str, Any], labels: dict[str, str], path: Path) -> Path:
    """Test error per variant and group: each seed a point, the mean with its 95 % CI."""
    runs = results["runs"]
    groups = _groups(runs)
    figure = Figure(figsize=(5 * len(groups), 0.4 * len(labels) + 1.5), layout="constrained")
    for axes, group in zip(np.atleast_1d(figure.subplots(1, len(groups))), groups, strict=True):
        for index, key in enumerate(labels):
            errors = 100 * np.asarray(
                [run["error_rate"] for run in by_seed(runs, group, key).values()]
            )
            if not len(errors):
                continue
            axes.scatter(errors, np.full(len(errors), index), s=12, color="0.5", zorder=2)
            axes.plot(errors.mean(), index, "kD", ms=5, zorder=3)
            if len(errors) > 1:
                axes.plot(statistics.t_interval(errors), [index, index], "k-", lw=2)
        axes.set_yticks(range(len(labels)), list(labels.values()))
        axes.invert_yaxis()
        axes.set_title(group)
        axes.set_xlabel("test error (%): seeds (grey), mean and 95 % CI (black)")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_gradient_norms(results: dict[str, Any], labels: dict[str, str], path: Path) -> Path:
    """Figure 3 of the 2022 paper, both ways: the clean ‖g1‖ and the combined gradient's norm
    per epoch, per variant, mean over the final seeds with a 95 % band."""
    runs = results["runs"]
    groups = _groups(runs)
    figure = Figure(figsize=(11, 3.6 * len(groups)), layout="constrained")
    grid = np.atleast_2d(figure.subplots(len(groups), 2, squeeze=False))
    for row_axes, group in zip(grid, groups, strict=True):
        for key, label in labels.items():
            members = list(by_seed(runs, group, key).values())
            if not members:
                continue
            epochs = np.asarray([row["epoch"] for row in members[0]["curve"]])
            for axes, metric in zip(row_axes, ("clean", "combined"), strict=True):
                values = [[row[f"{metric}_gradient_norm"] for row in m["curve"]] for m in members]
                if any(v is None for curve in values for v in curve):
                    continue  # a trainer that does not log the combined norm yet
                _band(axes, epochs, np.asarray(values, np.float64), label)
        for axes, title in zip(row_axes, ("clean mini-batch ‖g1‖", "combined ‖g‖"), strict=True):
            axes.set_title(f"{group}: {title}")
            axes.set_xlabel("epoch")
            axes.set_yscale("log")
            if axes.lines:
                axes.legend(fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_figure3(runs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Figure 3 at one r: per epoch ‖g1‖, ‖g2‖, the (1 − α) term's norm and the combined
    gradient's, each setting's mean over seeds with a 95 % band, on a log scale (α = 1's term
    is zero, so that panel leaves it out)."""
    figure = Figure(figsize=(20, 4), layout="constrained")
    panels = dict(zip(FIGURE3_NORMS, figure.subplots(1, len(FIGURE3_NORMS)), strict=True))
    for index, members in enumerate(_settings(runs).values()):
        epochs = np.asarray([row["epoch"] for row in members[0]["curve"]])
        series = [figure3_series(run) for run in members]
        # One colour per setting in every panel; markers: a one-epoch run is a point.
        style = {"color": f"C{index}", "marker": ".", "markersize": 3}
        for key, axes in panels.items():
            values = [s[key] for s in series]
            if any(v is None for curve in values for v in curve) or not np.any(values):
                continue  # not logged (an older trainer), or zero (α = 1's term)
            _band(axes, epochs, np.asarray(values, np.float64), members[0]["label"], **style)
    r = ", ".join(sorted({f"{run['r']:g}" for run in runs}))
    for key, axes in panels.items():
        axes.set_title(f"{runs[0]['group']}, r = {r}: {FIGURE3_NORMS[key]}")
        axes.set_xlabel("epoch")
        axes.set_yscale("log")
    panels["clean_gradient_norm"].legend(fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_adam(results: dict[str, Any], labels: dict[str, str], path: Path) -> Path:
    """Adam's √ν̂ and step size lr/(√ν̂ + ε) over the first steps: mean and CV over parameters,
    mean over seeds with a 95 % band, one row per width."""
    runs = results["runs"]
    groups = _groups(runs)
    figure = Figure(figsize=(18, 3.6 * len(groups)), layout="constrained")
    grid = np.atleast_2d(figure.subplots(len(groups), len(ADAM_STATS), squeeze=False))
    for row_axes, group in zip(grid, groups, strict=True):
        for key, label in labels.items():
            members = [m for m in by_seed(runs, group, key).values() if m.get("adam")]
            if not members:
                continue
            length = min(len(m["adam"]) for m in members)
            steps = np.arange(1, length + 1)
            for axes, stat in zip(row_axes, ADAM_STATS, strict=True):
                # JSON holds an undefined value (the CV while lr = 0 at step 1) as null.
                values = np.asarray(
                    [[row[stat] for row in m["adam"][:length]] for m in members], np.float64
                )
                _band(axes, steps, values, label)
        for axes, stat in zip(row_axes, ADAM_STATS, strict=True):
            axes.set_title(f"{group}: {stat.replace('_', ' ')}")
            axes.set_xlabel("step")
            axes.set_yscale("log")
        row_axes[0].legend(fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def write_report(
    results: dict[str, Any],
    out: Path,
    *,
    declared: Sequence[Any],
    labels: Labels,
    confirmatory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tables (markdown), contrasts, correlations, the gate and figures of the parts run.

    ``confirmatory`` (the confirmatory scale's ``holm_on``, ``family_size``, ``alphas`` of its
    variants, ``lr_grid`` and ``budget_hours``, both shards'): one Holm family on the t-test's
    p with the test-signal bootstrap, its tables in λ, flatness within and between variants,
    the verdicts and what the study cost."""
    if confirmatory:
        family = {"holm_on": confirmatory["holm_on"], "family_size": confirmatory["family_size"]}
        rows = contrasts(results, declared, labels, out=out, **family)
    else:
        rows = contrasts(results, declared, labels)
    sections, figures, report = [], [], {"contrasts": rows}
    report["correlations"] = {}
    for part in ("icml2022", "icml2024"):
        if part not in results:
            continue
        sections.append(f"## {part}\n\n{variant_table(results[part], labels[part])}\n")
        report["correlations"][part] = correlations(results[part])
        figures.append(plot_test_errors(results[part], labels[part], out / f"{part}_errors.png"))
        if confirmatory:
            plain = "sgd" if part == "icml2022" else "adam"
            report.setdefault("flatness", {})[part] = flatness(results[part], plain)
            sections.append(
                "What flatness ranks (descriptive; Spearman's ρ with test error, permutation p "
                "uncorrected)\n\n" + flatness_table(report["flatness"][part], labels[part]) + "\n"
            )
        if part == "icml2022":
            report["gate"] = gate(results[part])
            if confirmatory and results[part].get("tuning"):
                sections += confirmatory_sections(results[part], labels[part], confirmatory)
            elif results[part].get("tuning"):
                sections.append(
                    "Validation error (%) of the tuning runs, by r\n\n"
                    + tuning_table(results[part], labels[part])
                    + "\n"
                )
            sections.append(
                "Figure 3's gradient norms at the last epoch (mean over seeds)\n\n"
                + gradient_norm_table(results[part], labels[part])
                + "\n"
            )
            figures.append(
                plot_gradient_norms(
                    results[part], labels[part], out / "icml2022_gradient_norms.png"
                )
            )
            if results[part].get("figure3"):
                sections.append(figure3_section(results[part]["figure3"]))
                figures.append(plot_figure3(results[part]["figure3"], out / "icml2022_figure3.png"))
        else:
            if confirmatory and results[part].get("tuning"):
                sections += confirmatory_sections(results[part], labels[part], confirmatory)
            figures.append(
                plot_adam(results[part], labels[part], out / "icml2024_adam_moments.png")
            )
    if confirmatory:
        report["cost"] = cost(results)
        sections.append(
            "What the study cost (each run's recorded cpu_seconds; descriptive)\n\n"
            + cost_table(report["cost"], confirmatory["budget_hours"])
            + "\n"
        )
    if rows and confirmatory:
        chosen = {
            name: setting
            for part in ("icml2022", "icml2024")
            for name, setting in results.get(part, {}).get("chosen", {}).items()
        }
        every_label = {k: v for part_labels in labels.values() for k, v in part_labels.items()}
        sections.append(
            f"## The confirmatory family (paired by seed; Holm over its "
            f"{confirmatory['family_size']} rows on the t-test's p, a row not run yet counted "
            f"at p = 1)\n\n{confirmatory_table(rows)}\n\nDecoupled GR (the plan's row 13) "
            "joined the family before shard 2 started.\n\nVerdicts, worded by the rules fixed "
            "before any error was read (`gnp/study/wording.py`)\n\n"
            + wording.verdicts(rows, chosen, every_label)
            + "\n"
        )
    elif rows:
        sections.append(
            "## Declared contrasts (paired by seed; Holm over all rows)\n\n"
            + contrast_table(rows)
            + "\n"
        )
        figures.append(plot_contrasts(rows, out / "contrasts.png"))
    if report.get("gate"):
        result = report["gate"]
        values = ", ".join(f"{100 * v:.2f}" for v in result["flipped_train_error_rate"])
        verdict = (
            "passed"
            if result["passed"]
            # The smoke mode's tiny runs check the machinery; memorizing needs the real scale.
            else "not reached, as expected of the smoke mode's tiny runs"
            if str(results.get("mode", "")).endswith("smoke")
            else "FAILED: widen the model or train longer"
        )
        sections.append(
            f"Gate ({result['group']}): SGD's train error on the flipped labels, per seed "
            f"(%): {values}; must stay under {100 * GATE_THRESHOLD:g} %: {verdict}.\n"
        )
    report["markdown"] = "\n".join(sections)
    report["figures"] = [str(path) for path in figures]
    (out / "results.md").write_text(report["markdown"])
    return json_ready(report)

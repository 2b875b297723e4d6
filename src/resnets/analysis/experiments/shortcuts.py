"""shortcuts (He et al. 2016b, "Identity Mappings in Deep Residual Networks", Table 1 and Fig. 2): one
ResNet trained with each kind of shortcut, the `skip=` values of one block (resnets.blocks): identity,
constant scaling (λ = 0.5 on both paths), exclusive gating (highway), shortcut-only gating, a 1×1
conv shortcut (the seed's learned skip matrix) and a dropout shortcut (p = 0.5).

The paper's claim: the identity shortcut is best; every shortcut that multiplies the signal (scaling,
gating, dropout) or replaces it (1×1 conv) hampers information propagation, and the more so the deeper
the net, because the factors compound over the blocks (λ^L for constant scaling). A shallower net than
their ResNet-110 has fewer factors to compound, so the ordering should survive with smaller gaps.
"""

from __future__ import annotations

import statistics
from itertools import combinations

from resnets.analysis.experiments.common import LINEAR_WARMUP, Settings, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Sweep, variants
from resnets.analysis.report import Report, change_beyond_spread, environment, markdown_table, pm

# He et al. 2016b, Table 1: ResNet-110 on CIFAR-10, test error (%); dropout "fail" (above 20%).
PAPER_ERROR = {
    "identity": 6.61,
    "scaled": 12.35,
    "gated": 8.70,
    "shortcut_gated": 6.91,
    "projection": 12.22,
    "dropout": None,  # "fail"
}
GATE_BIAS = -6.0  # the table's best gate bias for both gatings
LABELS = {
    "identity": "identity (original)",
    "scaled": "constant scaling, λ = 0.5",
    "gated": "exclusive gating, b_g = −6",
    "shortcut_gated": "shortcut-only gating, b_g = −6",
    "projection": "1×1 conv shortcut",
    "dropout": "dropout shortcut, p = 0.5",
}


def paper_error(kind: str) -> float:
    """The table's error of a kind, a failed run (None) ranked last."""
    value = PAPER_ERROR[kind]
    return float("inf") if value is None else value


def net_kwargs(kind: str) -> dict:
    """The model kwargs of a kind: its `skip`, and the table's gate bias for the gatings."""
    return {"skip": kind, **({"gate_bias": GATE_BIAS} if kind in ("gated", "shortcut_gated") else {})}


@experiment("shortcuts", "the kinds of shortcut of He et al. 2016b, Table 1: identity is best")
def run(settings: Settings) -> Report:
    """Train the ResNet with each shortcut per seed; rank the kinds by error against the paper's ranking."""
    data = settings.data or "cifar10"
    depth = (settings.depths or [20 if settings.quick else 110])[0]
    epochs = settings.pick("budget", 1, 164)
    seeds = seeds_for(settings, quick=(0, 1, 2))
    sweep = Sweep(
        settings,
        variants("resnet{d}", depth, {kind: net_kwargs(kind) for kind in PAPER_ERROR}),
        seeds,
        recipe="he2016-cifar",
        data=data,
        epochs=epochs,
        overrides=LINEAR_WARMUP,
        may_diverge=True,
    )
    errors = {
        key.removesuffix(str(depth)): [r.test_error for r in runs] for key, runs in sweep.train_all().items()
    }
    rows = [
        [LABELS[kind], "fail (> 20)" if PAPER_ERROR[kind] is None else f"{PAPER_ERROR[kind]:.2f}", pm(e, 100)]
        for kind, e in errors.items()
    ]
    return Report(
        name="shortcuts",
        title=f"The kinds of shortcut on resnet{depth} (He et al. 2016b, Table 1)",
        command=settings.command,
        settings={"data": data, "depth": depth, "epochs": epochs, "recipe": "he2016-cifar", "seeds": seeds},
        results={"errors": errors, "paper": PAPER_ERROR, "agreeing_pairs": agreeing_pairs(errors)},
        table=markdown_table(
            ["shortcut", "He et al. ResNet-110 error (%)", f"our resnet{depth} error (%)"], rows
        ),
        verdict=shortcuts_verdict(errors, depth),
        notes=[
            f"Every kind trains with he2016-cifar over {epochs:g} epoch(s) behind the depth experiments' "
            "200-step linear warm-up; the paper trains ResNet-110 for 64k iterations. A diverged run counts "
            'as 100% error. The 1×1 conv shortcut is `skip="projection"` (a conv and a batch norm on '
            "every block's shortcut).",
        ],
        environment=environment(settings.torch_device, sweep.runs),
    )


def agreeing_pairs(errors: dict[str, list[float]]) -> tuple[int, int]:
    """(pairs of kinds our mean errors order as the paper does, pairs the paper orders at all)."""
    mean = {k: statistics.fmean(v) for k, v in errors.items()}
    pairs = [(a, b) for a, b in combinations(errors, 2) if paper_error(a) != paper_error(b)]
    agree = sum((paper_error(a) < paper_error(b)) == (mean[a] < mean[b]) for a, b in pairs)
    return agree, len(pairs)


def shortcuts_verdict(errors: dict[str, list[float]], depth: int) -> str:
    """One sentence: whether identity is best beyond the seed spread against every other kind, and how
    much of the paper's ordering our errors keep."""
    others = [k for k in errors if k != "identity"]
    beaten = [k for k in others if change_beyond_spread(errors["identity"], errors[k]) > 0]
    agree, total = agreeing_pairs(errors)
    mean = {k: statistics.fmean(v) for k, v in errors.items()}
    best = min(mean, key=mean.get)  # type: ignore[arg-type]
    said = (
        f"On resnet{depth} the identity shortcut ({100 * mean['identity']:.2f}% error) beats "
        f"{len(beaten)} of the {len(others)} other kinds beyond the seed spread"
        + (f" ({', '.join(beaten)})" if beaten else "")
        + f", and our errors order {agree} of the {total} pairs of kinds as He et al.'s Table 1 does: "
    )
    if best == "identity" and len(beaten) == len(others):
        return said + "identity is best, as the paper found."
    return said + f"the best here is {LABELS[best]} (the paper: identity)."

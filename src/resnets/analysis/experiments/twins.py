"""Trained twins for the experiments that study a trained net (lesion, landscape): the residual net and
its plain twin at one depth, from resnets' shipped CIFAR-10 weights where both are shipped (trained to
within a point of their full accuracy), else trained here per seed for the experiment's budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from resnets.analysis.experiments.common import Settings, dataset_splits
from resnets.analysis.experiments.sweep import Sweep, grid
from resnets.data import Normalize


@dataclass
class TrainedNet:
    """One trained net and how to feed it: the statistics it was trained to see."""

    kind: str  # "residual" or "plain"
    model: torch.nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label: str  # "resnet20.cifar10 (shipped)" or "resnet20, seed 0"
    test_accuracy: float | None = None  # as measured when it was made

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images as this net was trained to see them."""
        return Normalize(self.mean, self.std)(images)


@dataclass
class Twins:
    """The nets of each kind (one per seed, or the one shipped), the runs that trained them (none for
    shipped weights) and what the report's settings say about where they came from."""

    nets: dict[str, list[TrainedNet]]
    runs: list = field(default_factory=list)
    source: dict = field(default_factory=dict)

    @property
    def shipped(self) -> bool:
        """Whether the nets are resnets' shipped weights (one per kind)."""
        return self.source.get("nets") == "shipped"

    def note(self) -> str:
        """One sentence for the report: which nets, and what that means for the spread."""
        if self.shipped:
            said = ", ".join(
                f"{n.label} ({n.test_accuracy:.2%} test accuracy)"
                for nets in self.nets.values()
                for n in nets
            )
            return (
                f"Nets: the shipped weights {said}: one trained net per kind, so there is no seed-to-seed "
                "spread of training in these numbers."
            )
        return (
            f"Nets trained here: {self.source['epochs']} epoch(s) of {self.source['recipe']} per seed; the "
            "papers' numbers are expected only where the nets reach their accuracy."
        )


def shipped_twins(templates: Mapping[str, str], depth: int, data: str) -> dict[str, str] | None:
    """{kind: shipped weights name} ("resnet20.cifar10", "plain20.cifar10") for both nets at `depth`,
    or None where resnets does not ship both."""
    from resnets.weights import weights_for

    names = {}
    for kind, template in templates.items():
        entry = next((w for w in weights_for(template.format(d=depth)) if w.tag == data), None)
        if entry is None:
            return None
        names[kind] = entry.name
    return names


def trained_twins(
    settings: Settings,
    templates: Mapping[str, str],
    depth: int,
    data: str,
    seeds: Sequence[int],
    recipe: str,
    epochs: float,
) -> Twins:
    """The shipped twins when both exist and no --budget asks for training, else each seed's twins
    trained here with `recipe` for `epochs`."""
    shipped = shipped_twins(templates, depth, data) if settings.budget is None else None
    if shipped is not None:
        from resnets.models.factory import create_model
        from resnets.weights import find_weights

        nets = {}
        for kind, name in shipped.items():
            entry = find_weights(None, name)
            model = create_model(entry.model, weights=entry.tag).to(settings.torch_device).eval()
            nets[kind] = [TrainedNet(kind, model, entry.mean, entry.std, f"{name}", entry.test_accuracy)]
        return Twins(nets, [], {"nets": "shipped", "weights": list(shipped.values())})

    sweep = Sweep(
        settings,
        grid(templates, [depth]),
        list(seeds),
        recipe,
        data,
        epochs=epochs,
        run_name="{model}-s{seed}",
    )
    splits = dataset_splits(data, settings.data_dir)
    nets = {kind: [] for kind in templates}
    for net, seed in sweep.jobs():
        result = sweep.train(net, seed).result
        nets[net.kind].append(
            TrainedNet(
                net.kind,
                result.model.eval(),
                splits.mean,
                splits.std,
                f"{net.model}, seed {seed}",
                result.summary.get("test_accuracy"),
            )
        )
    return Twins(
        nets, sweep.runs, {"nets": "trained", "recipe": recipe, "epochs": epochs, "seeds": list(seeds)}
    )

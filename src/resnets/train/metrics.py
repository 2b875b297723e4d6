"""Classification metrics from accumulated predictions."""

from __future__ import annotations

import torch


class ClassificationMeter:
    """Accumulates loss, top-1/top-5 hits and the confusion matrix on the device; syncs on `compute`."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.top1 = torch.zeros((), dtype=torch.int64, device=device)
        self.top5 = torch.zeros((), dtype=torch.int64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """Add a batch: raw logits, integer labels and the batch's summed loss."""
        self.loss_sum += loss_sum.detach().to(torch.float64)
        k = min(5, logits.shape[1])
        topk = logits.detach().topk(k, dim=1).indices
        hits = topk == labels[:, None]
        self.top1 += hits[:, 0].sum()
        self.top5 += hits.any(dim=1).sum()
        self.confusion += torch.bincount(
            labels * self.num_classes + topk[:, 0], minlength=self.num_classes**2
        ).view(self.num_classes, self.num_classes)
        self.count += len(labels)

    def compute(self, per_class: bool = False) -> dict[str, object]:
        """loss, accuracy, top5_accuracy (fractions), and optionally per-class accuracy and confusion."""
        n = max(1, self.count)
        out: dict[str, object] = {
            "loss": float(self.loss_sum) / n,
            "accuracy": int(self.top1) / n,
            "top5_accuracy": int(self.top5) / n,
            "count": self.count,
        }
        if per_class:
            conf = self.confusion.cpu()
            totals = conf.sum(1).clamp_min(1)
            out["per_class_accuracy"] = (conf.diag() / totals).tolist()
            out["confusion_matrix"] = conf.tolist()  # rows: true class, columns: predicted
        return out

"""What training says while it runs and when it ends: the epoch line, the
closing line, the best epoch's metrics, and the memory figure per rank."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource  # Unix only: imported where a CPU run needs it

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def epoch_line(
    record: Mapping[str, float], epochs: int, best_score: float, best_epoch: int
) -> str:
    """One console line per epoch: ``epoch 3/45  loss 0.1234  val 28.31 dB / SSIM 0.912  best 28.31 dB (3)  12.3 samples/s``."""
    parts = [
        f"epoch {int(record['epoch'])}/{epochs}",
        f"loss {record['train/loss']:.4f}",
    ]
    if "val/psnr_3d" in record:
        parts.append(
            f"val {record['val/psnr_3d']:.2f} dB / SSIM {record['val/ssim_3d']:.3f}"
        )
    if best_epoch:
        parts.append(f"best {best_score:.2f} dB ({best_epoch})")
    parts.append(f"{record['train/samples_per_s']:.1f} samples/s")
    return "  ".join(parts)


def best_epoch_metrics(
    history: list[dict[str, float]], best_epoch: int
) -> dict[str, float]:
    """``best/epoch`` and the validation metrics of that epoch as ``best/val_*``
    (e.g. ``best/val_psnr_3d``); empty when no epoch was validated."""
    record = next((r for r in history if r["epoch"] == best_epoch), None)
    if not best_epoch or record is None:
        return {}
    return {"best/epoch": float(best_epoch)} | {
        f"best/{key.replace('/', '_')}": value
        for key, value in record.items()
        if key.startswith("val/")
    }


def closing_line(best: Mapping[str, float], epochs: int) -> str:
    """The log line that ends training: which epoch's weights are kept and why."""
    if not best:
        return f"training done ({epochs} epochs): no epoch was validated"
    return (
        f"training done: kept epoch {int(best['best/epoch'])}/{epochs}, the best "
        f"on validation ({best['best/val_psnr_3d']:.2f} dB / SSIM "
        f"{best['best/val_ssim_3d']:.3f})"
    )

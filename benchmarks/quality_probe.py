"""Equal-wall-clock quality probe: a model variant trained for T seconds on the
project's own data (``make run``'s phantoms), scored on its test split.

    python benchmarks/quality_probe.py --model small --views 2 --seconds 150
    python benchmarks/quality_probe.py --model bp_unet --views 8 --loss l1_ssim

Reads data/03_primary/ct, data/04_feature/drr and data/05_model_input/patient_split.json
(run ``kedro run --pipelines drr`` and ``--pipelines split`` first). AdamW, linear
warm-up then cosine decay over the time budget, batch 2, no augmentation. Prints
one JSON line with the test means (the project's metric definitions).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ct_pipeline.ct import load_ct
from ct_pipeline.datasets.drrset import DRRSetDataset
from ct_pipeline.drr.geometry import default_angles
from ct_pipeline.inference import ModelBundle, Refinement, refine
from ct_pipeline.losses import ReconstructionLoss
from ct_pipeline.metrics import HU_WINDOW, evaluate_volume, psnr_3d, to_hu
from ct_pipeline.models import build_model
from ct_pipeline.training.augment import Augmentation
from ct_pipeline.training.data import ReconstructionDataset

LOSSES = {
    "six": None,
    "l1_ssim": {
        "l1": 1.0,
        "ssim": 0.2,
        "perceptual": 0.0,
        "edge": 0.0,
        "deep_supervision": 0.0,
        "frequency": 0.0,
    },
}


def load(data: Path, ids: list[str]):
    volumes = {p: load_ct(data / "03_primary/ct" / f"{p}.nii.gz") for p in ids}
    drrs = {
        p: DRRSetDataset(str(data / "04_feature/drr" / f"{p}.npz")).load() for p in ids
    }
    return volumes, drrs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train this many steps instead of --seconds (the schedule runs over "
        "steps; immune to other load on the machine)",
    )
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--wd", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--loss", default="six")
    parser.add_argument(
        "--weights", default="{}", help="JSON loss-weight overrides on top of --loss"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", default="{}", help="JSON ModelConfig overrides")
    parser.add_argument("--data", default="data")
    parser.add_argument("--rotate-deg", type=float, default=0.0)
    parser.add_argument("--shift-mm", type=float, default=0.0)
    parser.add_argument(
        "--mirror", type=float, default=0.0, help="probability of a left-right mirror"
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="also score an exponential moving average of the weights (this decay)",
    )
    parser.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help="also score the test patients after this many refinement steps "
        "(ct_pipeline.inference.Refinement, lr 0.01)",
    )
    parser.add_argument(
        "--refine-prior", type=float, default=3.0, help="the refinement's prior_weight"
    )
    parser.add_argument(
        "--refine-tv",
        type=float,
        default=0.03,
        help="the refinement's tv_weight (0.03 as shipped)",
    )
    parser.add_argument(
        "--save",
        default=None,
        help="also write the trained weights as a model bundle here (with the "
        "refinement scored), e.g. for benchmarks/real_ct_check.py",
    )
    parser.add_argument(
        "--score-val",
        action="store_true",
        help="also score the validation patients (for choosing between variants)",
    )
    parser.add_argument(
        "--score-train",
        action="store_true",
        help="also score the training patients (the generalisation gap)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)

    data = Path(args.data)
    split = json.loads((data / "05_model_input/patient_split.json").read_text())
    angles = default_angles(args.views)
    vols, drrs = load(data, split["train"] + split["val"] + split["test"])
    augmentation = Augmentation(args.rotate_deg, args.shift_mm, args.mirror)
    train = ReconstructionDataset(
        vols, drrs, split["train"], angles, augmentation=augmentation, seed=args.seed
    )
    test = ReconstructionDataset(vols, drrs, split["test"], angles)
    torch.manual_seed(args.seed)
    model = build_model(
        args.model,
        train.geometry,
        train.grid,
        args.views,
        **json.loads(args.override),
    )
    n_params = sum(p.numel() for p in model.parameters())
    weights = {**(LOSSES[args.loss] or {}), **json.loads(args.weights)}
    loss_fn = ReconstructionLoss(weights=weights)
    opt = torch.optim.AdamW(
        model.parameters(), lr=args.lr, weight_decay=args.wd, fused=True
    )
    angle_t = train.angles_tensor()
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema)
    )
    gen = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    steps, elapsed = 0, 0.0
    model.train()
    epoch = 0

    def progress() -> float:
        return steps / args.steps if args.steps else elapsed / args.seconds

    while progress() < 1:
        epoch += 1
        train.set_epoch(epoch)
        order = torch.randperm(len(train), generator=gen).tolist()
        for start in range(0, len(order) - args.batch + 1, args.batch):
            elapsed = time.perf_counter() - started
            frac = progress()
            if frac >= 1:
                break
            # Linear warm-up over the first 3 %, then cosine decay to 0.
            factor = (
                frac / 0.03 if frac < 0.03 else 0.5 * (1 + math.cos(math.pi * frac))
            )
            for group in opt.param_groups:
                group["lr"] = args.lr * max(factor, 1e-3)
            batch = [train[i] for i in order[start : start + args.batch]]
            views = torch.stack([b[0] for b in batch])
            target = torch.stack([b[1] for b in batch])
            out = model(views, angle_t)
            total, _ = loss_fn(out, target)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if args.ema:
                ema.update_parameters(model)
            steps += 1
    train_s = time.perf_counter() - started
    scores = {"": score(model, test, angle_t)}
    if args.ema:
        scores["ema_"] = score(ema.module, test, angle_t)
    refinement = Refinement(args.refine_steps, 0.01, args.refine_prior, args.refine_tv)

    def refined(patient, unit):
        return refine_patient(patient, unit, vols, drrs, angles, refinement)

    if args.refine_steps:
        scores["refined_"] = score(model, test, angle_t, refined)
    if args.score_val:
        val = ReconstructionDataset(vols, drrs, split["val"], angles)
        scores["val_"] = score(model, val, angle_t)
        if args.refine_steps:
            scores["val_refined_"] = score(model, val, angle_t, refined)
    if args.score_train:
        plain = ReconstructionDataset(vols, drrs, split["train"], angles)
        scores["train_"] = score(model, plain, angle_t)
    if args.save:
        ModelBundle(
            state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
            model=args.model,
            model_overrides=json.loads(args.override),
            geometry=train.geometry,
            grid=train.grid,
            angles_deg=tuple(angles),
            hu_window=HU_WINDOW,
            refinement=refinement,
            split={part: tuple(ids) for part, ids in split.items()},
        ).save(args.save)
    means = {
        prefix + k: v for prefix, values in scores.items() for k, v in values.items()
    }
    print(
        json.dumps(
            {
                "model": args.model,
                "override": json.loads(args.override),
                "views": args.views,
                "loss": args.loss,
                "weights": json.loads(args.weights),
                "augment": augmentation.to_dict(),
                "lr": args.lr,
                "seed": args.seed,
                "steps": steps,
                "train_s": round(train_s, 1),
                "params": n_params,
                **{k: round(v, 3) for k, v in means.items()},
            }
        )
    )


def refine_patient(patient, unit, vols, drrs, angles, refinement):
    """The project's refinement of one patient's network volume."""
    return refine(
        unit, drrs[patient].select(angles), vols[patient].affine, refinement, HU_WINDOW
    )


def score(
    model: torch.nn.Module,
    data: ReconstructionDataset,
    angle_t: torch.Tensor,
    after=None,
) -> dict[str, float]:
    """Mean metrics of ``model`` (then ``after(patient, volume)``) over ``data``."""
    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(len(data)):
            views, target = data[i]
            pred = model(views[None], angle_t)["volume"][0, 0]
            if after is not None:
                pred = after(data.patient_ids[i], pred)
            m = evaluate_volume(
                pred.numpy(), target[0].numpy(), to_hu(target[0].numpy())
            )
            m["psnr_3d_check"] = psnr_3d(pred, target[0])
            rows.append(m)
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


if __name__ == "__main__":
    main()

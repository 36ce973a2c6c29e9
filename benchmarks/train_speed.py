"""World-model training speed per stage, side by side: precision (fp32 / bf16) × layout (1 rank / N ranks).

Each variant trains the same preset on the same data with the same seed for ``--steps`` steps per
stage, and the table gives each stage's seconds per step and its speed-up over fp32 on one rank,
all measured in one run on one machine. It is the evidence behind ``--precision auto`` and
``--ranks auto`` (wm_gym/device.py): a path is only chosen automatically where it is faster here.

    wm-gym collect --env wall --episodes 300 --out data/wall-speed --seed 5
    python benchmarks/train_speed.py --data data/wall-speed --steps 60
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from wm_gym.train.world_model import TrainConfig, train_world_model

STAGES = ("encoder", "latent", "flow", "controller")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a collected dataset (wm-gym collect)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=60, help="steps per stage (the first 10 %% are warm-up)")
    parser.add_argument("--variants", nargs="+", default=["fp32:1", "bf16:1", "fp32:auto", "bf16:auto"],
                        help="PRECISION:RANKS pairs")
    parser.add_argument("--out", default="out/train_speed.json")
    args = parser.parse_args()

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        for variant in args.variants:
            precision, ranks = variant.split(":")
            config = TrainConfig(data=data, out=str(Path(tmp) / f"{precision}-{ranks}.pt"), preset=args.preset,
                                 steps=args.steps, precision=precision, ranks=ranks if ranks == "auto" else int(ranks),
                                 device="cpu", progress=False, log_dir=str(Path(tmp) / "tb" / variant))
            info = train_world_model(config).meta.train_info
            rows[variant] = {"world_size": info["world_size"], "threads_per_rank": info["threads_per_rank"],
                             "seconds_per_step": {s: info["stage_seconds"][s] / args.steps for s in STAGES},
                             "features_seconds": info["stage_seconds"].get("features")}
            print(variant, json.dumps(rows[variant]), flush=True)
    base = rows[args.variants[0]]["seconds_per_step"]
    for row in rows.values():
        row["speedup"] = {s: round(base[s] / row["seconds_per_step"][s], 2) for s in STAGES}
        row["speedup_total"] = round(sum(base.values()) / sum(row["seconds_per_step"].values()), 2)
    print(f"\n{'variant':<12}" + "".join(f"{s:>12}" for s in STAGES) + f"{'all':>8}")
    for name, row in rows.items():
        print(f"{name:<12}" + "".join(f"{row['speedup'][s]:>11.2f}x" for s in STAGES) + f"{row['speedup_total']:>7.2f}x")
    report = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "args": vars(args), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

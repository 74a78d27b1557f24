"""The planned run against the shipped (or a hand-written) config, at the same wall budget, on the same hold-out.

For each data set: `terraseg plan` from the data alone (it times the planned network here), then both
configs train with `train.max_minutes=M`. So that both learn from and are scored on the same data, the
plan takes the hand config's classes and sources (`data.train`, `data.val`, `data.val_fraction`,
`data.test`; a folder source restricted by `include` is planned from those images only); with the
same scenes, classes and seed, the class-aware hold-out holds out the same
blocks or images for both. Everything else (window, normalisation, batch, augmentation, sampling,
loss, model, optimiser, epochs) is the plan's.
Printed: the best validation score (`val/score`: positive-class IoU for binary tasks, else mIoU over the
classes present; classification: accuracy), the labelled pixels behind it, the wall time of each run,
and the difference. Where the hold-out is small (SAT-6: 24 images, one moving the accuracy by 0.042; magnetic
tiles; LoveDA; New Brunswick; Sen1Floods11; SpaceNet Vegas: one scene) the runs repeat with several training
seeds (``SEEDS``; the same hold-out), and the means are printed. Run it with nothing else on the CPU.

Example:
    .venv/bin/python benchmarks/plan_vs_config.py --minutes 3                 # every data set
    .venv/bin/python benchmarks/plan_vs_config.py --minutes 3 --only vegas loveda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from terraseg.devices import cpu_model  # noqa: E402
from terraseg.settings import data_root  # noqa: E402

D = data_root()
VEGAS = D / "spacenet" / "sn2-vegas"
VSTEM = "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03"
NB = D / "new-brunswick-landcover"

# name -> (plan inputs, labels, attribute, hand config: a shipped config path or a mapping)
DATASETS = {
    "massachusetts": (
        [str(D / "massachusetts-buildings" / "22978945_15.tif")],
        str(D / "massachusetts-buildings" / "massachusetts_buildings.zip"),
        None,
        ROOT / "configs" / "massachusetts-buildings.yaml",
    ),
    "magnetic-tiles": ([str(D / "magnetic-tiles")], None, None, ROOT / "configs" / "magnetic-tiles.yaml"),
    "intel-scenes": ([str(D / "intel-scenes")], None, None, ROOT / "configs" / "intel-scenes.yaml"),
    "loveda": ([str(D / "loveda-samples")], None, None, ROOT / "configs" / "loveda.yaml"),
    "sen1floods11": (
        [str(D / "sen1floods11" / "S2" / "Spain_7370579_S2Hand.tif")],
        str(D / "sen1floods11" / "Labels" / "Spain_7370579_LabelHand.tif"),
        None,
        ROOT / "configs" / "sen1floods11-unet.yaml",
    ),
    "vegas-4band": (
        ["{stacked}"],
        str(VEGAS / f"{VSTEM}.gpkg"),
        None,
        {
            "name": "vegas-hand",
            "classes": [{"name": "background"}, {"name": "building"}],
            "data": {
                "train": [{"kind": "scene", "image": "{stacked}", "vector": {"path": str(VEGAS / f"{VSTEM}.gpkg")}}],
                "window": 256,
                "batch_size": 8,
                "samples_per_epoch": 128,
                "normalization": {"method": "percentile"},
            },
            "model": {"arch": "unet", "encoder": "resnet18"},
            "train": {"max_epochs": 40, "patience": 10},
        },
    ),
    "new-brunswick": (
        [str(NB / "23322E759967N_clipped_1m_1of2.tif"), str(NB / "23322E759967N_clipped_1m_2of2.tif")],
        str(NB / "BakerLake_2017_clipped.gpkg"),
        "Quatreclasses",
        "{nb_hand}",
    ),
    "sat6": ([str(D / "sat6" / "classification_data.zip")], None, None, ROOT / "configs" / "sat6.yaml"),
}


# a small hold-out moves a run's score between training seeds: such data sets run with several seeds (the same
# hold-out) and print the mean score and wall time. SAT-6: 24 validation images, magnetic tiles: 63 (one image moves
# the score by 1/n); LoveDA: 5 images; New Brunswick and Sen1Floods11: about 52 thousand pixels of blocks of one or two
# scenes; SpaceNet Vegas: 35-38 thousand pixels of one scene, where 2-minute runs moved by up to 0.4 IoU between seeds
# (docs/benchmarks.md)
SEEDS = {"sat6": 3, "magnetic-tiles": 3, "loveda": 3, "new-brunswick": 3, "sen1floods11": 3, "vegas-4band": 6}


def _run(args: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run([str(Path(sys.executable).with_name("terraseg")), "-q", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(
            (r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout).strip() else str(r.returncode)
        )
    return time.monotonic() - t0, r.stdout


def _score(bundle: Path) -> tuple[float | None, float | None]:
    """Best validation score and the labelled pixels (classification: images) behind it."""
    from terraseg.bundle import Bundle

    m = Bundle.load(bundle).manifest
    v = m.metrics.get("validation", {})
    score = v.get("val/score", v.get("val/accuracy"))
    return score, v.get("val/pixels", len((m.split or {}).get("files", [])))


def _nb_hand(plan_raw: dict) -> dict:
    """A hand config for New Brunswick: the plan's sources and classes, the loveda config's model and schedule."""
    return {
        "name": "nb-hand",
        "classes": plan_raw["classes"],
        "data": {"train": plan_raw["data"]["train"], "window": 256, "batch_size": 8, "samples_per_epoch": 128},
        "model": {"arch": "deeplabv3plus", "encoder": "resnet34"},
        "optimizer": {"name": "adamw", "lr": 0.001, "scheduler": "onecycle"},
        "train": {"max_epochs": 10, "patience": 5},
    }


def _set(raw: dict, dotted: str) -> None:
    """Apply one ``KEY=VALUE`` (dotted key, YAML value) to a config mapping."""
    key, _, value = dotted.partition("=")
    *parents, last = key.split(".")
    node = raw
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def one(
    name: str,
    minutes: float,
    tmp: Path,
    plan_sets: tuple[str, ...] = (),
    sides: tuple[str, ...] = ("plan", "config"),
    seeds: int | None = None,
    first_seed: int = 0,
) -> dict:
    inputs, labels, attribute, hand = DATASETS[name]
    if "{stacked}" in inputs:
        stacked = tmp / "vegas-rgbn.tif"
        _run(["stack", *[str(VEGAS / f"{VSTEM}-{b}.tif") for b in "RGBN"], "--out", str(stacked)])
        inputs = [str(stacked)]
        hand = json.loads(json.dumps(hand).replace("{stacked}", str(stacked)))
    if isinstance(hand, Path):  # a folder source restricted by `include`: the plan is made from the same images
        src0 = (yaml.safe_load(hand.read_text())["data"]["train"] or [{}])[0]
        if src0.get("kind") == "folder" and src0.get("include"):
            same = tmp / Path(src0["root"]).name
            same.mkdir()
            for sub in src0["include"]:
                (same / sub).symlink_to(D / src0["root"] / sub)
            inputs = [str(same)]
    plan_path = tmp / f"{name}-plan.yaml"
    args = ["plan", *inputs, "--minutes", str(minutes), "--name", f"{name}-plan", "--out", str(plan_path)]
    args += ["--labels", labels] if labels else []
    args += ["--attribute", attribute] if attribute else []
    plan_s, _ = _run(args)
    plan = yaml.safe_load(plan_path.read_text())
    hand_raw = (
        _nb_hand(plan) if hand == "{nb_hand}" else (yaml.safe_load(Path(hand).read_text()) if isinstance(hand, Path) else hand)
    )
    hand_raw.setdefault("data", {})["data_root"] = str(D)
    # the same data and hold-out for both: the hand config's classes and sources; the plan's rules decide the rest
    plan["classes"] = hand_raw["classes"]
    for k in ("ignore_index", "task"):
        if k in hand_raw:
            plan[k] = hand_raw[k]
    for k in ("train", "val", "val_fraction", "test"):
        if k in hand_raw["data"]:
            plan["data"][k] = hand_raw["data"][k]
    plan["data"]["data_root"] = str(D)
    for dotted in plan_sets:  # a rule under test: the plan with one choice changed
        _set(plan, dotted)
    rows = {}
    for label, raw in (("plan", plan), ("config", hand_raw)):
        if label not in sides:
            rows[label] = {"score": None, "pixels": None, "wall_s": float("nan"), "runs": 0, "scores": []}
            continue
        scores, walls = [], []
        for seed in range(first_seed, first_seed + (seeds or SEEDS.get(name, 1))):
            out = tmp / f"{name}-{label}-{seed}"
            raw = json.loads(json.dumps(raw)) | {"output_dir": str(out)}
            raw["tracking"] = {"enabled": False}
            raw.setdefault("train", {})["max_minutes"] = minutes
            raw["train"]["seed"] = seed
            path = tmp / f"{name}-{label}.yaml"
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            wall, _ = _run(["train", str(path)])
            score, pixels = _score(out / "model.terraseg")
            scores.append(score)
            walls.append(wall)
        mean = None if None in scores else sum(scores) / len(scores)
        rows[label] = {
            "score": mean,
            "pixels": pixels,
            "wall_s": round(sum(walls) / len(walls), 1),
            "runs": len(scores),
            "scores": scores,
        }
    rows["plan"]["plan_s"] = round(plan_s, 1)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--only", nargs="*", default=None, help="data sets to run (default: all)")
    p.add_argument(
        "--plan-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one planned choice (a rule under test), e.g. optimizer.lr=0.001; repeatable",
    )
    p.add_argument("--sides", default="plan,config", help="which runs to train: plan, config or both")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="training seeds per data set and side (default: 3 for SAT-6, "
        "magnetic tiles, LoveDA, New Brunswick and Sen1Floods11, 6 for SpaceNet Vegas, else 1): at 2 minutes "
        "a run's score moves by a few hundredths to tenths between seeds",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the first training seed (more seeds of an earlier run: --seeds 3 --first-seed 3 runs seeds 3, 4 and 5)",
    )
    a = p.parse_args()
    names = a.only or list(DATASETS)
    print(
        f"CPU: {cpu_model()}; budget {a.minutes:g} min per run; score = best val/score on the same hold-out"
        + (f"; plan changed: {', '.join(a.plan_set)}" if a.plan_set else "")
    )
    print(f"{'data set':16} {'plan':>7} {'config':>7} {'diff':>7} {'pixels/images':>14} {'plan s':>7} {'config s':>8}")
    diffs = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                r = one(name, a.minutes, Path(tmp), tuple(a.plan_set), tuple(a.sides.split(",")), a.seeds, a.first_seed)
            except Exception as e:  # noqa: BLE001 - one data set failing must not hide the others
                print(f"{name:16} failed: {e}")
                continue
        ps, cs = r["plan"]["score"], r["config"]["score"]
        d = ps - cs if ps is not None and cs is not None else None
        diffs += [d] if d is not None else []
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        each = lambda k: "/".join("-" if v is None else f"{v:.3f}" for v in r[k]["scores"])  # noqa: E731
        n = max(r["plan"]["runs"], r["config"]["runs"])
        runs = f"  (mean of {n} seeds: plan {each('plan')}, config {each('config')})" if n > 1 else ""
        print(
            f"{name:16} {fmt(ps):>7} {fmt(cs):>7} {('-' if d is None else f'{d:+.4f}'):>7} "
            f"{(r['plan']['pixels'] or r['config']['pixels'] or 0):>14,.0f} {r['plan']['wall_s']:>7.0f} {r['config']['wall_s']:>8.0f}{runs}",
            flush=True,
        )
    if diffs:
        print(
            f"mean difference (plan - config): {sum(diffs) / len(diffs):+.4f} over {len(diffs)} data sets; "
            f"worst {min(diffs):+.4f}"
        )


if __name__ == "__main__":
    main()

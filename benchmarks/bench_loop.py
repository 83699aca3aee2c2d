"""The annotation loop, played by a simulated annotator on real labelled stacks.

Usage: python benchmarks/bench_loop.py [--stacks NAME ...] [--styles STYLE ...] [--rounds 4]
       [--seeds 1] [--replay 0] [--no-depth] [--json PATH]

Model: the embedded ``ClassicSegmenter(n_jobs=2)``, one per loop (as the dock widget keeps one),
classes ``Episode(["nucleus", "background"])``: prompts 1 = nucleus, 2 = background; the output
reports the "background" class as 0, so output 1 = nucleus.

Protocol (what a user does in the dock widget):

- Round 0: ``bench_baselines.nuclei_scribbles`` on one plane (a few strokes inside nuclei and
  a few in the background), Run: ``iter_predict_stack(episode, stack, uncertainty=True,
  normalise=...)`` over every plane.
- Rounds 1..R: Suggest next plane: ``rank_planes({plane: plane_score(uncertainty)}, 1,
  exclude=supports)``; the annotator corrects that plane of the output; Use this plane as
  support; Run again with a new Episode (the same supports plus the new one). After each run
  the corrected planes are put back over the output with ``corrections.keep_planes``.
- Correction styles: "whole": the corrected plane is the truth. "regions": the connected
  components (8-connected) of the pixels where the output differs from the truth, largest
  first (ties in ``ndimage.label`` order), are fixed one by one until the fixed pixels reach
  90% of the wrong pixels or ``ceil(n / 10)`` components are fixed, ``n`` being the number of
  wrong components (one drag per component; a whole-plane correction counts ``n`` drags).
- Feeding back: "whole" and "regions" feed the corrected plane back complete
  (``as_complete_prompts(plane, background_prompt=2)``, the widget's rule: the model's
  uncorrected pixels become prompts). "regions-confident" (a variant for comparison) corrects
  as "regions" but prompts only the corrected pixels plus the model's pixels with uncertainty
  below ``CONFIDENT`` (0.2); the rest is unprompted. All styles keep the corrected plane, as
  the annotator left it, in the output.

Data (nothing committed; foreground = nucleus):

- stardist: the nuclei stack shipped in the stardist wheel (``img3d``/``mask3d``, 31 x 61 x 57,
  uint16), fetched as ``bench_baselines.stardist_images`` does; scribbles on the middle plane.
- dsb-fluo / dsb-bright / dsb-histo: the 20 images of each group of ../shared/benchmarks/
  dsb2018 (2018 Data Science Bowl, CC0) in index.csv order, each cropped to its centre
  256 x 256, as the planes of one stack (fluorescence and brightfield: the mean of the RGB
  channels, uint8; histology: RGB, a (20, 256, 256, 3) stack). Truth = labels > 0; the merged
  masks are split into connected components for the scribbles, which go on the first plane
  with at least 10 nuclei. These planes are unrelated images: the segmenter still treats them
  as a stack (depth features across neighbouring planes), as napari does with such a stack.
- stardist-drift / dsb-fluo-drift: the same stacks with every third plane (z % 3 == 2) made
  darker (x 0.6, same dtype), run with normalise "stack" and "plane" each (what per-plane
  normalisation gives, whatever "auto" picks). Other stacks: "auto". Every table names the mode
  "auto" resolves to on its stack.

Scores per round: mean nucleus IoU over the *untouched* planes, a fixed set per loop: the
planes that are not supports after the last round (a plane with no nucleus in truth and output
scores 1); the corrected planes' IoU in the output and whether the output there equals what the
annotator gave; pixels where the model disagrees with the kept planes (``keep_planes``); CPU
(``time.process_time``, all threads) and wall seconds of the Run (prediction, keeping,
ranking); corrected pixels and drags; cumulative user actions (scribble strokes, counted as
painted connected pieces, + drags + button presses: Run, Suggest, Use this plane as support).
Several scribble seeds (``--seeds``) give mean and spread (standard deviation) over seeds.
Target check per loop: no round lowers the untouched IoU by more than 0.005 (the largest drop
over all loops is printed); the rise after the last round. Under each style, "common untouched
planes" compares the styles on the planes untouched in all their loops.

``--replay N`` runs each round's supports again with model seeds 1..N (``ClassicSegmenter(seed=)``)
and prints the standard deviation over model seeds 0..N of the untouched IoU ("model sd": the
model's own noise, to set a drop against) and the largest drop of their mean. ``--no-depth`` adds
the supports as lone images (no neighbouring planes), so no plane is featurised across planes:
the fairer setting for the dsb stacks, whose neighbouring planes are unrelated images.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_cases import nuclei_scribbles, stardist_images  # noqa: E402

from napari_label_anything.corrections import as_complete_prompts, keep_planes  # noqa: E402
from napari_label_anything.episode import Episode  # noqa: E402
from napari_label_anything.inference.classic import ClassicSegmenter  # noqa: E402
from napari_label_anything.inference.uncertainty import plane_score, rank_planes  # noqa: E402

CLASSES = ["nucleus", "background"]
NUCLEUS, BACKGROUND_PROMPT = 1, 2
CONFIDENT = 0.2  # "regions-confident": model pixels below this uncertainty are fed back
DSB = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "dsb2018"
EIGHT = np.ones((3, 3), bool)
STYLES = ("whole", "regions", "regions-confident")


# -- data ------------------------------------------------------------------------------------


def dsb_stack(group: str, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Z, size, size[, 3]) stack, (Z, size, size) bool truth and instance ids of one dsb group."""
    with open(DSB / "index.csv") as f:
        ids = [row["id"] for row in csv.DictReader(f) if row["group"] == group]
    planes, truths = [], []
    for i in ids:
        image = np.asarray(Image.open(DSB / "images" / f"{i}.png"))[..., :3]
        labels = np.asarray(Image.open(DSB / "labels" / f"{i}.png"))
        if min(image.shape[:2]) < size:
            continue
        y, x = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        image, labels = image[y : y + size, x : x + size], labels[y : y + size, x : x + size]
        planes.append(image if group == "histology" else image.mean(axis=-1).round().astype(np.uint8))
        truths.append(labels > 0)
    truth = np.stack(truths)
    instances = np.stack([ndi.label(t)[0] for t in truth])
    return np.stack(planes), truth, instances


def darken(stack: np.ndarray) -> np.ndarray:
    out = stack.copy()
    out[2::3] = (stack[2::3] * 0.6).astype(stack.dtype)
    return out


def load_stacks(names: list[str]) -> dict[str, dict]:
    """{name: {stack, truth, instances, plane (scribbled), modes}}."""
    out = {}
    if any(n.startswith("stardist") for n in names):
        data = stardist_images()
        img, mask = data["img3d"], data["mask3d"]
        base = {"stack": img, "truth": mask > 0, "instances": mask, "plane": img.shape[0] // 2}
        out["stardist"] = {**base, "modes": ["auto"]}
        out["stardist-drift"] = {**base, "stack": darken(img), "modes": ["stack", "plane"]}
    for name, group in (("dsb-fluo", "fluorescence"), ("dsb-bright", "brightfield"), ("dsb-histo", "histology")):
        if any(n.startswith(name) for n in names):
            stack, truth, instances = dsb_stack(group)
            plane = next(z for z in range(len(stack)) if instances[z].max() >= 10)
            base = {"stack": stack, "truth": truth, "instances": instances, "plane": plane}
            out[name] = {**base, "modes": ["auto"]}
            out[name + "-drift"] = {**base, "stack": darken(stack), "modes": ["stack", "plane"]}
    return {n: out[n] for n in names}


# -- the simulated annotator -----------------------------------------------------------------


def scribble_prompts(instances: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Prompts (1 nucleus, 2 background) and the number of strokes (painted connected pieces)."""
    painted = nuclei_scribbles(instances, seed)  # 1 = background, 2 = nucleus
    prompts = np.where(painted == 2, NUCLEUS, np.where(painted == 1, BACKGROUND_PROMPT, 0)).astype(np.uint8)
    strokes = sum(ndi.label(painted == k, EIGHT)[1] for k in (1, 2))
    return prompts, strokes


def correct(output: np.ndarray, truth: np.ndarray, style: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The annotator's corrected plane (0/1 labels), the mask of corrected pixels, the drags."""
    truth = truth.astype(output.dtype)
    wrong = output != truth
    if style == "whole":
        return truth.copy(), wrong, ndi.label(wrong, EIGHT)[1]
    components, n = ndi.label(wrong, EIGHT)
    if n == 0:
        return output.copy(), wrong, 0
    sizes = np.bincount(components.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")  # largest first, ties in label order
    budget, total = math.ceil(n / 10), int(sizes.sum())
    fixed, taken = 0, []
    for c in order:
        if fixed >= 0.9 * total or len(taken) >= budget:
            break
        taken.append(c + 1)
        fixed += int(sizes[c])
    mask = np.isin(components, taken)
    return np.where(mask, truth, output), mask, len(taken)


def feedback_prompts(corrected: np.ndarray, fixed: np.ndarray, uncertainty: np.ndarray, style: str) -> np.ndarray:
    """The labels of the new support: the whole plane, or (regions-confident) only the corrected
    pixels plus the model's confident ones."""
    complete = as_complete_prompts(corrected, background_prompt=BACKGROUND_PROMPT)
    if style != "regions-confident":
        return complete
    return np.where(fixed | (uncertainty < CONFIDENT), complete, 0).astype(complete.dtype)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return np.count_nonzero(pred & truth) / union if union else 1.0


def run(segmenter, stack: np.ndarray, supports: list, kept: dict, mode: str, depth: bool) -> dict:
    """Run: a new Episode of ``supports`` over every plane, kept planes put back, next plane
    suggested. Returns the (Z, Y, X) output and uncertainty, the suggestion and the timings."""
    episode = Episode(CLASSES)
    for p, labels in supports:
        if depth:  # a plane of the stack, with its neighbours (as the widget adds it)
            episode.add_support(stack, plane=p, labels=labels)
        else:  # a lone image: no support has context, so no plane is featurised across planes
            episode.add_support(stack[p], labels=labels)
    cpu, wall = time.process_time(), time.perf_counter()
    planes, unc = {}, {}
    for index, labels, u in segmenter.iter_predict_stack(episode, stack, rgb=stack.ndim == 4, uncertainty=True,
                                                         normalise=mode):  # fmt: skip
        planes[index], unc[index] = labels, u
    disagree = keep_planes(planes, kept)
    scores = {index: plane_score(u) for index, u in unc.items()}
    suggestion = rank_planes(scores, 1, exclude=[(p,) for p, _ in supports])[0][0]  # Suggest next plane
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    z = range(len(stack))
    return {"output": np.stack([planes[(i,)] for i in z]), "uncertainty": np.stack([unc[(i,)] for i in z]),
            "suggestion": int(suggestion), "disagree_px": sum(disagree.values()),
            "cpu_s": cpu, "wall_s": wall}  # fmt: skip


def run_loop(data: dict, mode: str, style: str, seed: int, rounds: int, depth: bool = True, replay: int = 0) -> dict:
    """One annotator, scribbles of ``seed``, ``rounds`` corrections in ``style``; with ``replay``,
    each round's supports are run again with model seeds 1..replay (the model's own noise)."""
    stack, truth = data["stack"], data["truth"]
    segmenter = ClassicSegmenter(n_jobs=2)
    prompts, strokes = scribble_prompts(data["instances"][data["plane"]], seed)
    supports = [(data["plane"], prompts)]  # (plane, labels) in the order they were added
    kept: dict[tuple[int, ...], np.ndarray] = {}
    actions, history, snapshots = strokes + 1, [], []  # strokes, Run
    step = {"plane": data["plane"], "corrected_px": 0, "drags": 0, "wrong_px": 0,
            "prompted_px": int((prompts > 0).sum()), "strokes": int(strokes)}  # fmt: skip
    result = run(segmenter, stack, supports, kept, mode, depth)
    for r in range(rounds + 1):
        if r:  # Suggest next plane, correct it, Use this plane as support, Run
            z, output = result["suggestion"], result["output"]
            corrected, fixed, drags = correct(output[z], truth[z], "whole" if style == "whole" else "regions")
            supports.append((z, feedback_prompts(corrected, fixed, result["uncertainty"][z], style)))
            kept[(z,)] = corrected
            actions += 1 + drags + 1 + 1
            step = {"plane": z, "corrected_px": int(fixed.sum()), "drags": int(drags),
                    "wrong_px": int((output[z] != truth[z]).sum()),
                    "prompted_px": int((supports[-1][1] > 0).sum())}  # fmt: skip
            result = run(segmenter, stack, supports, kept, mode, depth)
        snapshots.append((list(supports), dict(kept)))
        output = result["output"]
        step.update({
            "plane_iou": [iou(output[z] == NUCLEUS, truth[z]) for z in range(len(stack))],
            "kept_equal": all(np.array_equal(output[z], v) for (z,), v in kept.items()),
            "disagree_px": result["disagree_px"], "cpu_s": result["cpu_s"], "wall_s": result["wall_s"],
            "actions": actions,
        })  # fmt: skip
        history.append(step)
    untouched = sorted(set(range(len(stack))) - {p for p, _ in supports})
    for r, step in enumerate(history):
        step["untouched_iou"] = float(np.mean([step["plane_iou"][z] for z in untouched]))
        corrected = [z for z, _ in supports[1 : r + 1]]
        step["corrected_iou"] = float(np.mean([step["plane_iou"][z] for z in corrected])) if corrected else None
        step["model_seed_ious"] = [step["untouched_iou"]]
        for model_seed in range(1, replay + 1):
            out = run(ClassicSegmenter(n_jobs=2, seed=model_seed), stack, *snapshots[r], mode, depth)["output"]
            step["model_seed_ious"].append(float(np.mean([iou(out[z] == NUCLEUS, truth[z]) for z in untouched])))
    ious = [s["untouched_iou"] for s in history]
    drops = [a - b for a, b in zip(ious, ious[1:], strict=False)]
    means = [np.mean(s["model_seed_ious"]) for s in history]
    mean_drops = [a - b for a, b in zip(means, means[1:], strict=False)]
    return {"untouched_planes": untouched, "rounds": history, "max_drop": max([0.0, *drops]),
            "max_drop_model_seed_mean": float(max([0.0, *mean_drops])), "rise": ious[-1] - ious[0]}  # fmt: skip


# -- report ----------------------------------------------------------------------------------


def mean_spread(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f}" if len(values) == 1 else f"{np.mean(values):.3f}±{np.std(values):.3f}"


def model_sd(steps: list[dict]) -> str:
    """Mean over loops of the standard deviation over model seeds (``--replay``), else "-"."""
    if len(steps[0]["model_seed_ious"]) < 2:
        return "-"
    return f"{np.mean([np.std(s['model_seed_ious']) for s in steps]):.4f}"


def print_table(name: str, mode: str, resolved: str, style: str, loops: list[dict]) -> None:
    print(f"\n{name}  normalise={mode} (auto -> {resolved})  style={style}  seeds={len(loops)}")
    print(f"{'round':>5} {'plane':>9} {'untouched IoU':>14} {'corrected IoU':>14} {'kept':>5} {'disagree':>9}"
          f" {'cpu s':>6} {'wall s':>6} {'fixed px':>9} {'wrong px':>9} {'drags':>6} {'actions':>8}"
          f" {'model sd':>9}")  # fmt: skip
    for r in range(len(loops[0]["rounds"])):
        steps = [loop["rounds"][r] for loop in loops]
        planes = ",".join(str(s["plane"]) for s in steps)
        print(f"{r:>5} {planes:>9} {mean_spread([s['untouched_iou'] for s in steps]):>14}"
              f" {mean_spread([s['corrected_iou'] for s in steps]):>14} {str(all(s['kept_equal'] for s in steps)):>5}"
              f" {np.mean([s['disagree_px'] for s in steps]):>9.0f} {np.mean([s['cpu_s'] for s in steps]):>6.2f}"
              f" {np.mean([s['wall_s'] for s in steps]):>6.2f} {np.mean([s['corrected_px'] for s in steps]):>9.0f}"
              f" {np.mean([s['wrong_px'] for s in steps]):>9.0f} {np.mean([s['drags'] for s in steps]):>6.1f}"
              f" {np.mean([s['actions'] for s in steps]):>8.1f}"
              f" {model_sd(steps):>9}")  # fmt: skip
    drops = [loop["max_drop"] for loop in loops]
    ok = "PASS" if max(drops) <= 0.005 else "FAIL"
    print(f"target: largest drop between rounds {max(drops):.4f} ({ok}, limit 0.005); rise after"
          f" {len(loops[0]['rounds']) - 1} rounds {mean_spread([loop['rise'] for loop in loops])}")  # fmt: skip
    if len(loops[0]["rounds"][0]["model_seed_ious"]) > 1:
        mean_drops = [loop["max_drop_model_seed_mean"] for loop in loops]
        print(f"        largest drop of the mean over model seeds {max(mean_drops):.4f}")


def print_common(results: list[dict]) -> None:
    """Each style's untouched IoU, first and last round, on the planes untouched in every loop."""
    common = set.intersection(*(set(loop["untouched_planes"]) for r in results for loop in r["loops"]))
    cells = []
    for r in results:
        first, last = ([np.mean([loop["rounds"][k]["plane_iou"][z] for z in common]) for loop in r["loops"]]
                       for k in (0, -1))  # fmt: skip
        cells.append(f"{r['style']} {mean_spread(first)} -> {mean_spread(last)}")
    print(f"common untouched planes ({len(common)}): " + "; ".join(cells))


def main() -> None:
    names = ["stardist", "dsb-fluo", "dsb-bright", "dsb-histo", "stardist-drift", "dsb-fluo-drift"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", nargs="+", default=names, choices=names + ["dsb-bright-drift", "dsb-histo-drift"])
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--rounds", type=int, default=4, help="correction rounds after the first run")
    parser.add_argument("--seeds", type=int, default=1, help="scribble seeds 0..N-1")
    parser.add_argument("--no-depth", action="store_true", help="supports as lone planes: no depth features")
    parser.add_argument("--replay", type=int, default=0, help="run each round again with model seeds 1..N")
    default_json = Path(__file__).resolve().parents[1] / "build" / "bench_loop.json"
    parser.add_argument("--json", type=Path, default=default_json, help="where to write every number")
    args = parser.parse_args()
    start = time.perf_counter()
    depth = ", supports without depth context" if args.no_depth else ""
    print(f"annotation loop, classic segmenter, {os.cpu_count()} CPUs, {args.rounds} rounds,"
          f" seeds 0..{args.seeds - 1}{depth}")  # fmt: skip
    results = []
    for name, data in load_stacks(args.stacks).items():
        rgb = data["stack"].ndim == 4
        for mode in data["modes"]:
            resolved = ClassicSegmenter().normalisation(data["stack"], rgb=rgb, normalise="auto")
            for style in args.styles:
                options = (args.rounds, not args.no_depth, args.replay)
                loops = [run_loop(data, mode, style, seed, *options) for seed in range(args.seeds)]
                print_table(name, mode, resolved, style, loops)
                results.append({"stack": name, "shape": list(data["stack"].shape), "scribble_plane": data["plane"],
                                "normalise": mode, "resolved": resolved, "style": style, "loops": loops})  # fmt: skip
            print_common(results[-len(args.styles) :])
            sys.stdout.flush()
    wall = time.perf_counter() - start
    print(f"\ntotal wall time {wall:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {"cpus": os.cpu_count(), "rounds": args.rounds, "seeds": args.seeds, "depth": not args.no_depth,
               "replay": args.replay}  # fmt: skip
    args.json.write_text(json.dumps({**summary, "wall_s": wall, "results": results}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

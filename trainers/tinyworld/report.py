"""The tiny-world report: ``python -m trainers.tinyworld.report``.

Shows what the shipped teachers generate and how the few-step gap looks: a PNG grid (rows:
categories and edit types; columns: edit source, real render, teacher at 50/8/4/2/1 NFE) and a
table of adherence, purity, diversity, fd and the aggregates per NFE, each over several noise
seeds (mean ± std), plus the ``text`` specialist against ``base`` on the text category.

It writes into its ``--out`` folder only: ``tinyworld_grid.png`` and ``report.json``. The model
cards (``checkpoints/<teacher>/card.json``) are never touched: their ``scores@50`` are written by
``python -m trainers.tinyworld.pretrain`` when the teachers are trained (the shipped cards' section
was measured by a report run with the default options). The report's own teacher@50 scores, in the
cards' format, are in ``report.json`` under ``scores@50`` (one entry per teacher), to compare with
the cards or to copy into them by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from trainers.evaluate import EvalConfig, build_eval_set, evaluate_teacher, teacher_generator  # noqa: E402

from .world import TinyWorld  # noqa: E402

NFES = (50, 8, 4, 2, 1)
COLUMNS = (
    "t2i_score",
    "edit_score",
    "score",
    "adherence",
    "purity",
    "diversity",
    "fd",
    "edit_adherence",
    "preservation",
)


def _to_rgb(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def sample_grid(world: TinyWorld, model, guidance_scale: float, out: Path, seed: int = 0) -> Path:
    """One example per category and edit type, sampled at every NFE from the same noise."""
    es = build_eval_set(world, EvalConfig(items=256, samples_per_prompt=1, seed=seed))
    rows, picks = [], []
    for c in world.categories:
        i = next(i for i, r in enumerate(es.t2i_rows) if r["category"] == c)
        rows.append((c, es.t2i_rows[i]["prompt"], None, world.real_t2i([es.t2i_rows[i]], seed)[0]))
        picks.append(i)
    n_t2i = len(es.t2i_rows)
    for t in world.edit_types:
        j = next(j for j, r in enumerate(es.edit_rows) if r["edit_type"] == t)
        r = es.edit_rows[j]
        rows.append(
            (t, r["instruction"], world.render_edits([r], "source")[0], world.render_edits([r], "target")[0])
        )
        picks.append(n_t2i + j)
    index = torch.tensor(picks)
    cond = es.cond.select(index)
    samples = {n: teacher_generator(model, n, guidance_scale)(es.eps[index], cond, None) for n in NFES}
    headers = ["source", "real"] + [f"teacher@{n}" for n in NFES]
    fig, axes = plt.subplots(len(rows), len(headers), figsize=(1.3 * len(headers) + 2.2, 1.3 * len(rows)))
    for r, (name, text, source, real) in enumerate(rows):
        cells = [source, real] + [samples[n][r] for n in NFES]
        for c, img in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if img is not None:
                ax.imshow(_to_rgb(img), interpolation="nearest")
            else:
                ax.axis("off")
            if r == 0:
                ax.set_title(headers[c], fontsize=8)
        axes[r, 0].text(
            -0.1,
            0.5,
            f"{name}\n{text[:28]}",
            transform=axes[r, 0].transAxes,
            ha="right",
            va="center",
            fontsize=6,
        )
    fig.suptitle(f"tiny world: base teacher, CFG {guidance_scale}", fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tinyworld_grid.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_table(world: TinyWorld, model, guidance_scale: float, items: int, seeds: int) -> dict[int, dict]:
    """Per NFE: every metric over ``seeds`` noise seeds as (mean, std)."""
    result = {}
    for n in NFES:
        runs = [
            evaluate_teacher(world, model, n, EvalConfig(items=items, seed=s), guidance_scale)
            for s in range(seeds)
        ]
        result[n] = {
            k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))) for k in runs[0]
        }
    return result


def _print(console: Console, title: str, table: dict[int, dict], keys) -> None:
    t = Table(title=title)
    t.add_column("NFE", justify="right")
    for k in keys:
        t.add_column(k, justify="right")
    for n, scores in table.items():
        t.add_row(str(n), *(f"{scores[k][0]:.3f}±{scores[k][1]:.3f}" for k in keys))
    console.print(t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.tinyworld.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/tinyworld"), help="the only folder it writes into (PNG, JSON)"
    )
    parser.add_argument("--items", type=int, default=256, help="benchmark items per evaluation")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds per NFE (mean ± std)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale of the teacher sampler")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console(width=220)  # wide tables stay readable when piped to a file
    world = TinyWorld()
    teachers = world.load_teachers()
    base, text = teachers["base"].model, teachers["text"].model
    grid = sample_grid(world, base, args.guidance_scale, args.out)
    console.print(f"grid: {grid}")
    table = score_table(world, base, args.guidance_scale, args.items, args.seeds)
    _print(
        console,
        f"base teacher (CFG {args.guidance_scale}), {args.items} items × {args.seeds} seeds",
        table,
        COLUMNS,
    )
    per_cat = [f"t2i_score/{c}" for c in world.categories] + [f"edit_score/{t}" for t in world.edit_types]
    _print(console, "per category and edit type", table, per_cat)
    spec = {
        n: evaluate_teacher(world, m, 50, EvalConfig(items=args.items), args.guidance_scale)["t2i_score/text"]
        for n, m in (("base", base), ("text", text))
    }
    console.print(f"text category at 50 NFE: base {spec['base']:.3f}, text specialist {spec['text']:.3f}")
    report = {
        "guidance_scale": args.guidance_scale,
        "items": args.items,
        "seeds": args.seeds,
        "teacher": {str(n): s for n, s in table.items()},
        "text_category@50": spec,
        "scores@50": card_scores(table[50], spec, args.guidance_scale, args.items, args.seeds),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def card_scores(
    at50: dict[str, tuple[float, float]],
    text_scores: dict[str, float],
    guidance_scale: float,
    items: int,
    seeds: int,
) -> dict[str, dict]:
    """The teacher@50 scores in the model cards' ``scores@50`` format, per teacher (``base``, ``text``).

    ``base`` gets every metric of ``at50`` (mean over the seeds), ``text`` only the text category;
    values are rounded to 4 places, as in the shipped cards.
    """
    return {
        name: {
            "guidance_scale": guidance_scale,
            "items": items,
            "seeds": seeds,
            **({k: round(v[0], 4) for k, v in at50.items()} if name == "base" else {}),
            "t2i_score/text": round(text_scores[name], 4),
        }
        for name in ("base", "text")
    }


if __name__ == "__main__":
    main()

"""Builds notebooks/pareto_fronts.ipynb without outputs: `python notebooks/build_pareto_fronts.py` from the repo root.

The section on the recipe axes is one loop over orchestrator/axes.py's registry, run when the notebook
runs, so a new axis needs no rebuild; tests/test_notebook.py checks the committed notebook is this build.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).resolve().with_name("pareto_fronts.ipynb")
md, code = new_markdown_cell, new_code_cell
CELLS = [
    code(
        'run_dir = "runs/task_ratio"  # a sweep\'s run dir: runs/<name>\n'
        "out_dir = None  # where the PNGs go; None: <run_dir>/figures\n"
        "objectives = None  # {metric: 'max' | 'min'}; None: the spec's (<run_dir>/spec.yaml), else T2I vs Edit",
        metadata={"tags": ["parameters"]},
    ),
    md(
        "# Reading a sweep's Pareto fronts\n"
        "\n"
        "Set `run_dir` in the cell above to a finished sweep (`python -m orchestrator.sweep SPEC` writes "
        "`runs/<name>/trials.parquet`, `curves.parquet`, `pareto.parquet`), then run all cells; `objectives` "
        "default to the sweep spec's. The cell is tagged `parameters`, so `papermill -p run_dir runs/joint` works too. "
        "Every figure is also saved as a PNG in `out_dir`; a figure whose axis the sweep did not vary is "
        "skipped with a line saying so."
    ),
    code(
        "%matplotlib inline\n"
        "import os\n"
        "from pathlib import Path\n"
        "\n"
        "import polars as pl\n"
        "from IPython.display import Markdown\n"
        "\n"
        "from orchestrator import axes, effects, pareto, plots, reference, results\n"
        "\n"
        'if Path.cwd().name == "notebooks":  # Jupyter starts the kernel beside the notebook; paths are from the repo root\n'
        '    os.chdir("..")\n'
        'out_dir = Path(out_dir or Path(run_dir) / "figures")\n'
        "objectives = objectives or results.sweep_objectives(run_dir) or plots.DEFAULT_OBJECTIVES\n"
        "pl.Config.set_tbl_rows(100)\n"
        "pl.Config.set_tbl_cols(20)\n"
        "pl.Config.set_float_precision(3)\n"
        "tables = results.load_sweep(run_dir)\n"
        "front = pareto.pareto_front(effects.finished(tables.trials), objectives)\n"
        'print(f"{tables.trials.height} trials, {front.height} on the Pareto front of {\', \'.join(objectives)}")'
    ),
    md(
        "## The trials\n"
        "\n"
        "One row per trial in the order the trials started: its status (FINISHED, STOPPED early by ASHA, "
        "FAILED), the recipe values the sweep varied, and its final scores."
    ),
    code("plots.overview(tables.trials, objectives)"),
    md(
        "## The Pareto front, coloured by each axis\n"
        "\n"
        "Each dot is a trial, with ±1 SE bars where the evaluation reported standard errors. The staircase "
        "is the Pareto front (the finished trials no other trial beats on both objectives) and the star its knee "
        "(the front point closest to the best of both, after scaling each objective to [0, 1] over the front). "
        "The red rings are the trials no other trial beats on both objectives by more than 2 SE of the "
        "difference: the ones the evaluation noise cannot rule out, the front included. The colours show which "
        "recipe values sit where along the front: a colour gradient along it is a trade-off that axis controls."
    ),
    code(
        "knee = pareto.knee(front, objectives) if front.height else None\n"
        'print("knee:", {k: knee[k] for k in ("trial_id", *objectives)} if knee else "none (no finished trial)")\n'
        'plots.show(plots.front_by_axis(tables.trials, objectives), out_dir, "front", "no swept axis to colour by")'
    ),
    md(
        "## Which trials the noise cannot separate\n"
        "\n"
        "The finished trials with each objective as mean ± SE (the benchmark's bootstrap standard error), whether "
        "each is on the plain Pareto front, and whether it is `not_clearly_dominated`: no other trial is better on "
        "every objective by more than 2 SE of the difference (√(SE_a² + SE_b²)). A trial off the front but not "
        "clearly dominated is one the data cannot tell from the front; re-running it with more seeds "
        "(`confirm:` in the spec, or `promote --seeds`) is what would separate them."
    ),
    code("plots.noise_table(tables.trials, objectives)"),
    md(
        "## Hypervolume over trials\n"
        "\n"
        "The area the front dominates beyond a fixed reference point, after each trial in start order. The reference "
        "is the sweep's `<run_dir>/reference.json`: the spec's `objectives[].reference` where given, else the base "
        "teacher sampled at the student's NFE (\"no distillation\"), so two sweeps' curves can be compared. A trial "
        "not better than the reference on every objective adds nothing: a curve at 0 says no recipe beat the teacher. "
        "Without reference.json (a sweep from before it) the worst finished trial stands in, and the title says so. "
        "Steps are trials that moved the front; a curve still rising at the end says more trials would likely find "
        "better recipes, a flat tail says the search has settled."
    ),
    code(
        "plots.show(plots.hypervolume_curve(tables.trials, objectives, reference.read_reference(run_dir)), out_dir,\n"
        '           "hypervolume", "no finished trial")'
    ),
    md(
        "## Scores against each recipe axis\n"
        "\n"
        "For every axis of the registry (orchestrator/axes.py) the sweep varied: what to look for, its effect table "
        "(the finished trials grouped along the axis: their count `n` and the mean and std of each score) and the "
        "scores against it. An axis the sweep did not vary is skipped with a line saying so."
    ),
    code(
        "for axis in axes.analysed():\n"
        "    if (table := effects.effect(tables.trials, axis)).height:\n"
        '        display(Markdown(f"### {axis.plot.heading}\\n\\n{axis.plot.about}"), table)\n'
        "    fig, why = plots.axis_figure(tables.trials, axis)\n"
        "    if plots.show(fig, out_dir, axis.plot.name, why) is not None:  # in a loop: displayed explicitly\n"
        "        display(fig)"
    ),
    md(
        "## Learning curves of the front's trials\n"
        "\n"
        "Each objective at every evaluation during training, the front's trials in colour and the rest in grey. "
        "Curves still climbing at the last step suggest the promoted full-length run will gain more; curves that "
        "peak and fall point at over-training (e.g. CFG over-saturation)."
    ),
    code(
        "plots.show(plots.learning_curves(tables.curves, front, objectives), out_dir, \"learning_curves\",\n"
        '           "no learning curves of front trials")'
    ),
    md(
        "## The knee's samples\n"
        "\n"
        "The knee trial's samples from its last checkpoint: T2I samples first (4 per prompt), then "
        "(source, edited) pairs. Check them by eye before promoting the recipe "
        "(`python -m orchestrator.promote RUN_DIR --pick knee`)."
    ),
    code('plots.show(plots.knee_samples(run_dir, front, objectives), out_dir, "knee_samples", "the knee trial has no sample grid")'),
    md("The PNGs written:"),
    code('sorted(str(p) for p in out_dir.glob("*.png"))'),
]


def build() -> nbformat.NotebookNode:
    """The notebook, without outputs, with stable cell ids (nbformat would draw random ones on every build)."""
    nb = new_notebook(
        cells=CELLS,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    return nb


if __name__ == "__main__":
    nbformat.write(build(), NOTEBOOK)

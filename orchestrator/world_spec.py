"""The spec's `world:` section: which world trials distil in, resolved before anything else is checked.

    world, info, problems = resolve_world(data.get("world", "tiny"), spec_path)

`world: tiny` is short for `world: {name: tiny}`. Paths (a world folder or its world.yaml,
`checkpoints`) are relative to the spec file; they must exist and are made absolute for the Ray
workers. The world's info (`trainers.world.world_info`, no weights loaded) is what the other sections
are checked against. A world.yaml with problems raises them as a SpecError of *that* file, so the
sweep CLI prints `world.yaml:LINE: key: ...` (its lines, not the spec's) and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from orchestrator.spec_base import SpecModel
from orchestrator.yamlio import Loc, Problem, SpecError, YamlFileError
from trainers.world import WorldInfo, world_info


class WorldSpec(SpecModel):
    """Where trials distil: `tiny` (the embedded world) with options, or a path to a world config.

    The options are the tiny world's own (trainers.tinyworld.world.TinyWorld); tests point
    `checkpoints` at micro teachers and shrink the pools.
    """

    name: str = Field("tiny", min_length=1, description="'tiny' or a path to a world config")
    checkpoints: str | None = Field(
        None, min_length=1, description="folder with base/, text/, judge/ (relative to the spec file)"
    )
    resolution: Literal[16, 32] | None = None
    train_prompts: int | None = Field(None, ge=3)
    train_edits: int | None = Field(None, ge=1)
    heldout_prompts: int | None = Field(None, ge=3)
    heldout_edits: int | None = Field(None, ge=1)

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments of `trainers.world.load_world` besides the name (unset ones omitted)."""
        return self.model_dump(exclude={"name"}, exclude_none=True)


def resolve_world(raw: Any, path: Path) -> tuple[WorldSpec | None, WorldInfo | None, list[Problem]]:
    """The `world:` section of the spec at `path` resolved (paths absolute) and its info.

    (None, None, []) when its structure is broken (the spec's validation reports that); no info
    when it does not resolve (its problem is reported, and nothing is checked against a guess).
    Raises SpecError for a world file with problems (`trainers.worlds.diffusers.config.WorldFileError`):
    they are in that file, at its lines, and the rest of the spec cannot be checked without its world.
    """
    try:
        world = WorldSpec.model_validate({"name": raw} if isinstance(raw, str) else raw)
    except ValidationError:
        return None, None, []
    world, problems = _absolute_paths(world, path)
    if problems:
        return world, None, problems
    target = world.name if world.name == "tiny" else str(_absolute(world.name, path))
    try:
        info = world_info(target, **world.options)
        # the Ray workers run elsewhere: they get the world file's absolute path
        return (world if target == "tiny" else world.model_copy(update={"name": target})), info, []
    except YamlFileError as exc:  # before ValueError: a WorldFileError is one, but its lines are its file's
        raise SpecError(exc.file, exc.problems) from None
    except ValueError as exc:
        loc: Loc = ("world",) if not world.options else ("world", "name")
        reason = str(exc).removeprefix(f"world {target!r}: ")
        problem = Problem(loc, f"expected a world this version can load, found {world.name!r}: {reason}")
        return world, None, [problem]


def _absolute(value: str, spec_path: Path) -> Path:
    """A path from the spec, relative to the spec file's folder."""
    return Path(value) if Path(value).is_absolute() else (spec_path.parent / value).resolve()


def _absolute_paths(world: WorldSpec, path: Path) -> tuple[WorldSpec, list[Problem]]:
    """Paths are relative to the spec file and must exist; they are made absolute for the Ray workers."""
    problems: list[Problem] = []
    update: dict[str, Any] = {}
    loc: Loc = ("world",) if not world.options else ("world", "name")
    if world.name != "tiny":
        if not _absolute(world.name, path).exists():
            problems.append(Problem(loc, f"expected 'tiny' or an existing path, found {world.name!r}"))
        elif world.options:
            given = ", ".join(world.options)
            problems.append(Problem(("world",), f"expected options only with name 'tiny', found {given}"))
    if world.checkpoints is not None:
        folder = _absolute(world.checkpoints, path)
        if not folder.is_dir():
            problems.append(
                Problem(("world", "checkpoints"), f"expected an existing folder, found {world.checkpoints!r}")
            )
        update["checkpoints"] = str(folder)
    return world.model_copy(update=update), problems

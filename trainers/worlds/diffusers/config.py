"""world.yaml: what a real-model world folder holds, checked once without loading any weights.

    config = read_world_config("worlds/qwen")    # the folder or its world.yaml; WorldFileError lists every problem
    info = world_info_of(config)                 # trainers.world.WorldInfo: what a sweep spec is checked against

Reading is the sweep spec's: the YAML is read with positions (``trainers.yaml_positions``), the keys
are validated by pydantic models (``extra="forbid"``, strict types), then every path is checked
against what it must point to -- the pipelines' ``model_index.json``, the transformers' and judges'
``config.json``, a LoRA's ``adapter_config.json``, the manifests' parquet schemas and columns. Every
problem is collected and reported as ``world.yaml:LINE: key.path: expected ..., found ...`` (a
manifest's content at the line of the key naming it), so one run shows all that is wrong with a
world, before a trial spends minutes loading 20B parameters to find the first one. docs/worlds.md
describes the format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from trainers.world import GroupKind, WorldInfo
from trainers.yaml_positions import Loc, Problem, YamlFileError, did_you_mean, line_of, read_yaml, show

WORLD_FILE = "world.yaml"
PIPELINE_CLASSES = {
    "pipeline": ("QwenImagePipeline",),
    "edit_pipeline": ("QwenImageEditPipeline", "QwenImageEditPlusPipeline"),
}
PIPELINE_PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")  # what the world loads
TRANSFORMER_CLASS = "QwenImageTransformer2DModel"
JUDGE_CLASSES = {"clip": "CLIPModel", "vlm": "Qwen2_5_VLForConditionalGeneration"}
SPLITS = ("train", "heldout")
PROMPT_COLUMNS = ("prompt", "category", "split")
EDIT_COLUMNS = ("source", "instruction", "edit_type", "split")  # + an optional "category" (the source's)
PATCH = 16  # VAE downsampling 8 × the transformer's 2×2 packing: the image side must be a multiple
MISSING_SHOWN = 3  # missing edit sources named in the message; the rest are counted
EDIT_VISION_AREA = 1024 * 1024
"""The default ``edit_vision_area``: QwenImageEditPipeline.__call__ resizes an edit's source to about this
many pixels before the text encoder's vision tower sees it (text.py's ``EDIT_VL_AREA``; repeated here
because this module imports neither torch nor diffusers)."""
MIN_EDIT_VISION_AREA = 28 * 28 * 4  # 56², Qwen2-VL's default min_pixels: a 4×4 grid of 14-pixel patches, 4 tokens


class WorldFileError(YamlFileError, ValueError):
    """A world.yaml that cannot be used; holds every problem, each rendered `world.yaml:LINE: key: ...`.

    A ValueError, like every other world that cannot be resolved (``trainers.world.world_info``).
    """


# -- the file's keys (pydantic) ---------------------------------------------------------------------


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SpecialistKeys(_Keys):
    """A specialist teacher: a full transformer or a LoRA on the base, and the categories it teaches."""

    transformer: str | None = Field(None, min_length=1, description="a QwenImageTransformer2DModel folder")
    lora: str | None = Field(None, min_length=1, description="a PEFT LoRA folder (adapter_config.json)")
    categories: list[str] | None = Field(None, min_length=1, description="default: the specialist's name")

    @model_validator(mode="after")
    def _one_source(self) -> SpecialistKeys:
        if (self.transformer is None) == (self.lora is None):
            given = "both" if self.transformer is not None else "neither"
            raise PydanticCustomError("world", "expected one of transformer or lora, found {given}", {"given": given})
        return self


def _short_form(value: Any) -> Any:
    """`text: text-teacher/transformer` is short for `text: {transformer: text-teacher/transformer}`."""
    if isinstance(value, str):
        return {"transformer": value}
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "world", "expected a transformer folder or a mapping (transformer or lora, categories), found {v}",
            {"v": show(value)},
        )
    return value


class JudgeKeys(_Keys):
    clip: str = Field(min_length=1, description="a CLIPModel folder (model, tokenizer, image processor)")
    vlm: str | None = Field(None, min_length=1, description="a Qwen2.5-VL folder; absent: CLIP judges edits too")


class WorldKeys(_Keys):
    """The keys of world.yaml; paths are relative to its folder.

    Every key is optional *here* so that a file with one broken key still has all its others checked
    (its folders, its manifests); the required ones are :data:`REQUIRED`, checked by `_missing`.
    """

    kind: Literal["diffusers"] | None = None
    pipeline: str | None = Field(None, min_length=1)
    edit_pipeline: str | None = Field(None, min_length=1)
    student: Literal["pipeline", "edit_pipeline"] = "pipeline"
    specialists: dict[str, Annotated[SpecialistKeys, BeforeValidator(_short_form)]] = Field(default_factory=dict)
    resolution: int | None = None
    prompts: str | None = Field(None, min_length=1)
    edits: str | None = Field(None, min_length=1)
    edit_vision_area: int = EDIT_VISION_AREA
    judge: JudgeKeys | None = None
    text_cache: str = Field("text-cache", min_length=1)


REQUIRED = ("kind", "pipeline", "resolution", "prompts", "judge")


# -- what the rest of the world reads ---------------------------------------------------------------


@dataclass(frozen=True)
class SpecialistConfig:
    """A specialist teacher: exactly one of `transformer` (a full model) and `lora` (on the base) is set."""

    name: str
    transformer: Path | None
    lora: Path | None
    categories: frozenset[str]


@dataclass(frozen=True)
class WorldConfig:
    """A checked world.yaml, every path absolute; categories and edit types from the manifests."""

    file: Path
    root: Path  # the world folder: world.yaml's parent, what paths (and edit sources) are relative to
    pipeline: Path
    edit_pipeline: Path | None
    student: Literal["pipeline", "edit_pipeline"]  # whose transformer the student and the fake score start from
    specialists: dict[str, SpecialistConfig]
    resolution: int
    prompts: Path
    edits: Path | None
    edit_vision_area: int  # pixels an edit's source is resized to for the text encoder's vision tower
    clip: Path
    vlm: Path | None
    text_cache: Path
    categories: tuple[str, ...]  # order of first appearance in the prompt manifest
    edit_types: tuple[str, ...]  # order of first appearance in the edit manifest; () without edits


def read_world_config(path: str | Path) -> WorldConfig:
    """The world.yaml at `path` (the file or its folder), checked; WorldFileError lists every problem."""
    file = Path(path).absolute()
    if file.is_dir():
        file = file / WORLD_FILE
    file = file.resolve()
    yaml_root, data = read_yaml(file, WorldFileError, "a mapping of world keys")
    if not isinstance(data, dict):
        raise WorldFileError(file, [Problem((), f"expected a mapping of world keys, found {show(data)}", 1)])
    keys, problems = _validate(data)
    check = _Checks(file, data)
    config = check.world(keys)
    problems += check.problems
    if problems or config is None:
        unique = dict.fromkeys(Problem(p.loc, p.message, p.line or line_of(yaml_root, p.loc)) for p in problems)
        raise WorldFileError(file, sorted(unique, key=lambda p: p.line or 0))
    return config


def world_info_of(config: WorldConfig) -> WorldInfo:
    """What a sweep spec is checked against: the manifests' groups, the specialists, the judges' metrics."""
    metrics: dict[str, Literal["max", "min"]] = {
        "score": "max",  # (t2i_score + edit_score) / 2, by trainers.evaluate
        "t2i_score": "max",
        "t2i_score_se": "min",
        "clip_score": "max",
        "edit_score": "max",
        "edit_score_se": "min",
        "edit_sc": "max",  # semantic consistency: the instruction was followed
    }
    # Perceptual quality needs the VLM; without one, CLIP's image-text direction stands in for edits.
    metrics |= {"edit_pq": "max"} if config.vlm is not None else {"clip_direction": "max"}
    grouped: dict[str, GroupKind] = {"t2i_score": "category", "edit_score": "edit_type"}
    return WorldInfo(
        name=str(config.file),
        categories=config.categories,
        edit_types=config.edit_types,
        specialists={name: s.categories for name, s in config.specialists.items()},
        resolutions=(config.resolution,),
        metrics=metrics,
        grouped=grouped,
    )


# -- pydantic's errors in the spec's words ----------------------------------------------------------


def _validate(data: dict[str, Any]) -> tuple[WorldKeys, list[Problem]]:
    """The file's keys validated; with problems, the keys without one (so that they are checked too)."""
    try:
        return WorldKeys.model_validate(data), _missing(data)
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors(include_url=False)]
    bad = {p.loc[:2] if p.loc[:1] == ("specialists",) else p.loc[:1] for p in problems}
    kept = {k: v for k, v in data.items() if (k,) not in bad}
    if isinstance(kept.get("specialists"), dict):
        kept["specialists"] = {n: v for n, v in kept["specialists"].items() if ("specialists", n) not in bad}
    return WorldKeys.model_validate(kept), problems + _missing(data)


def _missing(data: dict[str, Any]) -> list[Problem]:
    return [Problem((key,), "missing required key") for key in REQUIRED if data.get(key) is None]


def _problem(err: Any) -> Problem:
    """One pydantic error as a Problem: `expected ..., found ...`, a did-you-mean for an unknown key."""
    loc: Loc = tuple(part for part in err["loc"] if part != "[key]")
    kind, found = err["type"], show(err.get("input"))
    if kind == "extra_forbidden":
        allowed = _keys_at(loc[:-1])
        return Problem(loc, f"unknown key {loc[-1]!r}" + (did_you_mean(str(loc[-1]), allowed) if allowed else ""))
    if kind == "missing":
        return Problem(loc, "missing required key")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return Problem(loc, f"expected a mapping, found {found}")
    if kind == "world":  # our own wording
        return Problem(loc, err["msg"])
    if kind == "string_too_short":
        return Problem(loc, f"expected a non-empty string, found {found}")
    if kind == "too_short":
        return Problem(loc, f"expected at least {err['ctx']['min_length']} item(s), found {found}")
    if kind == "list_type":
        return Problem(loc, f"expected a list, found {found}")
    msg = err["msg"]
    if msg.startswith("Input should be"):
        return Problem(loc, f"{msg.replace('Input should be', 'expected', 1)}, found {found}")
    return Problem(loc, f"{msg[:1].lower()}{msg[1:]}, found {found}")


def _keys_at(loc: Loc) -> list[str]:
    """The keys the mapping at `loc` allows."""
    model = {(): WorldKeys, ("judge",): JudgeKeys}.get(loc)
    if model is None and len(loc) == 2 and loc[0] == "specialists":
        model = SpecialistKeys
    return list(model.model_fields) if model else []


# -- what each path must point to -------------------------------------------------------------------


class _Checks:
    """The checks of the files a world.yaml names; problems accumulate in `problems`."""

    def __init__(self, file: Path, data: dict[str, Any]):
        self.file, self.root, self.data = file, file.parent, data
        self.problems: list[Problem] = []

    def world(self, keys: WorldKeys) -> WorldConfig | None:
        """Every check; the config when the keys allow one (the caller raises when problems were found)."""
        pipeline = self.pipeline("pipeline", keys.pipeline)
        edit_pipeline = self.pipeline("edit_pipeline", keys.edit_pipeline)
        prompts, categories = self.manifest(("prompts",), keys.prompts, PROMPT_COLUMNS, "category")
        edits, edit_types = self.manifest(("edits",), keys.edits, EDIT_COLUMNS, "edit_type")
        self.pairs(keys)
        specialists = {
            name: self.specialist(name, entry, categories) for name, entry in keys.specialists.items()
        }
        self.resolution(keys.resolution)
        self.edit_vision_area(keys.edit_vision_area)
        clip = self.judge("clip", keys.judge.clip if keys.judge else None)
        vlm = self.judge("vlm", keys.judge.vlm if keys.judge else None)
        text_cache = self.path(keys.text_cache)
        if text_cache.exists() and not text_cache.is_dir():
            self.problem(("text_cache",), f"expected a folder (or none yet), found the file {text_cache}")
        if self.problems or None in (pipeline, prompts, clip, keys.resolution) or categories is None:
            return None
        return WorldConfig(
            file=self.file, root=self.root, pipeline=pipeline, edit_pipeline=edit_pipeline,
            student=keys.student, specialists=specialists, resolution=keys.resolution, prompts=prompts,
            edits=edits, edit_vision_area=keys.edit_vision_area, clip=clip, vlm=vlm, text_cache=text_cache,
            categories=categories, edit_types=edit_types or (),
        )

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(loc, message))

    def path(self, value: str) -> Path:
        """A path of the file: relative to the world folder, made absolute."""
        return (self.root / value).resolve()

    def folder(self, loc: Loc, value: str | None, what: str) -> Path | None:
        """The absolute folder `value` names; None (and a problem) when it is not an existing folder."""
        if value is None:
            return None
        path = self.path(value)
        if not path.exists():
            self.problem(loc, f"expected {what}, found {value!r} (no such folder: {path})")
        elif not path.is_dir():
            self.problem(loc, f"expected {what}, found {value!r} (a file, not a folder)")
        else:
            return path
        return None

    def config_of(self, loc: Loc, file: Path, what: str) -> dict[str, Any] | None:
        """A folder's JSON config (model_index.json, config.json); None (and a problem) when unreadable."""
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.problem(loc, f"expected {what}, found no {file.name} in {file.parent}")
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.problem(loc, f"expected {what}, found an unreadable {file} ({exc})")
            return None
        if not isinstance(config, dict):
            self.problem(loc, f"expected {what}, found {show(config)} in {file}")
            return None
        return config

    def pipeline(self, key: str, value: str | None) -> Path | None:
        """A diffusers pipeline folder of the right class, with the components the world loads."""
        classes = PIPELINE_CLASSES[key]
        what = f"a {' or '.join(classes)} folder"
        folder = self.folder((key,), value, what)
        if folder is None:
            return None
        index = self.config_of((key,), folder / "model_index.json", what)
        if index is None:
            return None
        found = index.get("_class_name")
        if found not in classes:
            self.problem((key,), f"expected {what}, found _class_name {found!r} in {folder / 'model_index.json'}")
            return None
        missing = [part for part in PIPELINE_PARTS if not (folder / part).is_dir()]
        if missing:
            parts = ", ".join(f"{p}/" for p in PIPELINE_PARTS)
            absent = ", ".join(f"{p}/" for p in missing)
            self.problem((key,), f"expected {what} with {parts}, found no {absent} in {folder}")
            return None
        return folder

    def specialist(self, name: str, entry: SpecialistKeys, categories: tuple[str, ...] | None) -> SpecialistConfig:
        short = isinstance(self.data["specialists"][name], str)  # `name: folder`
        loc: Loc = ("specialists", name)
        if name == "base":
            self.problem(loc, "expected a specialist name other than 'base' (the base teacher), found 'base'")
        transformer = lora = None
        if entry.transformer is not None:
            transformer = self.transformer(loc if short else (*loc, "transformer"), entry.transformer)
        if entry.lora is not None:
            lora = self.folder((*loc, "lora"), entry.lora, "a LoRA folder (adapter_config.json)")
            if lora is not None and not (lora / "adapter_config.json").is_file():
                self.problem((*loc, "lora"), f"expected a LoRA folder (adapter_config.json), found none in {lora}")
        taught = entry.categories if entry.categories is not None else [name]
        if categories is not None:
            unknown = [c for c in taught if c not in categories]
            if unknown:
                names = ", ".join(categories)
                where = (*loc, "categories") if entry.categories is not None else loc
                hint = did_you_mean(unknown[0], categories) if len(unknown) == 1 else ""
                hint = hint if hint.startswith("; did") else ""
                noun = "categories" if entry.categories is not None else "a specialist named after a category"
                self.problem(
                    where,
                    f"expected {noun} of the prompt manifest ({names}), found {', '.join(map(repr, unknown))}{hint}",
                )
        return SpecialistConfig(name, transformer, lora, frozenset(taught))

    def transformer(self, loc: Loc, value: str) -> Path | None:
        """A diffusers transformer folder (save_pretrained) of Qwen-Image's class."""
        what = f"a {TRANSFORMER_CLASS} folder"
        folder = self.folder(loc, value, what)
        config = None if folder is None else self.config_of(loc, folder / "config.json", what)
        if config is None:
            return None
        if config.get("_class_name") != TRANSFORMER_CLASS:
            found = config.get("_class_name")
            self.problem(loc, f"expected {what}, found _class_name {found!r} in {folder / 'config.json'}")
            return None
        return folder

    def resolution(self, value: int | None) -> None:
        if value is not None and (value <= 0 or value % PATCH):
            self.problem(("resolution",), f"expected a positive multiple of {PATCH} (pixels), found {value}")

    def edit_vision_area(self, value: int) -> None:
        if value < MIN_EDIT_VISION_AREA:
            self.problem(
                ("edit_vision_area",),
                f"expected a positive int of at least {MIN_EDIT_VISION_AREA} (pixels, 28*28*4), found {value}",
            )

    def judge(self, key: str, value: str | None) -> Path | None:
        """A transformers model folder whose config.json names the judge's architecture."""
        arch = JUDGE_CLASSES[key]
        loc: Loc = ("judge", key)
        folder = self.folder(loc, value, f"a {arch} folder")
        if folder is None:
            return None
        config = self.config_of(loc, folder / "config.json", f"a {arch} folder")
        if config is None:
            return None
        found = config.get("architectures")
        if not (isinstance(found, list) and arch in found):
            self.problem(loc, f"expected a {arch} folder, found architectures {show(found)} in {folder / 'config.json'}")
            return None
        return folder

    def pairs(self, keys: WorldKeys) -> None:
        """Keys that only make sense together: the edit pipeline, its manifest, an edit-pipeline student."""
        if keys.edits is not None and keys.edit_pipeline is None and self.data.get("edit_pipeline") is None:
            self.problem(("edits",), "expected edits only with an edit_pipeline, found no edit_pipeline")
        if keys.edit_pipeline is not None and keys.edits is None and self.data.get("edits") is None:
            self.problem(("edit_pipeline",), "expected an edits manifest (edits:) with it, found none")
        if keys.student == "edit_pipeline" and keys.edit_pipeline is None and self.data.get("edit_pipeline") is None:
            self.problem(("student",), "expected 'pipeline' in a world without edit_pipeline, found 'edit_pipeline'")

    def manifest(
        self, loc: Loc, value: str | None, columns: Sequence[str], group: str
    ) -> tuple[Path | None, tuple[str, ...] | None]:
        """A manifest's path and its groups (categories, edit types) in order of first appearance."""
        if value is None:
            return None, None
        path = self.path(value)
        if not path.is_file():
            self.problem(loc, f"expected a parquet file, found {value!r} (no such file: {path})")
            return None, None
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as exc:
            self.problem(loc, f"expected a parquet file, found {value!r} (pyarrow: {_first_line(exc)})")
            return None, None
        optional = ["category"] if "category" not in columns and "category" in schema.names else []
        missing = [c for c in columns if c not in schema.names]
        if missing:
            self.problem(loc, f"expected columns {', '.join(columns)} in {value!r}, found no {', '.join(missing)}"
                         f" (its columns: {', '.join(schema.names) or 'none'})")
            return None, None
        wrong = [c for c in [*columns, *optional] if not pa.types.is_string(schema.field(c).type)
                 and not pa.types.is_large_string(schema.field(c).type)]
        if wrong:
            found = ", ".join(f"{c}: {schema.field(c).type}" for c in wrong)
            self.problem(loc, f"expected string columns in {value!r}, found {found}")
            return None, None
        try:
            table = pq.read_table(path, columns=[*columns, *optional])
        except (OSError, pa.ArrowException) as exc:  # a readable footer over damaged column data
            self.problem(loc, f"expected a parquet file, found {value!r} (pyarrow: {_first_line(exc)})")
            return None, None
        content = self.rows(loc, value, table, [*columns, *optional], group)
        if loc == ("edits",):
            self.sources(loc, value, table.column("source").to_pylist())
        return (path, content) if content is not None else (None, None)

    def rows(self, loc: Loc, value: str, table: pa.Table, columns: Sequence[str], group: str) -> tuple[str, ...] | None:
        """The manifest's rows: no empty cells, known splits, rows in each; its groups (None on a problem)."""
        ok = True
        for column in columns:
            nulls = table.column(column).null_count
            if nulls:
                self.problem(loc, f"expected a value in every row of column {column!r} of {value!r}, found {nulls} null(s)")
                ok = False
        splits = table.column("split").to_pylist()
        unknown = sorted({s for s in splits if s not in SPLITS and s is not None})
        if unknown:
            self.problem(loc, f"expected split values 'train' or 'heldout' in {value!r}, found "
                         f"{', '.join(map(repr, unknown[:MISSING_SHOWN]))}")
            ok = False
        empty = [s for s in SPLITS if s not in splits]
        if empty:
            self.problem(loc, f"expected rows in every split (train, heldout) of {value!r}, found none in "
                         f"{', '.join(empty)}")
            ok = False
        groups = tuple(dict.fromkeys(g for g in table.column(group).to_pylist() if g is not None))
        return groups if ok else None

    def sources(self, loc: Loc, value: str, sources: list[str | None]) -> None:
        """Edit source images are paths relative to the world folder, and must exist."""
        missing = [s for s in dict.fromkeys(sources) if s is not None and not (self.root / s).is_file()]
        if missing:
            shown = ", ".join(map(repr, missing[:MISSING_SHOWN]))
            more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
            self.problem(loc, f"expected the source images of {value!r} (paths relative to the world folder), "
                         f"found {len(missing)} missing: {shown}{more}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


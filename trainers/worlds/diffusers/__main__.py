"""``python -m trainers.worlds.diffusers {info,prepare} WORLD``: a real-model world's metadata, and its text cache.

``info`` reads world.yaml and the manifests (no weights): categories, edit types, specialists, metrics.
``prepare`` encodes every manifest prompt and edit instruction (with its source image) with the
pipelines' own text encoders and templates into the world's ``text_cache`` folder, with a progress bar.
The sweep runs ``prepare`` itself before any trial; a trial only reads the cache. Exit 2 on a bad world.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import WorldFileError, read_world_config
from .world import DiffusersWorld


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.worlds.diffusers", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["info", "prepare"], help="info: metadata; prepare: fill the text cache")
    parser.add_argument("world", help="a world folder or its world.yaml")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            info = DiffusersWorld.info(args.world)
            print(json.dumps({"categories": info.categories, "edit_types": info.edit_types,
                              "specialists": {k: sorted(v) for k, v in info.specialists.items()},
                              "metrics": dict(info.metrics)}))
            return 0
        config = read_world_config(args.world)
        stats = DiffusersWorld(config.file).prepare(progress=not args.no_progress)
    except (WorldFileError, ValueError, OSError) as err:
        print(f"error: {err}" if not isinstance(err, WorldFileError) else str(err), file=sys.stderr)
        return 2
    print(json.dumps({"text_cache": str(config.text_cache), **stats}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

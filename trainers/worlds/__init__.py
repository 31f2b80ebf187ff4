"""World implementations besides the embedded tiny world (``trainers/tinyworld``); resolved by ``trainers.world``."""

"""Build the local model and data sets ahead of time: ``python -m launch.make_assets [--cache-dir DIR]``.

The same happens on first use of a ``local://`` path; this command only does it
up front (and prints where things are). The library call is
``rlcore.local_model.make_local_model(out_dir)``.
"""

from __future__ import annotations

import argparse

from rlcore.assets import BUILDERS, SCHEME, resolve
from rlcore.config import TrainerConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launch.make_assets", description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=TrainerConfig.cache_dir, help="where to build (trainer.cache_dir)")
    args = parser.parse_args(argv)
    for name in BUILDERS:
        print(f"{SCHEME}{name} -> {resolve(SCHEME + name, args.cache_dir, name)}", flush=True)


if __name__ == "__main__":
    main()

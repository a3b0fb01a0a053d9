"""Command-line entry points: ``python -m launch.train`` and ``python -m launch.make_assets``."""

"""Train: ``python -m launch.train --config launch/configs/grpo_arithmetic.yaml [key=value ...]``.

Without a cluster address it starts a local Ray on 127.0.0.1 and stops it at
the end. Under ``ray job submit`` (or with ``ray.address=...``) it joins that
cluster. A bad config, model path or data file exits with code 2 and one line
that names the key, file or row, before any actor starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rlcore.assets import AssetError, resolve
from rlcore.config import Config, ConfigError, load_config
from rlcore.data import DataError, check_prompt_lengths, load_preferences, load_prompts, with_length_targets

DEFAULT_CONFIG = "launch/configs/grpo_arithmetic.yaml"
# Every actor inherits these: keep the per-step lines readable among the workers' logs.
QUIET_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::UserWarning",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launch.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help=f"YAML preset (default: built-in defaults; see {DEFAULT_CONFIG})")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.total_steps=20 rollout.num_workers=2")
    return parser.parse_args(argv)


def prepare(cfg: Config):
    """Resolve the model and data paths (building ``local://`` assets) and load the rows.

    Prompt rows for algorithms that sample; preference pairs for offline ones.
    """
    from transformers import AutoTokenizer

    from algorithms import get_algorithm_class

    cache, dc = cfg.trainer.cache_dir, cfg.data
    model_path = resolve(cfg.model.path, cache, "model.path")
    if cfg.model.critic_path:
        cfg.model.critic_path = resolve(cfg.model.critic_path, cache, "model.critic_path")
    train_files = [resolve(f, cache, "data.train_files") for f in dc.train_files]
    eval_files = [resolve(f, cache, "data.eval_files") for f in dc.eval_files]
    if get_algorithm_class(cfg.algorithm.name).uses_rollout:
        train = load_prompts(train_files, dc.prompt_key, dc.answer_key)
        evals = load_prompts(eval_files, dc.prompt_key, dc.answer_key) if eval_files else []
    else:
        train = load_preferences(train_files, dc.prompt_key, dc.chosen_key, dc.rejected_key)
        evals = load_preferences(eval_files, dc.prompt_key, dc.chosen_key, dc.rejected_key) if eval_files else []
    if dc.length_target_mode != "none":
        span = (dc.length_target_mode, dc.length_target_min, dc.length_target_max)
        train = with_length_targets(train, *span, seed=cfg.trainer.seed)
        evals = with_length_targets(evals, *span, seed=cfg.trainer.seed + 1)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    check_prompt_lengths(train + evals[: dc.max_eval_prompts], tokenizer, dc.max_prompt_tokens)
    return model_path, train, evals


def init_ray(cfg: Config) -> bool:
    """Join the given or ambient cluster, else start a local one on loopback. Returns True if started here."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": QUIET_ENV}
    if address:
        import ray

        ray.init(address=address, runtime_env=env, log_to_driver=True)
        return False
    # ray.init maps 127.0.0.1 to the machine's outward IP unless Ray runs in its
    # single-machine mode, which this switch selects (read when Ray is imported).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env=env, configure_logging=True, logging_level=logging.WARNING)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        model_path, train_rows, eval_rows = prepare(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (AssetError, DataError) as exc:
        print(f"input error: {exc}", file=sys.stderr)
        return 2

    started = init_ray(cfg)
    import ray

    from launch.trainer import Trainer

    try:
        final = Trainer(cfg, model_path, train_rows, eval_rows).fit()
        if final is not None:
            print(f"final policy exported to {final}", flush=True)
    finally:
        if started:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

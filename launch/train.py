"""Train: ``python -m launch.train --config launch/configs/grpo_arithmetic.yaml [key=value ...]``.

Without a cluster address it starts a local Ray on 127.0.0.1 and stops it at
the end. Under ``ray job submit`` (or with ``ray.address=...``) it joins that
cluster. A bad config, model path or data file exits with code 2 and one line
that names the key, file or row, before any actor starts; so does an output
folder that another driver is using or that holds an earlier run's results
(``launch.run_dir``). The prompts are rendered, and the rows checked, with the
tokenizer while Ray and the learners start; what that finds stops the run the
same way, before its first step.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor

from launch.build import Data, Plan, configure, load, render
from launch.checkpoints import CheckpointError, Checkpoints
from launch.run_dir import TRAIN, Outputs, RunDir, claim
from rewards.api import RewardStartError
from rlcore.assets import AssetError
from rlcore.config import Config, ConfigError
from rlcore.data import DataError

DEFAULT_CONFIG = "launch/configs/grpo_arithmetic.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launch.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help=f"YAML preset (default: built-in defaults; see {DEFAULT_CONFIG})")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.total_steps=20 rollout.num_workers=2")
    return parser.parse_args(argv)


def init_ray(cfg: Config) -> bool:
    """Join the given or ambient cluster, else start a local one on loopback. Returns True if started here."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        import ray

        ray.init(address=address, log_to_driver=True)
        return False
    # ray.init maps 127.0.0.1 to the machine's outward IP unless Ray runs in its
    # single-machine mode, which this switch selects (read when Ray is imported).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    # address="local": a new Ray, never the last one `ray start` recorded (/tmp/ray/ray_current_cluster), which a
    # plain ray.init() joins, and waits for forever when that cluster died without `ray stop`.
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=True, logging_level=logging.WARNING)
    return True


def plan_data_and_ray(args: argparse.Namespace, outputs: Outputs, adjust=None,
                      wait: bool = True) -> tuple[Plan, Data | Future, bool, RunDir] | None:
    """``configure`` (``adjust(plan)`` after it, which may return the ``Outputs`` of this plan instead), ``load`` and
    ``claim`` the output folder for the command that writes ``outputs`` there, then ``render`` in a thread while Ray
    starts (``init_ray``): the tokenizer loads while Ray's processes come up. Returns the plan, the data, whether Ray
    was started here and the claimed folder (its lock held until ``RunDir.release`` or the process ends). A config or
    input error is printed as one line and gives None, for the caller to exit with code 2; no actor has started then.
    A missing file, a malformed row, a folder in use or holding earlier results, or a resume with only damaged
    checkpoints stops the run before Ray starts; a prompt too long for ``data.max_prompt_tokens``, or a row the
    source's ``check`` refuses, is found while it starts (and Ray, if started here, stopped).

    ``wait=False``: the data is returned as the future of ``render``, still running, for the caller to take once it
    has started what does not need it (``launch.train``: the learners), and to report its errors (``refusal``)."""
    run_dir = None
    try:
        plan = configure(args.config, args.overrides)
        if adjust is not None:
            outputs = adjust(plan) or outputs
        rows = load(plan)
        run_dir = claim(plan.cfg, outputs)
        if outputs.resumable and plan.cfg.trainer.resume:
            Checkpoints(run_dir.path / "checkpoints", {}, keep=0).check()
    except ConfigError as exc:
        return refused(f"config error: {exc}", run_dir)
    except (AssetError, DataError) as exc:
        return refused(f"input error: {exc}", run_dir)
    except CheckpointError as exc:
        return refused(f"input error: trainer.resume=true: {exc}; start afresh with trainer.overwrite=true", run_dir)
    pool = ThreadPoolExecutor(1)
    data = pool.submit(render, plan, rows)
    pool.shutdown(wait=False)
    started = init_ray(plan.cfg)
    if not wait:
        return plan, data, started, run_dir
    try:
        return plan, data.result(), started, run_dir
    except BaseException as exc:
        stop_ray(started)
        line = refusal(exc)
        if line is None:
            run_dir.release()
            raise
        return refused(line, run_dir)


def refusal(exc: BaseException) -> str | None:
    """The one line of an error that ``render`` raises for the user's input (a row, a file, a prompt budget, a config
    its checks refuse); None for any other exception."""
    if isinstance(exc, ConfigError):
        return f"config error: {exc}"
    if isinstance(exc, (AssetError, DataError)):
        return f"input error: {exc}"
    return None


def refused(line: str, run_dir: RunDir | None) -> None:
    """Print the one line of a refused launch and give the output folder back."""
    print(line, file=sys.stderr)
    if run_dir is not None:
        run_dir.release()


def stop_ray(started: bool) -> None:
    """``ray.shutdown()`` when this process started the local Ray (``init_ray`` returned True)."""
    if started:
        import ray

        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    built = plan_data_and_ray(parse_args(argv), TRAIN, wait=False)  # rendered while Ray and the learners start
    if built is None:
        return 2
    plan, data, started, run_dir = built
    from actors.groups import end_models
    from launch.trainer import Stopped, StopRequest, Trainer, TrainingError

    stop = StopRequest()
    stop.install()
    try:
        trainer = Trainer(plan, data, stop)
        final = trainer.fit()
        if final is not None:
            print(f"final policy exported to {final}", flush=True)
        end_models()  # while the trainer holds its groups
    except RewardStartError as exc:  # a user's reward class raised in its constructor: an input error
        print(f"input error: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, AssetError, DataError) as exc:  # found by render, while the roles started
        print(refusal(exc), file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"training error: {exc}", file=sys.stderr)
        return 1
    except Stopped as exc:
        print(str(exc), file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"stopped at once by a second signal: the step in progress is lost; resume from the newest checkpoint "
              f"in {plan.cfg.trainer.output_dir}/checkpoints with trainer.resume=true", file=sys.stderr)
        return 130
    finally:
        stop_ray(started)
        run_dir.release()
    return 0


def exit_process(code: int) -> None:
    """End the command's process with ``code``. After a command that succeeded (0), everything it wrote is closed,
    Ray stopped (or, a cluster it joined, left here) and the output folder released, so the interpreter's teardown
    is skipped: with torch, transformers and Ray loaded it took 1.4-1.5 s of every run on 2 cores (BENCHMARKS.md).
    Any other code exits the usual way, every ``atexit`` handler run."""
    if code != 0:
        sys.exit(code)
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    exit_process(main())

"""Resize a running job's rollout pool: ``python -m launch.scale RUN_DIR rollout.num_workers=N``.

``RUN_DIR`` is the job's ``trainer.output_dir``. The request is a file there
(``scale_request.json``) that the job's driver picks up before its next step:
new workers start on any node of the job's Ray cluster with the resources
(``rollout.resources``) and load the current weights before they get prompts;
leaving workers finish their work in flight. The driver answers in
``scale_reply.json``, and this command prints it. Whether a job runs there is
the folder's driver lock (``launch.run_dir``). A file and not a Ray call, so
the same command works for a job with its private local Ray and for one under
``ray job submit`` (run it there with ``ray job submit -- python -m launch.scale ...``,
where the output dir is).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from launch.checkpoints import write_json
from launch.run_dir import holder

REQUEST, REPLY = "scale_request.json", "scale_reply.json"
KEY = "rollout.num_workers"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class ScaleRequests:
    """The driver's side: the run dir's pending request, taken once, and the reply to it."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir

    def take(self) -> dict | None:
        """The pending request (``{"id", "num_workers"}``), removed from the dir; None if there is none."""
        request = read_json(self.dir / REQUEST)
        if request is not None:
            (self.dir / REQUEST).unlink(missing_ok=True)
        return request

    def reply(self, request: dict, **outcome) -> None:
        write_json(self.dir / REPLY, {"id": request["id"], **outcome})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launch.scale", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="the running job's trainer.output_dir")
    parser.add_argument("setting", help=f"{KEY}=N (N >= 1)")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds to wait for the job to apply it (new vLLM engines must start first)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    key, _, value = args.setting.partition("=")
    if key.strip() != KEY or not value.strip().isdigit() or int(value) < 1:
        print(f"scale error: expected {KEY}=N with N >= 1, got '{args.setting}'", file=sys.stderr)
        return 2
    run_dir = args.run_dir.expanduser().resolve()
    running = holder(run_dir)
    if running is None:
        print(f"scale error: no running job writes to {run_dir} (no driver holds its lock); give the job's "
              "trainer.output_dir", file=sys.stderr)
        return 2
    request = {"id": uuid.uuid4().hex, "num_workers": int(value)}
    write_json(run_dir / REQUEST, request)
    print(f"asked the job in {run_dir} (driver pid {running.get('pid')} on {running.get('host')}) for {KEY}={value}; "
          "waiting for its next step", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        reply = read_json(run_dir / REPLY)
        if reply is not None and reply.get("id") == request["id"]:
            if reply.get("error"):
                print(f"scale error: {reply['error']}", file=sys.stderr)
                return 1
            print(f"{KEY}: {reply['before']} -> {reply['after']} from step {reply['step']}", flush=True)
            return 0
        if holder(run_dir) is None:
            print(f"scale error: the job in {run_dir} ended before it took the request", file=sys.stderr)
            (run_dir / REQUEST).unlink(missing_ok=True)
            return 1
        time.sleep(0.5)
    (run_dir / REQUEST).unlink(missing_ok=True)
    print(f"scale error: the job in {run_dir} did not apply the request in {args.timeout:.0f} s; it was withdrawn",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

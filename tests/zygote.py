"""A stand-in for ``python`` in the end-to-end tests' command-line runs that starts them without their imports.

Every ``python -m launch.train ...`` of a test spends about 3 s importing the driver (torch, transformers, Ray,
``launch.*``) before it reads its config (BENCHMARKS.md, "Where a run's start-up goes"). A zygote server imports
those once and forks one child per run. The child is a fresh process as far as the run can tell: it gets the
caller's stdin, stdout and stderr (passed over the socket), its working folder, environment and arguments, then runs
the module as ``__main__`` (``runpy``), just as ``python -m`` would, and exits with the module's code. Its Ray
client, roles, signals and exit path are the command's own.

    python tests/zygote.py serve SOCKET          the server (started by ``python()``, once per test session)
    python tests/zygote.py -m launch.train ...   a run: with ZYGOTE_SOCKET set, forked by the server; its exit code
                                                 and signals are the run's. Anything else (a script, ``-c``, no
                                                 server) execs the real interpreter.

The server forwards nothing but the run's exit status; a caller that dies (a test's timeout kills it) takes its
run with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

SOCKET_ENV = "ZYGOTE_SOCKET"
SWITCH = "RLCORE_TEST_ZYGOTE"
"""``RLCORE_TEST_ZYGOTE=0``: the tests start their runs with the plain interpreter (to compare, or to debug)."""
PRELOAD = ("ray", "launch.train", "launch.trainer", "launch.evaluate", "launch.label_steps", "launch.scale",
           "transformers.models.auto.tokenization_auto")
"""What the server imports once: every ``launch`` command a test starts, and the tokenizer classes ``render`` loads."""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
"""Signals the caller passes on to its run (a test stops a driver with SIGTERM)."""
_STATUS = struct.Struct("!i")


# ---- the tests' side: one server per test session -------------------------------------------------------------

_python: str | None = None


def python() -> str:
    """The ``python`` for the tests' command-line runs: a wrapper that forks them from this session's server, which
    starts on the first call (a few seconds, once) and stops when the tests end; ``sys.executable`` with
    ``RLCORE_TEST_ZYGOTE=0``."""
    global _python
    if os.environ.get(SWITCH) == "0":
        return sys.executable
    if _python is None:
        import atexit
        import shutil
        import subprocess
        import tempfile

        folder = tempfile.mkdtemp(prefix="zygote-")
        sock = os.path.join(folder, "socket")
        server = subprocess.Popen([sys.executable, __file__, "serve", sock], cwd=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), stdout=subprocess.PIPE, text=True)
        atexit.register(lambda: (server.kill(), server.wait(), shutil.rmtree(folder, ignore_errors=True)))
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the zygote server did not start (exit code {server.wait()})")
        wrapper = os.path.join(folder, "python")
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\n{SOCKET_ENV}="{sock}" exec "{sys.executable}" "{os.path.abspath(__file__)}" "$@"\n')
        os.chmod(wrapper, 0o755)
        _python = wrapper
    return _python


# ---- the caller: a process as cheap as a bare interpreter ------------------------------------------------------

def call(argv: list[str]) -> None:
    """Run ``python *argv`` forked by the server at $ZYGOTE_SOCKET, or exec the interpreter when that cannot be."""
    path = os.environ.get(SOCKET_ENV)
    if not path or len(argv) < 2 or argv[0] != "-m":
        os.execv(sys.executable, [sys.executable, *argv])
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        os.execv(sys.executable, [sys.executable, *argv])
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [_STATUS.pack(len(request)) + request], [0, 1, 2])
    try:
        pid = _STATUS.unpack(_read(conn, _STATUS.size))[0]
        for sig in FORWARDED:
            signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
        status = _STATUS.unpack(_read(conn, _STATUS.size))[0]
    except EOFError:
        raise SystemExit("zygote: the server went away before the run ended") from None
    if os.WIFSIGNALED(status):  # died of a signal: so does the caller, as subprocess reports it (-N)
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    sys.exit(os.waitstatus_to_exitcode(status))


def _read(conn: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes, or EOFError when the other end closes first."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


# ---- the server ------------------------------------------------------------------------------------------------

def serve(path: str) -> dict:
    """Import ``PRELOAD``, then fork a child per connection. Returns (in the child only) the run's request."""
    import importlib
    import selectors

    sys.path[0] = os.getcwd()  # the repository, as for ``python -m`` (not this file's folder)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when Ray is imported (launch.train)
    for name in PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    runs: dict[int, socket.socket] = {}  # child pid -> its caller's connection
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in events.select(timeout=0.05):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                (size,), body = _STATUS.unpack(msg[:_STATUS.size]), msg[_STATUS.size:]
                try:
                    body += _read(conn, size - len(body))
                except EOFError:  # the caller died while it sent its request: nothing to run
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    events.close()
                    listener.close()
                    for other in runs.values():
                        other.close()
                    conn.close()
                    return {**json.loads(body), "fds": fds}
                for fd in fds:
                    os.close(fd)
                conn.sendall(_STATUS.pack(pid))
                runs[pid] = conn
                events.register(conn, selectors.EVENT_READ, pid)
            else:  # a caller closed its end before its run ended: it was killed, and so is the run
                events.unregister(key.fileobj)
                os.kill(key.data, signal.SIGKILL)  # reaped below, its status sent nowhere
        while runs:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = runs.pop(pid)
            if conn in events.get_map():  # not unregistered: its caller still waits for the status
                events.unregister(conn)
                try:
                    conn.sendall(_STATUS.pack(status))
                except OSError:  # the caller died after the last select: no one to tell
                    pass
            conn.close()


def become(request: dict) -> None:
    """In the forked child: take on the caller's streams, folder, environment and arguments, and run the module."""
    import runpy
    import warnings

    for target, fd in enumerate(request["fds"]):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *[p for p in sys.path[1:] if p not in extra]]
    # The server imported the module already; ``python -m`` imports it a second time too when another module does.
    warnings.filterwarnings("ignore", "'.*' found in sys.modules after import of package", RuntimeWarning)
    sys.argv = request["argv"][1:]  # [module, args...]; run_module puts the module's file first
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        become(serve(sys.argv[2]))
    else:
        call(sys.argv[1:])

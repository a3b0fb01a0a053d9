"""The GPU install path (``scripts/setup.sh gpu``): the order of its steps and flash-attn's optional one (with a fake
pip, no network), its requirements resolved on the package index (a dry run: nothing installed, no wheel fetched),
and attention through torch SDPA when flash-attn is absent."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "scripts" / "setup.sh"
# pip's words when it cannot reach the index (as opposed to an index that answers and cannot satisfy a requirement)
UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection", "Max retries exceeded",
               "Temporary failure in name resolution", "Name or service not known", "ProxyError", "SSLError",
               "ConnectTimeout", "ReadTimeout", "Network is unreachable")


def project() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11 or newer")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def setup_extras(engine: str) -> list[str]:
    """The extras ``scripts/setup.sh <engine>`` installs with the project (its ``pip install -e ".[$engine,...]"``)."""
    found = re.search(r'install -e "\.\[\$engine,([a-z,-]+)\]"', SETUP.read_text())
    assert found, "scripts/setup.sh no longer installs the project as pip install -e \".[$engine,...]\""
    return [engine, *found.group(1).split(",")]


def pinned(requirements: list[str], name: str) -> str:
    [req] = [Requirement(r) for r in requirements if Requirement(r).name == name]
    [spec] = req.specifier
    assert spec.operator == "==", f"{req} is not pinned"
    return spec.version


# ---- scripts/setup.sh's steps, with a fake pip ----------------------------------------------------------------------
def run_setup(tmp_path: Path, engine: str, fail_on: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/setup.sh in a copy of the repository's layout whose .venv/bin/python is a fake: it logs each pip
    command and fails the ones naming ``fail_on``."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SETUP, tmp_path / "scripts" / "setup.sh")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"""#!/usr/bin/env bash
[ "$1" = - ] && {{ cat >/dev/null; exit 0; }}  # setup.sh's closing import check
echo "$*" >> {tmp_path}/pip.log
case "$*" in *"{fail_on or '//never//'}"*) echo "pip: build failed (many lines)"; exit 1;; esac
""")
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), engine], capture_output=True, text=True,
                          timeout=60)
    return proc, (tmp_path / "pip.log").read_text().splitlines()


PIP = "-m pip --disable-pip-version-check -q "


def test_setup_gpu_installs_the_extra_then_flash_attn_against_its_torch(tmp_path):
    proc, calls = run_setup(tmp_path, "gpu")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert calls == [PIP + "install --upgrade pip", PIP + 'install -e .[gpu,test,logging,data,lora,reasoning-gym]',
                     PIP + "install setuptools wheel packaging ninja psutil",
                     PIP + "install --no-build-isolation flash-attn"]


def test_setup_gpu_carries_on_without_flash_attn_with_one_warning(tmp_path):
    proc, calls = run_setup(tmp_path, "gpu", fail_on="flash-attn")
    assert proc.returncode == 0
    [warning] = proc.stderr.splitlines()
    assert warning.startswith("warning: flash-attn did not install (see .venv/flash-attn-install.log)")
    assert "torch SDPA" in warning and "pip install --no-build-isolation flash-attn" in warning
    assert "build failed" in (tmp_path / ".venv" / "flash-attn-install.log").read_text()
    assert calls[-1] == PIP + "install --no-build-isolation flash-attn"


def test_setup_cpu_takes_the_cpu_torch_first_and_never_flash_attn(tmp_path):
    proc, calls = run_setup(tmp_path, "cpu")
    assert proc.returncode == 0 and proc.stderr == ""
    assert calls == [PIP + "install --upgrade pip", PIP + "install torch==2.13.0",
                     PIP + "install -e .[cpu,test,logging,data,lora,reasoning-gym]",
                     PIP + "uninstall -y torchvision torchaudio torchcodec"]


# ---- without flash-attn on a GPU: torch SDPA -------------------------------------------------------------------------
def test_attention_falls_back_to_torch_sdpa_without_flash_attn(monkeypatch):
    from actors.models import attention_backend

    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import flash_attn raises ImportError
    assert attention_backend("cuda") == "sdpa"
    monkeypatch.setitem(sys.modules, "flash_attn", type(sys)("flash_attn"))
    assert attention_backend("cuda") == "flash_attention_2"
    assert attention_backend("cpu") == "sdpa"


def test_the_gpu_extra_pins_vllm_and_leaves_flash_attn_to_setup_sh():
    gpu = project()["optional-dependencies"]["gpu"]
    assert pinned(gpu, "vllm")
    assert "flash-attn" not in {Requirement(r).name for r in gpu}, (
        "flash-attn in the gpu extra breaks pip install -e '.[gpu]': PyPI has only its source, whose isolated build "
        "has no torch. scripts/setup.sh gpu installs it after torch, with --no-build-isolation.")


# ---- the gpu extra's requirements, resolved on the index -------------------------------------------------------------
class Resolve:
    """pip resolving what ``scripts/setup.sh gpu`` installs (the project's dependencies and extras, flash-attn being a
    separate step) as a dry run into an empty target: a report, no install. PyPI serves each wheel's metadata on its
    own (PEP 658); ``fast-deps`` reads it out of the wheel with HTTP range requests from an index that does not, so
    no wheel is downloaded either way (vllm's is 336 MB, torch's 555 MB).

    It waits on the index about 30 s for 14 s of CPU, so ``tests/conftest.py`` starts it when the suite starts, and
    the test takes its result: the suite does not wait for the network."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.folder: Path | None = None

    def command(self, fast_deps: bool = True) -> list[str]:
        meta = project()
        requirements = list(meta["dependencies"])
        for extra in setup_extras("gpu"):
            requirements += meta["optional-dependencies"][extra]
        return [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--target",
                str(self.folder / "t"), "--quiet", "--report", str(self.folder / "report.json"), "--timeout", "30",
                "--retries", "2", *(["--use-feature=fast-deps"] if fast_deps else []), *requirements]

    def start(self, fast_deps: bool = True) -> None:
        self.folder = self.folder or Path(tempfile.mkdtemp(prefix="gpu-resolve-"))
        self.proc = subprocess.Popen(self.command(fast_deps), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})

    def result(self, timeout: float = 540) -> tuple[int, str, dict | None]:
        """pip's exit code, its stderr and its report (None when it wrote none); started here if it was not."""
        if self.proc is None:
            self.start()
        _, stderr = self.proc.communicate(timeout=timeout)
        if "invalid choice: 'fast-deps'" in stderr:  # a pip without the feature: PyPI's PEP 658 files suffice
            self.start(fast_deps=False)
            _, stderr = self.proc.communicate(timeout=timeout)
        report = self.folder / "report.json"
        return self.proc.returncode, stderr, json.loads(report.read_text()) if report.is_file() else None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


GPU_RESOLVE = Resolve()
"""The one resolve of the test session (``tests/conftest.py`` starts it, ``close`` s it at the end)."""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_gpu_install_resolves_to_the_pinned_vllm_and_the_torch_it_pins():
    meta = project()
    try:
        code, stderr, report = GPU_RESOLVE.result()
    except subprocess.TimeoutExpired:
        pytest.skip("the package index did not answer pip's dry run within 9 minutes")
    unreachable = [line for line in stderr.splitlines() if any(word in line for word in UNREACHABLE)]
    if code and unreachable:
        pytest.skip(f"the package index cannot be reached: {unreachable[0][:300]}")
    assert code == 0, stderr[-3000:]
    resolved = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
    version = {name: i["metadata"]["version"] for name, i in resolved.items()}
    assert version["vllm"] == pinned(meta["optional-dependencies"]["gpu"], "vllm")
    [torch_req] = [Requirement(r) for r in resolved["vllm"]["metadata"]["requires_dist"]
                   if Requirement(r).name == "torch" and not Requirement(r).marker]
    assert "==" in {s.operator for s in torch_req.specifier} and torch_req.specifier.contains(version["torch"]), (
        f"vllm {version['vllm']} asks for {torch_req}, pip chose torch {version['torch']}")
    assert "flash-attn" not in version
    print("resolved: " + ", ".join(f"{n} {version[n]}" for n in ("vllm", "torch", "transformers", "ray", "peft")
                                   if n in version))

"""The sidecar image, as far as a machine without a container engine can check it: the
Dockerfile passes hadolint, and its install steps (a fresh virtual environment, ``pip install
.``) give a working ``rproxy``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and " AS build" in stages[0]
    final = text[text.rindex("\nFROM "):]
    assert "gcc" not in final and "USER 10001" in final and "HEALTHCHECK" in final
    assert "EXPOSE 7777 9121" in final and "/healthz" in final


def test_the_install_steps_give_a_working_rproxy(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    done = subprocess.run([str(pip), "install", "--no-cache-dir", "--quiet", str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rproxy = env_dir / "bin" / "rproxy"
    done = subprocess.run([str(rproxy), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--metrics-listen" in done.stdout, done.stderr
    check = ("import sys, crcmod.crcmod, hiredis, prometheus_client, h11; "
             "sys.exit(0 if sys.modules['crcmod.crcmod']._usingExtension else 1)")
    assert subprocess.run([str(env_dir / "bin" / "python"), "-c", check],
                          timeout=60).returncode == 0

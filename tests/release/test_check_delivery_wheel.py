"""A partner's install: the project's wheel in a fresh virtualenv WITHOUT Airflow (the core
dependencies of uv.lock only), away from the checkout, runs `ctdc check-delivery`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "bin" / "uv"


def _run(*args, cwd, env=None, check=True):
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args[:3]} exited {done.returncode}: {done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def partner_venv(tmp_path_factory):
    assert UV.is_file(), "make install provides .tools/bin/uv"
    root = tmp_path_factory.mktemp("partner")
    _run(UV, "build", "--wheel", "--out-dir", root / "dist", cwd=REPO)
    (wheel,) = (root / "dist").glob("ctdc_harmonizer-*.whl")
    requirements = root / "requirements.txt"
    # The locked versions of the core dependencies: no extra, so no Airflow.
    _run(
        UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--quiet",
        "-o", requirements, cwd=REPO,
    )  # fmt: skip
    assert "apache-airflow" not in requirements.read_text()
    python = sys.executable if not hasattr(sys, "_base_executable") else sys._base_executable
    _run(UV, "venv", "--quiet", "--python", python, root / "venv", cwd=root)
    _run(
        UV, "pip", "install", "--quiet", "--python", root / "venv" / "bin" / "python",
        "-r", requirements, wheel, cwd=root,
    )  # fmt: skip
    return root


def test_the_wheel_checks_a_delivery_without_airflow(partner_venv):
    bin_dir = partner_venv / "venv" / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CTDC_", "AIRFLOW", "PYTHON", "VIRTUAL_ENV"))
    }
    work = partner_venv / "work"
    work.mkdir()
    no_airflow = _run(bin_dir / "python", "-c", "import airflow", cwd=work, env=env, check=False)
    assert no_airflow.returncode != 0 and "No module named 'airflow'" in no_airflow.stderr
    ctdc = bin_dir / "ctdc"
    _run(ctdc, "generate", "--out", work / "landing", "--records", "120", cwd=work, env=env)
    # The mappings and the codebook come with the wheel (no checkout around it).
    partners = sorted(p.name for p in (work / "landing").iterdir())
    assert len(partners) >= 3
    for partner in partners:
        done = _run(
            ctdc, "check-delivery", "--partner", partner, work / "landing",
            "--out", work / "receipts" / partner, cwd=work, env=env,
        )  # fmt: skip
        assert f"Delivery check for partner {partner}" in done.stdout
        assert (work / "receipts" / partner / "receipt.html").is_file()
    broken = work / "broken" / "hotline"
    broken.mkdir(parents=True)
    (broken / "hotline_reports_2025.jsonl").write_text('{"report_date": "2025-01-01"\n')
    failed = _run(ctdc, "check-delivery", "--partner", "hotline", broken, cwd=work, env=env,
                  check=False)  # fmt: skip
    assert failed.returncode == 1
    assert "partner 'hotline', file 'hotline_reports_2025.jsonl'" in failed.stderr
    assert "Traceback" not in failed.stderr

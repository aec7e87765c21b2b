"""The package as a lab installs it: ``python -m build`` makes a wheel and an sdist, and the wheel, installed
into a new virtual environment that sees no source tree, runs ``--help``, a training phase and a study on the
tiny backbone (built from the wheel's package data) and the fixture corpus (stand-in for the real bible.db).

The new environment's dependencies are this environment's, adapterxfer left out, linked into its
site-packages (so nothing is downloaded): pip installs the wheel offline, and ``pip check`` confirms that
they meet the wheel's requirements."""

import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STEPS = ["max_steps=2", "eval_every=2", "batch_size=4", "max_length=32", "precision=fp32"]


def link_dependencies(site_packages: Path) -> None:
    """Links to everything in this environment's site-packages but adapterxfer's own (editable) install."""
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("adapterxfer", "__editable__")):
            (site_packages / entry.name).symlink_to(entry)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(arg) for arg in args], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_clean_venv_and_runs_a_phase_and_a_study(tmp_path, fixture_home):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, REPO)
    (wheel,), (sdist,) = dist.glob("adapterxfer-*.whl"), dist.glob("adapterxfer-*.tar.gz")
    assert "adapterxfer/resources/tiny_corpus.txt" in zipfile.ZipFile(wheel).namelist()
    assert any(name.endswith("/adapterxfer/cli.py") for name in tarfile.open(sdist).getnames())

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    purelib = next((venv / "lib").glob("python3*/site-packages"))
    link_dependencies(purelib)
    python, work = venv / "bin" / "python", tmp_path / "work"
    run(python, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "-q", wheel)
    assert "No broken requirements found" in run(python, "-m", "pip", "check").stdout
    work.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "ADAPTERXFER_HOME": str(fixture_home), "HOME": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    where = run(python, "-c", "import adapterxfer; print(adapterxfer.__file__)", cwd=work, env=env).stdout
    assert where.startswith(str(purelib))  # the wheel's copy, not the source tree

    assert "train" in run(venv / "bin" / "adapterxfer", "--help", cwd=work, env=env).stdout
    trained = run(venv / "bin" / "adapterxfer", "train", "task=verses-xref", "backbone=tiny-xlmr", "output_dir=xref",
                  *STEPS, cwd=work, env=env).stdout
    assert "English dev accuracy" in trained and (work / "xref" / "manifest.json").is_file()
    plan = work / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "backbone": "tiny-xlmr", "output": "study", "seeds": [1], "targets": ["verses-genre"],
        "intermediates": ["verses-xref"], "regimes": ["lora"],
        "phase": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "max_length": 32, "precision": "fp32"},
        "target_phase": {"eval_langs": ["en", "fr"]},
        "contrasts": [{"name": "xref", "run": "lora/verses-xref", "versus": "lora/baseline", "primary": True}],
        "statistics": {"effect": 0.02}}))
    run(venv / "bin" / "adapterxfer", "study", "run", plan, cwd=work, env=env)
    assert "## verses-genre (" in (work / "study" / "report.md").read_text()

"""The core stays headless and light: no gradio anywhere in core, no torch on import."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_importing_every_core_module_pulls_in_no_torch_diffusers_or_gradio():
    code = """
import importlib, pkgutil, sys
import core
names = [m.name for m in pkgutil.walk_packages(core.__path__, 'core.') if not m.name.endswith('__main__')]
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio', 'lpips') if m in sys.modules)
print(len(names), heavy)
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr
    count, heavy = out.stdout.split(" ", 1)
    assert int(count) >= 10, "expected to import the whole core package"
    assert heavy.strip() == "[]"


def test_no_core_source_file_imports_gradio():
    offenders = [p for p in (ROOT / "core").rglob("*.py")
                 if any(line.lstrip().startswith(("import gradio", "from gradio"))
                        for line in p.read_text(encoding="utf-8").splitlines())]
    assert offenders == []


def test_building_the_app_loads_no_model_library():
    code = """
import sys
from core.config import Settings
from core.lab import Lab
from ui.app import build_ui
build_ui(Lab(Settings.load(work_dir='lab-work-test')))
print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'lpips') if m in sys.modules))
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_app_help_lists_the_options_without_importing_gradio():
    out = subprocess.run([sys.executable, "-X", "importtime", "app.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--data", "--host", "--port", "--auth", "--runs"):
        assert option in out.stdout
    assert "127.0.0.1" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "gradio" not in imported and "torch" not in imported

"""The layering: the slide pipeline (`cyseg.pipeline`) knows nothing of Cytomine nor of its two front
ends, the legacy job (`cyseg.job`) and the App Engine task (`cyseg.task`), which call it downwards;
the Cytomine plumbing (`cyseg.cytomine`) serves the job and `cyseg dataset` without reaching up into
the job."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CYSEG = ROOT / "cyseg"
CYTOMINE_CLIENT = ("cytomine", "sldc_cytomine")
FRONT_ENDS = ("cyseg.job", "cyseg.task")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module (or name in one) a file imports, anywhere in its code (relative imports resolved)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def offending(folder: Path, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [folder]
    bad = {str(f.relative_to(ROOT)): sorted(n for n in imports(f) if within(n, forbidden)) for f in files}
    return {path: names for path, names in bad.items() if names}


def test_imports_are_read_from_every_kind_of_statement(tmp_path):
    package = tmp_path / "cyseg" / "pipeline"
    package.mkdir(parents=True)
    sample = package / "sample.py"
    sample.write_text("import cytomine.models\nfrom ..job import runner\n"
                      "def f():\n    from cyseg.task.run import main\n")
    found = imports(sample, tmp_path)
    assert {"cytomine.models", "cyseg.job", "cyseg.job.runner", "cyseg.task.run"} <= found
    assert within("cytomine.models", CYTOMINE_CLIENT) and not within("cytomine_like", CYTOMINE_CLIENT)


def test_the_pipeline_imports_neither_cytomine_nor_a_front_end():
    assert offending(CYSEG / "pipeline", CYTOMINE_CLIENT + FRONT_ENDS + ("cyseg.cytomine",)) == {}


def test_the_cytomine_plumbing_does_not_reach_up_into_a_front_end():
    assert offending(CYSEG / "cytomine", FRONT_ENDS) == {}


def test_the_dataset_builder_uses_the_plumbing_not_the_job():
    assert offending(CYSEG / "dataset.py", FRONT_ENDS) == {}
    assert any(within(n, ("cyseg.cytomine",)) for n in imports(CYSEG / "dataset.py"))


def test_the_task_does_not_use_the_job_or_cytomine():
    assert offending(CYSEG / "task", CYTOMINE_CLIENT + ("cyseg.job", "cyseg.cytomine")) == {}


def test_importing_the_whole_pipeline_loads_no_cytomine_module():
    """What the pipeline's own imports pull in (cyseg.coordinates, cyseg.polygons, sldc, ...) included."""
    code = ("import importlib, pkgutil, sys, cyseg.pipeline as p\n"
            "for m in pkgutil.iter_modules(p.__path__): importlib.import_module('cyseg.pipeline.' + m.name)\n"
            "print('\\n'.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert [n for n in loaded.stdout.split() if within(n, CYTOMINE_CLIENT + FRONT_ENDS + ("cyseg.cytomine",))] == []

"""Security: checkpoints load with ``weights_only=True``, nothing runs a shell string, no unsafe deserialisation.

Static checks over every Python file and Snakemake rule of the repository (the HTML pages are checked where they are
built: tests/test_analysis.py and tests/test_workflow.py assert that index.html and report.html load nothing remote).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("saccader", "baselines", "analysis", "bench", "scripts", "tests", "workflow")


def python_files() -> list[Path]:
    files = [p for f in FOLDERS if (ROOT / f).is_dir() for p in (ROOT / f).rglob("*.py")]
    return sorted(p for p in files if ".venv" not in p.parts)


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def is_true(value) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def test_scan_sees_the_code():
    names = {p.relative_to(ROOT).as_posix() for p in python_files()}
    assert {f"saccader/pipeline/{m}.py" for m in ("io", "train", "launch", "attack")} <= names


def test_every_torch_load_is_weights_only():
    bad = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in python_files() for n, fn in calls(p)
           if fn == "torch.load" and not is_true(keyword(n, "weights_only"))]
    assert not bad, f"torch.load without weights_only=True (use saccader.pipeline.io.torch_load): {bad}"


def test_no_unsafe_deserialisation():
    unsafe = {"pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "torch.jit.load", "dill.load"}
    bad = [f"{p.relative_to(ROOT)}:{n.lineno} {fn}" for p in python_files() for n, fn in calls(p)
           if fn in unsafe or (fn.endswith("np.load") or fn == "numpy.load") and is_true(keyword(n, "allow_pickle"))]
    assert not bad, bad


def test_no_shell_strings():
    bad = []
    for p in python_files():
        for n, fn in calls(p):
            where = f"{p.relative_to(ROOT)}:{n.lineno}"
            if fn in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                bad.append(f"{where} {fn}")
            if keyword(n, "shell") is not None and not (isinstance(keyword(n, "shell"), ast.Constant)
                                                        and keyword(n, "shell").value is False):
                bad.append(f"{where} shell=")
            if fn.startswith("subprocess.") and n.args and isinstance(n.args[0], (ast.JoinedStr, ast.BinOp)):
                bad.append(f"{where} a command built as one string")
    assert not bad, f"run commands as argument lists, never through a shell: {bad}"


SAFE_UNQUOTED = re.compile(r"^resources\.(gpu|cpus_per_task|mem_mb|runtime)$")  # integers from the profiles


def test_snakemake_shell_commands_quote_every_value():
    """Rules pass config values (paths, run names) to their shell commands only through ``{...:q}`` (shlex)."""
    smk = sorted((ROOT / "workflow").rglob("*.smk")) + [ROOT / "workflow" / "Snakefile"]
    text = "\n".join(p.read_text() for p in smk)
    launch = re.search(r"^def launch\(.*?(?=^\S)", text, re.S | re.M)
    assert launch, "the launcher command template moved"
    calls = re.findall(r"^\s+launch\((.*)\)$", text, re.M)  # the rules' extra arguments
    assert len(calls) >= 5 and any(calls)
    shells = [launch[0], *calls] + re.findall(r"shell:\s*\n((?:\s+\".*\"\n)+)", text)
    placeholders = [m for s in shells for m in re.findall(r"\{([^{}]+)\}", s)]
    assert placeholders
    bad = [m for m in placeholders if not m.endswith(":q") and not SAFE_UNQUOTED.match(m)]
    assert not bad, f"unquoted values in shell commands: {bad}"


@pytest.mark.parametrize("name", ["index.py", "common.py"])
def test_html_pages_reference_no_remote_asset(name):
    source = (ROOT / "analysis" / name).read_text()
    assert not re.search(r"(src|href)=[\"']?https?://", source)
    assert "<script" not in source

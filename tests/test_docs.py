"""Every code name written in backticks in the reference docs (README.md, bench/README.md, docs/*.md) exists.

What a backticked span is taken for, first rule that matches (anything else, e.g. ``T = 6`` or a number, is prose):

- ``path::test_name[param]``: the test file exists and defines the test (and the classes on the way);
- ``name(...)``: the callable before the parenthesis, by the rules below;
- a command (``make run``, ``saccader predict ...``, ``snakemake --profile slurm all``, ``python bench/x.py``,
  ``python -m analysis fig3``, ``pytest tests/...``; also every line of a code block): Make targets and variables
  are in the Makefile, a ``saccader`` subcommand is in ``saccader.pipeline.cli.COMMANDS``, Snakemake targets are rules of
  ``workflow/`` or ``saccader.catalog.TARGETS``, scripts and modules exist. Other programs (git, kill, ...) and flags are not
  this repository's names and are skipped;
- ``key: value``: the key, as below;
- a path (has a ``/`` or a file extension): a repository path exists (``<placeholder>`` and ``*`` match anything);
  a relative one matches the end of a tracked path; a ``.py``/``.smk`` name that matches nothing is reported, other
  names (``results/...``, ``checkpoint.pt``: files a run writes) are skipped;
- a dotted name: a Python name that imports and resolves (``saccader.models.load``), a name in a bench script
  (``gpu_train.synthetic_session``), or else a config key path (``dataset.root``) of config.yaml, its overlays or the schema;
- a bare name (``UserError``, ``fig3``, ``micro_batch``, ``set-resources``): defined in the code (``def``, ``class``,
  an assignment), a string literal of the code, a key or value of a shipped YAML file (configs, profiles, schema),
  a Snakemake target, a Make target or a ``saccader`` subcommand.

CHANGELOG.md and bench/history.md are history: names there may be gone, so they are not checked.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import importlib.util
import re
import shlex
import shutil
import os
import sys
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "bench/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
CODE_DIRS = ("saccader", "baselines", "analysis", "workflow", "bench", "scripts", "tests")
YAML_FILES = ("config.yaml", "config/*.yaml", "slurm/*.yaml", "workflow/profiles/*/*.yaml", "workflow/schemas/*.yaml")
EXTENSIONS = {".py", ".smk", ".md", ".yaml", ".yml", ".json", ".parquet", ".png", ".pdf", ".pt", ".html", ".txt",
              ".lock", ".toml", ".csv", ".npz", ".log", ".tmp", ".ok", ".JPEG", ".jpg"}
COMMANDS = {"make", "saccader", "snakemake", "python", "pytest"}
SNAKEMAKE_VALUE_FLAGS = {"--profile", "--configfile", "--cores", "-c", "-j", "--jobs", "--config", "--set-resources",
                         "--report", "--directory", "-d", "--snakefile", "-s"}
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
ALIASES = {"np": "numpy", "pd": "pandas", "nn": "torch.nn", "F": "torch.nn.functional",
           "v2": "torchvision.transforms.v2"}  # the code's import aliases
PROGRAM_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PACKAGES = ("saccader", "saccader.pipeline", "baselines", "analysis")  # `cli.main` is saccader.pipeline.cli.main


@functools.cache
def tracked() -> tuple[str, ...]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return tuple(line for line in out.splitlines() if (ROOT / line).exists())


@functools.cache
def code_text() -> str:
    files = [f for f in tracked() if f.startswith(CODE_DIRS) and f.endswith((".py", ".smk", "Snakefile"))
             and f != "tests/test_docs.py"]  # its made-up names are no code
    files.append("Makefile")
    return "\n".join((ROOT / f).read_text(errors="replace") for f in files)


@functools.cache
def yaml_docs() -> tuple:
    docs = []
    for pattern in YAML_FILES:
        for path in sorted(ROOT.glob(pattern)):
            docs.append(yaml.safe_load(path.read_text()))
    return tuple(docs)


def _words(node, out: set) -> set:
    if isinstance(node, dict):
        for key, value in node.items():
            out.add(str(key))
            _words(value, out)
    elif isinstance(node, list):
        for item in node:
            _words(item, out)
    elif isinstance(node, str):
        out.add(node)
    return out


@functools.cache
def known_words() -> frozenset:
    """Bare names the code defines or uses as strings, YAML keys and values, targets and subcommands."""
    text = code_text()
    words = set(re.findall(rf"^\s*(?:async\s+)?(?:def|class)\s+({IDENT})", text, re.M))
    words |= set(re.findall(rf"^\s*(?:self\.)?({IDENT})\s*(?::[^=\n]+)?=(?!=)", text, re.M))
    words |= set(re.findall(r"[\"']([\w.:-]+)[\"']", text))
    words |= set(re.findall(rf"(?:\.|\bimport\s+|,\s*)({IDENT})\b", text))  # used: attribute or imported name
    words |= set(re.findall(rf"^\s*({IDENT}):\s*$", text, re.M))  # Snakemake directives (onstart:, ...)
    for doc in yaml_docs():
        _words(doc, words)
    return frozenset(words | snakemake_targets() | make_targets() | set(cli_commands()))


@functools.cache
def make_targets() -> frozenset:
    return frozenset(re.findall(r"^([\w.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


@functools.cache
def snakemake_targets() -> frozenset:
    from saccader import catalog

    text = "\n".join((ROOT / f).read_text() for f in tracked() if f.startswith("workflow/")
                     and f.endswith((".smk", "Snakefile")))
    return frozenset(re.findall(rf"^\s*rule\s+({IDENT})\s*:", text, re.M)) | set(catalog.TARGETS)


@functools.cache
def cli_commands() -> tuple:
    from saccader.pipeline.cli import COMMANDS as commands

    return tuple(commands)


@functools.cache
def config_tree() -> dict:
    """The union of config.yaml, its overlays and the schema's declared properties (``*``: any key)."""
    def merge(into: dict, other: dict) -> dict:
        for key, value in other.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            elif key not in into or not isinstance(into[key], dict):
                into[key] = value
        return into

    def from_schema(schema) -> dict | None:
        if not isinstance(schema, dict):
            return None
        tree = {}
        for key, sub in (schema.get("properties") or {}).items():
            tree[key] = from_schema(sub) or {}
        extra = schema.get("additionalProperties")
        for sub in [extra, *(schema.get("patternProperties") or {}).values()]:
            if isinstance(sub, dict):
                tree["*"] = from_schema(sub) or {}
        for sub in [*schema.get("allOf", []), *schema.get("anyOf", []), *schema.get("oneOf", [])]:
            merge(tree, from_schema(sub) or {})
        if "$ref" in schema:
            ref = schema["$ref"].split("/")[-1]
            defs = {**SCHEMA.get("definitions", {}), **SCHEMA.get("$defs", {})}
            merge(tree, from_schema(defs.get(ref)) or {})
        return tree

    SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    tree: dict = {}
    for path in [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml"))]:
        merge(tree, yaml.safe_load(path.read_text()) or {})
    return merge(tree, from_schema(SCHEMA) or {})


def is_config_key(dotted: str) -> bool:
    node = config_tree()
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return False
        if part in node:
            node = node[part]
        elif "*" in node:
            node = node["*"]
        else:
            return False
    return True


def resolves(dotted: str) -> bool | None:
    """True/False for a Python name whose first part is an importable module; None when it is none."""
    parts = dotted.split(".")
    if parts[0] in ALIASES:
        parts = ALIASES[parts[0]].split(".") + parts[1:]
    try:
        if importlib.util.find_spec(parts[0]) is None:
            inner = [f"{p}.{parts[0]}" for p in PACKAGES if importlib.util.find_spec(f"{p}.{parts[0]}")]
            if not inner:
                return None
            parts = inner[0].split(".") + parts[1:]
    except (ImportError, ValueError):
        return None
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def path_exists(span: str) -> bool | None:
    """True/False for a path of the repository (or a tracked path's end); None for a file a run writes."""
    pattern = re.sub(r"<[^>]*>", "*", span.rstrip("/"))
    if pattern.startswith("results/") or pattern.startswith(("/", "$", "~", ".snakemake")):
        return None
    top = {f.split("/")[0] for f in tracked()}
    if pattern.split("/")[0] in top:
        return any(fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(f, pattern + "/*") for f in tracked())
    if any(fnmatch.fnmatch(f, "*/" + pattern) or fnmatch.fnmatch(f, "*/" + pattern + "/*") for f in tracked()):
        return True
    return False if pattern.endswith((".py", ".smk")) else None


def check_test_id(span: str) -> str | None:
    path, *names = span.split("::")
    path = path or "tests"
    candidates = [f for f in tracked() if f == path or (f.endswith("/" + path) and f.startswith("tests/"))]
    if not candidates and path.startswith("test") and "/" not in path:
        candidates = [f for f in tracked() if f.startswith("tests/") and Path(f).name == path]
    if not candidates:
        return f"no test file {path}"
    names = [re.sub(r"\[.*", "", n).strip() for n in names if n.strip()]
    text = "\n".join((ROOT / c).read_text() for c in candidates)
    for name in names:
        if not re.search(rf"^\s*(?:def|class)\s+{re.escape(name)}\b", text, re.M):
            return f"{path} defines no {name}"
    return None


def check_command(line: str) -> str | None:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split()
    while words and (re.fullmatch(r"\w+=\S*", words[0]) or words[0] in {"time", "nice", "-n", "19", "sudo"}):
        words = words[1:]  # VAR=value, time, nice -n 19
    if not words:
        return None
    head, rest = words[0].removeprefix(".venv/bin/"), words[1:]
    if head == "make":
        for word in rest:
            if "=" in word:
                var = word.split("=")[0]
                if not re.search(rf"\b{var}\b", (ROOT / "Makefile").read_text()):
                    return f"the Makefile has no variable {var}"
            elif not word.startswith("-") and word not in make_targets():
                return f"the Makefile has no target {word}"
        return None
    if head == "python" and rest[:1] == ["-m"] and len(rest) > 1:
        head, rest = rest[1], rest[2:]
        if head not in {"saccader", "analysis"}:
            found = resolves(head)
            return None if found else f"no Python module {head}"
    if head == "saccader":
        sub = next((w for w in rest if not w.startswith("-")), None)
        if sub is not None and sub not in cli_commands():
            return f"saccader has no subcommand {sub} (saccader.pipeline.cli.COMMANDS)"
        return None
    if head == "analysis":
        sub = next((w for w in rest if not w.startswith("-")), None)
        if sub not in (None, "all", "NAME") and sub not in snakemake_targets():
            return f"analysis has no target {sub}"
        return None
    if head == "snakemake":
        words = iter(rest)
        for word in words:
            if word in SNAKEMAKE_VALUE_FLAGS:
                next(words, None)  # the flag's value (--config: one KEY=VALUE, more are caught by the '=' below)
            elif not word.startswith("-") and "=" not in word and re.fullmatch(IDENT, word) \
                    and word not in snakemake_targets():
                return f"the workflow has no rule or target {word}"
        return None
    if head in {"python", "pytest"}:
        for word in rest:
            if not word.startswith("-") and ("/" in word or word.endswith(".py")):
                if "::" in word:
                    problem = check_test_id(word)
                    if problem:
                        return problem
                elif path_exists(word) is False:
                    return f"no file {word}"
            elif head == "python" and not word.startswith("-"):
                break  # the script's own arguments follow its path
        return None
    if "/" in head and path_exists(head) is False:
        return f"no file {head}"
    return None


def check_span(span: str) -> str | None:
    """The problem with one backticked span, or None (also for prose that is no code name)."""
    span = span.strip()
    if not span or span.startswith("-") or re.fullmatch(r"[\d.,x% ±/:-]+", span):
        return None
    if "::" in span and re.match(r"[\w/.]*::", span):
        return check_test_id(span)
    call = re.match(rf"^({IDENT}(?:\.{IDENT})*)\(", span)
    if call:
        return check_span(call.group(1))
    first = span.split()[0].removeprefix(".venv/bin/")
    if " " in span and (first in COMMANDS or re.fullmatch(r"\w+=\S*", first)):
        return check_command(span)
    key = re.match(r"^([\w.-]+):(\s|$)", span)
    if key:
        return check_span(key.group(1))
    if " " in span:
        return None
    if "/" in span or Path(span).suffix in EXTENSIONS:
        if re.fullmatch(rf"{IDENT}(\.{IDENT})+", span) and Path(span).suffix not in EXTENSIONS:
            pass  # a dotted Python name, below
        else:
            found = path_exists(span)
            return f"no file {span}" if found is False else None
    if re.fullmatch(rf"{IDENT}(\.{IDENT})+", span):
        if span.split(".")[0] in config_tree() and is_config_key(span):
            return None
        found = resolves(span)
        if found is not None:
            return None if found else f"{span} does not resolve"
        head, _, name = span.partition(".")
        script = ROOT / "bench" / f"{head}.py"
        if script.exists():
            ok = re.search(rf"^\s*(?:def|class)\s+{name}\b|^{name}\s*=", script.read_text(), re.M)
            return None if ok else f"bench/{head}.py defines no {name}"
        return None if is_config_key(span) else f"{span} is neither a Python name nor a config key"
    if re.fullmatch(r"[A-Za-z_][\w-]*", span):
        if span in known_words() or shutil.which(span, path=PROGRAM_PATH):
            return None  # a name of the code, or a program (make, pytest, sbatch)
        if re.fullmatch(r"[A-Z][A-Z0-9_]+", span) and re.search(rf"\b{span}\b", code_text()):
            return None  # a signal, an environment variable or an OS constant the code uses (SIGKILL, TMPDIR)
        return f"{span} is defined nowhere (code, configs, workflow, Makefile, saccader subcommands)"
    return None


def spans(text: str):
    """(line number, span, is_code_line) for inline code and for every line of a code block (fenced, or indented by
    4 spaces after a blank line)."""
    fenced = indented = False
    previous = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            yield number, line.strip(), True
        else:
            indented = line.startswith("    ") and (indented or not previous.strip())
            if indented:
                yield number, line.strip(), True
            else:
                for match in re.finditer(r"(?<!`)`([^`\n]+)`(?!`)", line):
                    yield number, match.group(1), False
        previous = line


def problems(path: str, text: str | None = None) -> list[str]:
    text = (ROOT / path).read_text() if text is None else text
    out = []
    test_file = "tests"
    for number, span, block in spans(text):
        if not block and re.match(r"[\w/.]*test_\w+\.py(::|$)", span):
            test_file = span.split("::")[0]
        elif not block and span.startswith("::"):
            span = test_file + span  # `::test_other` after `tests/test_x.py::test_one`: the same file
        problem = check_command(span) if block else check_span(span)
        if problem:
            out.append(f"{path}:{number}: `{span}`: {problem}")
    return out


@pytest.mark.parametrize("path", DOCS)
def test_every_backticked_code_name_exists(path):
    assert problems(path) == []


@pytest.mark.parametrize("span", [
    "frobnicate_the_widgets", "saccader.models.frobnicate", "saccader frobnicate --config C", "make frobnicate",
    "docs/frobnicate.md", "dataset.frobnicate", "tests/test_config.py::test_frobnicate", "frobnicate.py",
    "snakemake --profile slurm frobnicate", "snakemake --configfile config/embedded.yaml --cores 2 frobnicate", "python bench/frobnicate.py --out x.json", "gpu_train.frobnicate",
    "frobnicate(x)",
])
def test_a_made_up_name_is_reported(span):
    assert check_span(span) is not None
    assert problems("made-up.md", f"Call `{span}` here.\n") != []


@pytest.mark.parametrize("span", [
    "saccader.models.load", "saccader predict", "make wet-run", "snakemake --profile slurm all", "dataset.root",
    "UserError", "fig3", "micro_batch", "set-resources", "config/*.yaml", "results/<experiment>/index.html",
    "torch.load(..., weights_only=True)", "tests/test_config.py::test_mistakes_give_one_line", "T = 6",
    "bf16: true", "python -m analysis fig3", "snakemake --configfile my.yaml --cores 2 -n all", "make run CORES=8", "checkpoint.pt",
])
def test_real_names_and_prose_pass(span):
    assert check_span(span) is None


def test_the_results_page_is_what_the_analysis_renders_from_its_run():
    """docs/results.md (the README's results) is a run's results.md: rendered again from the run's outputs copied
    beside it (docs/results/, `make docs-results`), it is the same text, so no number in it is typed."""
    from analysis import results_doc

    assert (ROOT / "docs/results.md").read_text() == results_doc.render(ROOT / "docs/results")
    readme = (ROOT / "README.md").read_text()
    # the README links the results table, never types one
    assert "docs/results.md" in readme and not any(line.startswith("|") and "±" in line for line in readme.splitlines())

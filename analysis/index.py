"""``results/index.html``: the run's front page, then everything to browse.

Order (what a reader came for first): the claims verdict (how many hold, which do not), the run's facts (config,
code version, seeds, machine, wall time), the summary table at the paper's T, then the figures, the other tables,
the full claims table and the logs. No remote assets and no scripts: inline CSS, figures by relative links inside the
results folder (the PNG beside a PDF link), tables and claims inlined from their HTML fragments, training logs
rendered from ``runs/*/seed*/train_log.parquet``. Captions come from ``workflow/report/<name>.rst``, the same text
the Snakemake report shows, rendered from reStructuredText by docutils (the report's own renderer).
"""

from __future__ import annotations

import glob
import html
import os
import platform
from pathlib import Path

import pandas as pd
import yaml

from saccader import catalog
from saccader.pipeline.io import write_text

REPORT_DIR = Path(__file__).resolve().parents[1] / "workflow" / "report"
CSS = """body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f3f3f3}
.missing{color:#a00}nav a{margin-right:1em}.caption{color:#444}.caption p{margin:.3em 0}
#verdict{border:2px solid #888;border-radius:6px;padding:.5em 1em;margin:.5em 0;background:#fafafa}
#verdict h2{margin:.2em 0}.holds{color:#060}.fails{color:#a00}.undecided{color:#a60}.untested{color:#666}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 1em;margin:.5em 0}dl.facts dt{font-weight:bold}
dl.facts dd{margin:0}.notice{background:#fee;border:2px solid #a00;padding:.5em;font-weight:bold}"""


def caption_path(name: str) -> Path:
    """The caption file of a target: ``fig*.rst`` / ``table*.rst`` (claims -> ``table_claims.rst``)."""
    return REPORT_DIR / (f"{name}.rst" if name.startswith(("fig", "table")) else f"table_{name}.rst")


def caption(name: str) -> str:
    path = caption_path(name)
    return path.read_text().strip() if path.exists() else ""


def caption_html(name: str) -> str:
    """The caption rendered as HTML (its reStructuredText markup as formatting, not literal asterisks)."""
    text = caption(name)
    if not text:
        return ""
    from docutils.core import publish_parts

    return publish_parts(text, writer="html5", settings_overrides={
        "report_level": 5, "halt_level": 5, "embed_stylesheet": False, "input_encoding": "unicode"})["body"]


def _link(out: Path, rel: str) -> str:
    return f'<a href="{html.escape(rel)}">{html.escape(rel)}</a>' if (out / rel).exists() else \
        f'<span class="missing">{html.escape(rel)} (not built)</span>'


def _target_section(out: Path, name: str, target) -> str:
    parts = [f'<h3 id="{name}">{name}</h3>', f'<div class="caption">{caption_html(name)}</div>']
    png = next((o for o in target.outputs if o.endswith(".png")), None)
    fragment = next((o for o in target.outputs if o.endswith(".html")), None)
    if png and (out / png).exists():
        parts.append(f'<a href="{html.escape(png)}"><img src="{html.escape(png)}" alt="{name}"></a>')
    elif fragment and (out / fragment).exists():
        parts.append((out / fragment).read_text())
    parts.append("<p>" + " · ".join(_link(out, o) for o in target.outputs) + "</p>")
    return "\n".join(parts)


def _train_logs(results_dir: Path) -> str:
    logs = sorted(results_dir.glob("runs/*/seed*/train_log.parquet"))
    if not logs:
        return "<p>No training logs yet.</p>"
    parts = []
    for path in logs:
        rel = path.relative_to(results_dir)
        log = pd.read_parquet(path)
        last = log.tail(1).to_dict("records")[0] if len(log) else {}
        summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
        parts.append(f"<details><summary>{html.escape(str(rel.parent))}: {len(log)} rows; last: "
                     f"{html.escape(summary)}</summary>{log.to_html(index=False, border=0, float_format='%.4g')}"
                     f"</details>")
    return "\n".join(parts)


def _job_logs(results_dir: Path, out: Path) -> str:
    root = results_dir / "logs"
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
    if not files:
        return "<p>No job logs yet.</p>"
    items = []
    for p in files:
        rel = os.path.relpath(p, out)
        items.append(f'<li><a href="{html.escape(rel)}">{html.escape(str(p.relative_to(results_dir)))}</a> '
                     f"({p.stat().st_size:,} bytes)</li>")
    return f"<ul>{''.join(items)}</ul>"


def _plan_link(out: Path) -> str:
    """The resource plan (``saccader plan``: plan.md / plan.json) when one was written into this folder."""
    if not (out / "plan.md").exists():
        return ""
    return f"<p>Resource plan (FLOPs, memory, GPU-hours of every job): {_link(out, 'plan.md')} · " \
           f"{_link(out, 'plan.json')}</p>"


def _verdict(out: Path) -> str:
    """The claims verdict: how many hold, are refuted, are undecided (with the observed effect and the seeds that
    would decide it) or were not tested (from ``claims.csv``)."""
    path = out / "claims.csv"
    if not path.exists():
        return '<section id="verdict"><h2>Claims</h2><p class="missing">claims.csv (not built)</p></section>'
    table = pd.read_csv(path, keep_default_na=False)
    from analysis.claims import HOLDS, REFUTED, UNDECIDED, UNTESTED

    def items(verdict):
        rows = table[table["verdict"] == verdict]
        extra = lambda r: (f": observed {r['observed effect']}; seeds for 80% power: {r['seeds for 80% power']}"  # noqa: E731
                           if verdict == UNDECIDED else "")
        return "".join(f"<li>{html.escape(r['claim'] + extra(r))}</li>" for _, r in rows.iterrows())

    n = {v: int((table["verdict"] == v).sum()) for v in (HOLDS, REFUTED, UNDECIDED, UNTESTED)}
    css = {HOLDS: "holds", REFUTED: "fails", UNDECIDED: "undecided", UNTESTED: "untested"}
    counts = ", ".join(f'<span class="{css[v]}">{n[v]} {v}</span>' for v in (HOLDS, REFUTED, UNDECIDED, UNTESTED)
                       if n[v] or v != UNTESTED)
    parts = [f"<h2>The paper's {len(table)} claims on this run: {counts}</h2>",
             "<p>A claim holds where the 95% interval of its paired difference lies on the claimed side at every "
             "glimpse count it names, is refuted where it lies on the other side at one of them, and is undecided "
             "otherwise (<a href='#claims'>the numbers</a>, with the weaker test pooled over T).</p>"]
    for v, title in ((REFUTED, "Refuted"), (UNDECIDED, "Undecided"), (UNTESTED, "Not tested")):
        if n[v]:
            parts.append(f'<p class="{css[v]}">{title} ({n[v]}):</p><ul class="{css[v]}">{items(v)}</ul>')
    return f'<section id="verdict">{"".join(parts)}</section>'


def code_versions(results_dir: Path) -> list[str]:
    import pyarrow.parquet as pq

    versions = set()
    for path in glob.glob(str(results_dir / "eval" / "*" / "*" / "seed*.parquet")):
        versions |= set(pq.read_table(path, columns=["code_version"]).column(0).to_pylist())
    return sorted(versions)


def _wall_time(results_dir: Path) -> str:
    """Jobs, their summed time and the span from the first job's start to the last one's end (Snakemake's
    benchmark files: each job's seconds, written when it ends)."""
    rows = []
    for path in glob.glob(str(results_dir / "benchmarks" / "**" / "*.tsv"), recursive=True):
        try:
            seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[0])
        except (OSError, KeyError, IndexError, ValueError, pd.errors.ParserError):
            continue
        end = os.path.getmtime(path)
        rows.append((end - seconds, end, seconds))
    if not rows:
        return "no job benchmarks"
    span = max(r[1] for r in rows) - min(r[0] for r in rows)
    return (f"{span / 60:.1f} min from the first job's start to the last job's end; {len(rows)} jobs, "
            f"{sum(r[2] for r in rows) / 60:.1f} job-minutes")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _facts(results_dir: Path, out: Path, run_config=None) -> str:
    from analysis import common

    config = results_dir / "config.yaml"
    setting = lambda section, key: common.run_setting(results_dir, section, key, None, run_config)  # noqa: E731
    facts = {
        "config": (f'<a href="{html.escape(os.path.relpath(config, out))}">{html.escape(config.name)}</a> '
                   + html.escape(f"dataset {setting('dataset', 'name')} ({common.num_classes(results_dir, run_config)} "
                                 f"classes, {setting('dataset', 'image_size')} px), root "
                                 f"{setting('dataset', 'root')}")
                   if config.exists() else '<span class="missing">config.yaml (not written)</span>'),
        "code version": html.escape(", ".join(code_versions(results_dir)) or "no evaluation results"),
        "seeds": html.escape(seeds(results_dir)),
        "machine": html.escape(machine()) + " (where this page was built)",
        "wall time": html.escape(_wall_time(results_dir)),
        "training plateau": _plateau(out),
        "results": html.escape(str(results_dir)),
    }
    return "<h2>This run</h2><dl class='facts'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts.items()) \
        + "</dl>"


def _plateau(out: Path) -> str:
    """How many runs x seeds reached a training plateau (``tables/table_plateau.csv``), linked to the table."""
    path = out / "tables" / "table_plateau.csv"
    if not path.exists():
        return '<span class="missing">table_plateau (not built)</span>'
    from analysis.learning import PLATEAU

    status = pd.read_csv(path)["status"]
    return f"<a href='#table_plateau'>{int((status == PLATEAU).sum())} of {len(status)} runs x seeds</a>"


def seeds(results_dir: Path) -> str:
    path = results_dir / "config.yaml"
    if not path.exists():
        return "unknown (no config.yaml)"
    import yaml

    return ", ".join(map(str, (yaml.safe_load(path.read_text()) or {}).get("seeds", []))) or "none"


def _notice(results_dir: Path) -> str:
    """The experiment's ``notice`` (config key; e.g. the wet run's: its numbers mean nothing), as a banner."""
    path = results_dir / "config.yaml"
    notice = path.is_file() and (yaml.safe_load(path.read_text()) or {}).get("notice")
    return f"<p class='notice'>{html.escape(notice)}</p>" if notice else ""


def index(results_dir, out_dir, train_glimpses: int | None = None, config=None):
    """Write ``index.html`` into ``out_dir``: verdict, run facts, summary table, figures, tables, claims, logs."""
    results_dir, out = Path(results_dir), Path(out_dir)
    figures = {n: t for n, t in catalog.TARGETS.items() if n.startswith("fig")}
    tables = {n: t for n, t in catalog.TARGETS.items()
              if (n.startswith("table") and n != "table_summary") or n == "claims"}
    summary = catalog.TARGETS["table_summary"]
    nav = " ".join(f'<a href="#{n}">{n}</a>' for n in ["table_summary", *figures, *tables])
    body = ["<h1>Saccader reproduction: results</h1>", _notice(results_dir), _verdict(out),
            _facts(results_dir, out, config),
            "<p>Paper numbers are ImageNet; reproduced numbers are labelled with this run's dataset.</p>",
            f"<nav>{nav} <a href='#runs'>training logs</a> <a href='#logs'>job logs</a></nav>",
            _plan_link(out),
            _target_section(out, "table_summary", summary),
            "<h2>Figures</h2>", *(_target_section(out, n, t) for n, t in figures.items()),
            "<h2>Tables and claims</h2>", *(_target_section(out, n, t) for n, t in tables.items()),
            '<h2 id="runs">Training logs</h2>', _train_logs(results_dir),
            '<h2 id="logs">Job logs</h2>', _job_logs(results_dir, out)]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Saccader results</title>"
            f"<link rel='icon' href='data:,'><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    path = out / "index.html"
    write_text(path, page)
    return [path]

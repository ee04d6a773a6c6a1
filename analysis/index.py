"""``results/index.html``: one self-contained page to browse figures, tables, claims, run logs and training logs.

No remote assets: inline CSS, figures by relative links inside the results folder (the PNG beside a PDF link),
tables and claims inlined from their HTML fragments, training logs rendered from ``runs/*/seed*/train_log.parquet``.
Captions come from ``workflow/report/<name>.rst``, the same text the Snakemake report shows.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

import analysis
from saccader.io import write_text

REPORT_DIR = Path(__file__).resolve().parents[1] / "workflow" / "report"
CSS = """body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f3f3f3}
.missing{color:#a00}nav a{margin-right:1em}.caption{color:#444;white-space:pre-wrap}"""


def caption_path(name: str) -> Path:
    """The caption file of a target: ``fig*.rst`` / ``table*.rst`` (claims -> ``table_claims.rst``)."""
    return REPORT_DIR / (f"{name}.rst" if name.startswith(("fig", "table")) else f"table_{name}.rst")


def caption(name: str) -> str:
    path = caption_path(name)
    return path.read_text().strip() if path.exists() else ""


def _link(out: Path, rel: str) -> str:
    return f'<a href="{html.escape(rel)}">{html.escape(rel)}</a>' if (out / rel).exists() else \
        f'<span class="missing">{html.escape(rel)} (not built)</span>'


def _target_section(out: Path, name: str, target) -> str:
    parts = [f'<h3 id="{name}">{name}</h3>', f'<p class="caption">{html.escape(caption(name))}</p>']
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


def index(results_dir, out_dir, train_glimpses: int | None = None):
    """Write ``index.html`` into ``out_dir`` linking every target's outputs, the logs and the training logs."""
    results_dir, out = Path(results_dir), Path(out_dir)
    figures = {n: t for n, t in analysis.TARGETS.items() if n.startswith("fig")}
    tables = {n: t for n, t in analysis.TARGETS.items() if n.startswith("table") or n == "claims"}
    nav = " ".join(f'<a href="#{n}">{n}</a>' for n in [*figures, *tables])
    body = [f"<h1>Saccader reproduction: results</h1><p>Results folder: {html.escape(str(results_dir))}. "
            "Paper numbers are ImageNet; reproduced numbers are labelled with this run's dataset.</p>",
            f"<nav>{nav} <a href='#runs'>training logs</a> <a href='#logs'>job logs</a></nav>",
            _plan_link(out),
            "<h2>Figures</h2>", *(_target_section(out, n, t) for n, t in figures.items()),
            "<h2>Tables and claims</h2>", *(_target_section(out, n, t) for n, t in tables.items()),
            '<h2 id="runs">Training logs</h2>', _train_logs(results_dir),
            '<h2 id="logs">Job logs</h2>', _job_logs(results_dir, out)]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Saccader results</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    path = out / "index.html"
    write_text(path, page)
    return [path]

"""The run report: one self-contained HTML page with everything a run directory knows.

``RUN/report.html`` holds the configuration, the test-set summary, any evaluation and quality
results, the metrics of every epoch and every picture of the run, embedded as base64 PNG data URIs
with inline CSS: no script, no external font or link, so it opens offline, attaches to an e-mail and
survives the run directory being moved. Everything read from files is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vaelab import rundir
from vaelab.fileio import atomic_write_text
from vaelab.models.conditions import is_conditional
from vaelab.views.plots import KINDS, PLOTS_DIR

REPORT = "report.html"
MAX_PICTURE_BYTES = 64 << 20  # a PNG embedded in the report; vaelab's largest are a few MB
MAX_LIST_ITEMS = 12  # longer lists in a JSON value (kl_per_dim of a 200-D latent) are cut short

# (file, section title, what it shows, pixel art?) of the pictures that training writes; pixel art
# (image grids) is scaled without smoothing, figures with it.
RUN_PICTURES = (
    (rundir.LOSS_CURVE, "Training curves", "Negative ELBO, reconstruction and KL per epoch, train and validation.", False),
    (rundir.SAMPLES, "Samples", "Means of p(x|z) for z drawn from the prior.", True),
    (rundir.RECONSTRUCTIONS, "Reconstructions", "Test inputs above their reconstructions (z = mean of q(z|x)).", True),
)
PLOT_CAPTIONS = {
    "curves": "Training curves: negative ELBO, reconstruction and KL per epoch.",
    "latent": "Posterior means of test examples, coloured by label.",
    "manifold": "Decoder means over a grid of Gaussian quantiles of the 2-D latent space.",
    "interpolation": "Decoded paths between the codes of test pairs, linear and spherical.",
    "traversal": "One latent dimension at a time swept over [-3, 3], most active dimensions first.",
    "kl": "KL per latent dimension and the active-unit statistic (Burda et al. 2016).",
}
PROJECTIONS = {"tsne": "t-SNE", "umap": "UMAP"}  # latent-<method>.png: the latent map by another projection
METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "train_rec", "val_rec", "train_kl", "val_kl", "seconds")

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #e3e6ec; --accent: #1f77b4; --bg: #f7f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 28px 24px 60px; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 14px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.sub { color: var(--muted); margin: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; font-variant-numeric: tabular-nums; }
.card span { color: var(--muted); font-size: 12.5px; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); font-size: 13.5px;
  font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; text-align: left; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.num { text-align: right; }
.grid { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.scroll { max-height: 420px; overflow: auto; display: inline-block; }
.scroll th { position: sticky; top: 0; }
figure { margin: 0 0 22px; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figure img.pixels { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 8px; }
.stale { display: inline-block; margin-left: 8px; padding: 1px 8px; border-radius: 10px; background: #fff3cd;
  color: #7a5300; font-size: 12px; text-transform: none; letter-spacing: 0; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 40px; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _format(value: Any) -> str:
    """A JSON value as short, escaped text: floats to 4 significant digits, long lists cut."""
    if isinstance(value, bool) or value is None:
        return _e(json.dumps(value))
    if isinstance(value, float):
        return _e(f"{value:.4g}" if math.isfinite(value) else value)
    if isinstance(value, list):
        shown = ", ".join(_format(item) for item in value[:MAX_LIST_ITEMS])
        more = f", … ({len(value)} in all)" if len(value) > MAX_LIST_ITEMS else ""
        return f"[{shown}{_e(more)}]"
    if isinstance(value, dict):
        return _e(json.dumps(value))
    return _e(value)


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{_format(value)}</td>' if numeric else f"<td>{_format(value)}</td>"


def key_value_table(mapping: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(key)}</th>{_cell(value)}</tr>" for key, value in mapping.items())
    return f"<table>{rows}</table>"


def metrics_table(metrics: Sequence[Mapping[str, Any]]) -> str:
    """One row per epoch; the standard columns first, any others the records carry after them."""
    extra = [key for record in metrics for key in record if key not in METRIC_COLUMNS]
    columns = [c for c in METRIC_COLUMNS if any(c in r for r in metrics)] + list(dict.fromkeys(extra))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_cell(record.get(c, "")) for c in columns) + "</tr>" for record in metrics
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def embedded_png(path: Path, caption: str, alt: str, pixels: bool = False) -> str:
    """A figure with the PNG at ``path`` inlined as a data URI (``pixels``: scaled without smoothing)."""
    from vaelab.data.idx import read_file_hashed

    raw, _ = read_file_hashed(path, "a PNG picture", MAX_PICTURE_BYTES)
    data = base64.b64encode(raw).decode("ascii")
    css_class = ' class="pixels"' if pixels else ""
    return (f'<figure><img{css_class} src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _read_json(path: Path) -> Any:
    return rundir.read_json(path, "JSON file")


def _cards(items: Iterable[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><b>{_e(value)}</b><span>{_e(label)}</span></div>' for label, value in items
    ) + "</div>"


def _header(run_dir: Path, config: Mapping[str, Any], summary: Mapping[str, Any] | None) -> str:
    data, model, train = (config.get(k, {}) for k in ("data", "model", "train"))
    arch = model.get("arch", "?")
    hidden = model.get("hidden")
    layers = f" {'-'.join(map(str, hidden))}" if arch == "mlp" and hidden else ""
    shape = model.get("input_shape")
    description = (
        f"{data.get('dataset', '?')} · {arch}{layers} · latent_dim {model.get('latent_dim', '?')} · "
        f"{model.get('likelihood', '?')} likelihood · binarize {data.get('binarize', '?')}"
        + (f" · input {'x'.join(map(str, shape))}" if shape else "")
        + (f" · prior {model['prior']}" if "prior" in model else "")
        + (f" · {model['stochastic_layers']} stochastic layers" if model.get("stochastic_layers", 1) > 1 else "")
        + (f" · conditioned on {model['condition']}" if is_conditional(model.get("condition")) else "")
    )
    cards = []
    if summary:
        for key, label in (("test_negative_elbo", "test −ELBO (nats)"), ("test_rec", "reconstruction"),
                           ("test_kl", "KL"), ("epochs", "epochs"), ("best_epoch", "best epoch")):
            if key in summary:
                value = summary[key]
                cards.append((label, f"{value:.2f}" if isinstance(value, float) else str(value)))
    elif "epochs" in train:
        cards.append(("epochs configured", str(train["epochs"])))
    return (f"<header><h1>{_e(run_dir.resolve().name)}</h1><p class=\"sub\">{_e(description)}</p>"
            f"{_cards(cards)}</header>")


def staleness(path: Path, result: Any, last_epoch: int | None) -> str | None:
    """Why the result in ``path`` no longer describes the run's model, or None if it still does.

    Evaluations record ``epochs_trained``; a result computed after an earlier epoch than the run's
    last (the run was resumed since) is stale. A result without that record (quality results, files of
    earlier releases) is stale if it is older than the weights in ``model.safetensors``.
    """
    epochs = result.get("epochs_trained") if isinstance(result, dict) else None
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        if last_epoch is not None and epochs < last_epoch:
            return f"stale: computed after epoch {epochs}, the run has since trained to epoch {last_epoch}"
        return None
    weights = path.parent / rundir.MODEL
    if weights.is_file() and path.stat().st_mtime < weights.stat().st_mtime:
        return "stale: computed before the current weights were saved"
    return None


def _results_section(run_dir: Path, pattern: str, title: str, last_epoch: int | None) -> str:
    files = sorted(run_dir.glob(pattern))
    if not files:
        return ""
    parts = [f"<h2>{_e(title)}</h2>"]
    for path in files:
        result = _read_json(path)
        stale = staleness(path, result, last_epoch)
        mark = f' <span class="stale">{_e(stale)}</span>' if stale else ""
        parts.append(f"<h3>{_e(path.name)}{mark}</h3>")
        parts.append(key_value_table(result) if isinstance(result, dict) else f"<p>{_format(result)}</p>")
    return "".join(parts)


def _plots_section(run_dir: Path) -> str:
    folder = run_dir / PLOTS_DIR

    def kind(path: Path) -> str:  # latent-tsne.png is a latent map
        return path.stem.partition("-")[0]

    files = sorted(folder.glob("*.png"), key=lambda p: (KINDS.index(kind(p)) if kind(p) in KINDS else len(KINDS), p.name))
    if not files:
        return ""
    figures = "".join(embedded_png(path, _plot_caption(path), path.stem) for path in files)
    return f"<h2>Plots</h2>{figures}"


def _plot_caption(path: Path) -> str:
    kind, _, method = path.stem.partition("-")
    caption = PLOT_CAPTIONS.get(kind, path.name)
    if kind == "latent" and method:
        caption = f"{caption[:-1]}, projected to 2-D by {PROJECTIONS.get(method, method)}."
    return caption


def render_report(run_dir: str | os.PathLike) -> str:
    """The report of ``run_dir`` as an HTML string (see the module docstring)."""
    path = rundir.check_run_dir(run_dir)
    config = _read_json(path / rundir.CONFIG)
    summary = _read_json(path / rundir.SUMMARY) if (path / rundir.SUMMARY).is_file() else None
    metrics = rundir.read_metrics(path)

    body = [_header(path, config, summary)]
    if summary:
        body.append(f"<h2>Test-set summary</h2>{key_value_table(summary)}")
    last_epoch = max((m["epoch"] for m in metrics), default=None)
    body.append(_results_section(path, "evaluation-*.json", "Evaluation", last_epoch))
    body.append(_results_section(path, "quality-*.json", "Sample quality", last_epoch))
    for file, title, caption, pixels in RUN_PICTURES:
        if (path / file).is_file():
            body.append(f"<h2>{_e(title)}</h2>{embedded_png(path / file, caption, title, pixels)}")
    body.append(_plots_section(path))
    if metrics:
        body.append(f"<h2>Metrics per epoch</h2>{metrics_table(metrics)}")
    sections = "".join(
        f"<div><h3>{_e(name)}</h3>{key_value_table(values)}</div>"
        for name, values in config.items() if isinstance(values, dict)
    )
    body.append(f'<h2>Configuration</h2><div class="grid">{sections}</div>')
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f"<footer>Written by vaelab on {_e(stamp)} from <code>{_e(path.resolve())}</code>.</footer>")
    title = f"vaelab report: {path.resolve().name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN/report.html`` atomically and return its path."""
    html_text = render_report(run_dir)
    path = Path(run_dir) / REPORT
    atomic_write_text(path, html_text)
    return path

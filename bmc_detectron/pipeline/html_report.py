"""``report.html``: one self-contained page (inline CSS, inline SVG chart, data: URI thumbnails).

No script, no external stylesheet, font or image: the file can be mailed or archived on its own.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Dict, List, Optional, Sequence

from bmc_detectron.data.classes import OTHER
from bmc_detectron.pipeline.drawing import class_info
from bmc_detectron.pipeline.scale_decision import SOURCE_WORDS

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
  background: #f6f6f3; margin: 0; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; font-weight: 600; margin: 0 0 2px; }
h2 { font-size: 17px; font-weight: 600; margin: 32px 0 10px; color: #333; }
.sub { color: #666; margin: 0 0 18px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #e2e2dc; border-radius: 8px; padding: 10px 16px;
  min-width: 150px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: #666; font-size: 13px; }
.warn { background: #fff7e0; border: 1px solid #ecd08a; border-radius: 8px;
  padding: 8px 14px 8px 32px; margin: 16px 0 0; }
.warn li { margin: 2px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; background: #fff; border: 1px solid #e2e2dc; }
th, td { padding: 5px 10px; text-align: left; border-bottom: 1px solid #eee; }
th.n { text-align: right; }
th { background: #f0f0ea; font-weight: 600; font-size: 13px; color: #444; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #ddd; }
.sw { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
  vertical-align: -1px; }
.chart { background: #fff; border: 1px solid #e2e2dc; border-radius: 8px; padding: 8px; }
.fields { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #e2e2dc; border-radius: 8px;
  overflow: hidden; }
figure img { width: 100%; display: block; background: #ddd; }
figcaption { padding: 6px 10px; font-size: 13px; color: #444; }
figcaption b { color: #222; }
.muted { color: #777; font-size: 13px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dt { color: #666; } dd { margin: 0; }
.flag { color: #9a5b00; font-weight: 600; }
table.ood td { vertical-align: top; }
"""


def _fmt(value: Optional[float], digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def _rgb(color: Sequence[int]) -> str:
    return "rgb({},{},{})".format(*color)


def bar_chart_svg(rows: Sequence[Dict[str, Any]], width: int = 600) -> str:
    """Horizontal bars of the class percentages with their 95 % intervals, as inline SVG."""
    info = class_info([r["class"] for r in rows])
    highs = [r["ci95_percent"][1] or 0.0 for r in rows]
    top = max(10.0, math.ceil(max(highs, default=0.0) / 10.0) * 10.0)
    left, right, row_h, pad = 64, 16, 24, 28
    plot = width - left - right
    height = pad + row_h * len(rows) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="differential count chart" '
        'font-family="system-ui, sans-serif" font-size="12">'
    ]
    for tick in range(0, int(top) + 1, 10 if top <= 50 else 20):
        x = left + plot * tick / top
        parts.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{height - 6}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="13" text-anchor="middle" fill="#888">{tick}%</text>')
    for i, row in enumerate(rows):
        y = pad + i * row_h
        pct = row["percent"] or 0.0
        lo, hi = (v or 0.0 for v in row["ci95_percent"])
        w = plot * pct / top
        color = _rgb(info[row["class"]][1])
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" fill="#333">'
            f"{escape(row['class'])}</text>"
            f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row_h - 9}" rx="2" '
            f'fill="{color}" fill-opacity="0.85"><title>{escape(row["class"])}: '
            f"{_fmt(row['percent'])} % (95 % CI {_fmt(lo)}-{_fmt(hi)})</title></rect>"
        )
        x0, x1, ym = left + plot * lo / top, left + plot * hi / top, y + row_h / 2 + 2
        parts.append(
            f'<path d="M{x0:.1f} {ym - 4:.1f}v8M{x0:.1f} {ym:.1f}H{x1:.1f}M{x1:.1f} {ym - 4:.1f}v8"'
            ' stroke="#444" stroke-width="1.2" fill="none"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _counts_table(summary: Dict[str, Any]) -> str:
    info = class_info(summary["class_names"])
    head = (
        "<tr><th>class</th><th>cell type</th><th>lineage</th><th class='n'>count</th>"
        "<th class='n'>%</th><th class='n'>95 % CI (%)</th><th class='n'>uncertain</th></tr>"
    )
    body = []
    for r in summary["classes"]:
        lo, hi = r["ci95_percent"]
        body.append(
            f'<tr><td><span class="sw" style="background:{_rgb(info[r["class"]][1])}"></span>'
            f"{escape(r['class'])}</td><td>{escape(r['name'])}</td><td>{escape(r['lineage'])}</td>"
            f'<td class="n">{r["count"]}</td><td class="n">{_fmt(r["percent"])}</td>'
            f'<td class="n">{_fmt(lo)} - {_fmt(hi)}</td><td class="n">{r["uncertain"]}</td></tr>'
        )
    total_pct = "100.0" if summary["counted"] else "n/a"
    body.append(
        f'<tr class="total"><td>all</td><td>nucleated cells</td><td></td>'
        f'<td class="n">{summary["counted"]}</td><td class="n">{total_pct}</td><td></td>'
        f'<td class="n">{summary["uncertain"]["total"]}</td></tr>'
    )
    if summary.get("other"):
        body.append(
            f'<tr class="other"><td><span class="sw" style="background:{_rgb(OTHER.color)}">'
            f"</span>{OTHER.abbr}</td><td>{escape(OTHER.name)}: no known type, "
            f'for review</td><td></td><td class="n">{summary["other"]}</td>'
            '<td class="n">not in %</td><td></td><td></td></tr>'
        )
    return f"<table>{head}{''.join(body)}</table>"


def _cards(summary: Dict[str, Any]) -> str:
    me = summary["me"]
    ratio = "n/a" if me["ratio"] is None else f"{me['ratio']:.2f} : 1"
    items = [
        (str(summary["counted"]), "nucleated cells counted"),
        (str(summary["uncertain"]["total"]), f"uncertain (p < {summary['uncertain_below']:g})"),
        *([(str(summary["other"]), "Other: no known type")] if summary.get("other") else []),
        (ratio, f"M:E ratio ({me['myeloid']} : {me['erythroid']})"),
        (str(len(summary["fields"])), f"fields ({len(summary['skipped'])} skipped)"),
    ]
    cards = "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>'
        for v, k in items
    )
    return f'<div class="cards">{cards}</div>'


def _fields(summary: Dict[str, Any], thumbnails: Dict[str, str]) -> str:
    figures = []
    for f in summary["fields"]:
        uri = thumbnails.get(f["name"])
        img = f'<img src="{uri}" alt="{escape(f["name"])}">' if uri else ""
        flag = ' <span class="flag">&#9888; flagged</span>' if f.get("flags") else ""
        figures.append(
            f"<figure>{img}<figcaption><b>{escape(f['name'])}</b>{flag} &middot; "
            f"{f['cells']} cells, "
            f"{f['uncertain']} uncertain{_other_text(f)}<br>"
            f"<span class='muted'>{f['width']}x{f['height']} px, "
            f"{f['tiles']} tile(s), detection {f['detect_s']:.2f} s, "
            f"recognition {f['recognise_s']:.2f} s</span></figcaption></figure>"
        )
    return f'<div class="fields">{"".join(figures)}</div>'


def _other_text(entry: Dict[str, Any]) -> str:
    return f", {entry['other']} Other" if entry.get("other") else ""


def _skipped(summary: Dict[str, Any]) -> str:
    if not summary["skipped"]:
        return ""
    rows = "".join(
        f"<tr><td>{escape(s['image'])}</td><td>{escape(s['reason'])}</td></tr>"
        for s in summary["skipped"]
    )
    return f"<h2>Skipped files</h2><table><tr><th>file</th><th>reason</th></tr>{rows}</table>"


def _scale_used(scale: Dict[str, Any]) -> str:
    source, mpp = scale.get("source", "none"), scale.get("microns_per_pixel")
    nominal = scale.get("microns_per_pixel_nominal")
    if source == "none":
        text = "not set: each field detected at its own size"
        if scale.get("asked"):
            text = "not settled: each field detected at the model's scale (factor 1)"
    else:
        words = SOURCE_WORDS.get(source, source)
        text = f"{_fmt(mpp, 4)} &micro;m/px, {words}" if mpp else words
        if scale.get("confidence") is not None:
            text += f" (confidence {100 * scale['confidence']:.0f} %)"
    if scale.get("decision"):
        text += f"; {escape(scale['decision'])}"
    if nominal and source != "given":
        text += f" (red cells of 7.5 &micro;m would make it {_fmt(nominal, 4)} &micro;m/px)"
    return text


def _probe_text(probe: Dict[str, Any]) -> str:
    found = "settled" if probe.get("settled") else f"not settled ({escape(probe['reason'])})"
    factor = probe.get("factor")
    at = f"x{factor:.3g}" if factor else "no factor"
    return (
        f"{at} field to detector input, {found}, by {escape(probe['method'])}, confidence "
        f"{100 * probe['confidence']:.0f} %, {len(probe['evidence'])} factor(s) tried"
    )


def _ruler_text(ruler: Dict[str, Any]) -> str:
    return (
        f"median {_fmt(ruler.get('median_px'))} px ({escape(ruler['method'])}), "
        f"{_fmt(ruler['relative_to_training'], 2)}x the training images', spread "
        f"{_fmt(100 * ruler['spread'])} %, {ruler['fields_measured']} of {ruler['fields']} "
        f"field(s) measured, {len(ruler['outliers'])} disagree by more than "
        f"{ruler['tolerance']:.0%}"
    )


def _scale(summary: Dict[str, Any]) -> str:
    """The scale used, how it was found, the stain normalisation and the OOD check."""
    scale = summary.get("scale") or {}
    if not scale:
        return ""
    model = scale.get("model") or {}
    items = [("scale used", _scale_used(scale))]
    factor = scale.get("factor", 1.0)
    items.append(
        (
            "rescale",
            f"fields resized by {factor:.3f} before detection (detector resize: "
            f"{escape(scale.get('detector_resize', ''))}); boxes in the fields' own pixels",
        )
    )
    evidence = scale.get("evidence") or {}
    if evidence.get("file"):
        file = evidence["file"]
        mpp = file["microns_per_pixel"]
        read = f"{_fmt(mpp, 4)} &micro;m/px" if mpp else ""
        note = escape(file["note"]) if file["note"] else escape(file["how"])
        items.append(("files' pixel size", f"{read} {note}".strip()))
    if evidence.get("probe"):
        items.append(("detector probe", _probe_text(evidence["probe"])))
    if scale.get("red_cells"):
        items.append(("red cells", _ruler_text(scale["red_cells"])))
    if model:
        size = model.get("image_size")
        items.append(
            (
                "model's scale",
                f"{_fmt(model.get('microns_per_pixel'), 4)} &micro;m/px, red cells "
                f"{_fmt(model.get('rbc_diameter_px'))} px, training images "
                f"{'x'.join(str(v) for v in size[::-1]) if size else 'n/a'} px "
                f"(from {escape(str(model.get('source') or 'n/a'))})",
            )
        )
    stain = scale.get("stain_normalize")
    items.append(("stain", "normalised to the training colours (Reinhard)" if stain else "as is"))
    flagged = sum(bool(f.get("flags")) for f in summary["fields"])
    ood = f"{flagged} of {len(summary['fields'])} field(s) flagged"
    if not scale.get("ood_checked"):
        ood = "colour not checked: no training profile"
    items.append(("training data", ood))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<h2>Scale and stain</h2><dl>{rows}</dl>"


def _flagged(summary: Dict[str, Any]) -> str:
    """The fields outside the training data, with the reasons."""
    rows = "".join(
        f"<tr><td>{escape(f['name'])}</td><td>{_fmt(f.get('rbc_diameter_px'))}</td><td>"
        + "<br>".join(escape(r) for r in f["flags"])
        + "</td></tr>"
        for f in summary["fields"]
        if f.get("flags")
    )
    if not rows:
        return ""
    head = "<tr><th>field</th><th>red cells (px)</th><th>why it is flagged</th></tr>"
    return (
        "<h2>Fields outside the training data</h2><p class='muted'>Counted, but check them: "
        f"the model was not trained on such fields.</p><table class='ood'>{head}{rows}</table>"
    )


def _model_text(source: Optional[Dict[str, str]], identity: Optional[Dict[str, Any]]) -> str:
    weights = (source or {}).get("weights") or "built in process"
    digest = (identity or {}).get("weights_sha256", "")
    return escape(weights) + (
        f" <span class='muted'>(SHA-256 {digest[:12]})</span>" if digest else ""
    )


def _open_set_text(cls: Optional[Dict[str, Any]]) -> str:
    open_set = (cls or {}).get("open_set")
    if not open_set:
        return "off: the classifier has no open-set threshold, every cell gets a known type"
    return (
        f"open-set score ({escape(open_set['score'])}) &lt; {open_set['threshold']:.4g}: "
        "no known type; listed, in no percentage and not uncertain"
    )


def _method(summary: Dict[str, Any]) -> str:
    s, me, t = summary["settings"], summary["me"], summary["timing"]
    sources = s.get("sources") or {}
    cls = s.get("classifier")
    cls_text = "none: the detector's classes are counted"
    if cls is not None:
        cls_text = _model_text(sources.get("classifier"), cls)
        cls_text += f", crops {cls['crop_size']} px, margin {cls['crop_margin']:g}"
    items: List[tuple] = [
        ("detector", _model_text(sources.get("detector"), s.get("detector"))),
        ("classifier", cls_text),
        ("detection score", f"&ge; {s['score_threshold']:g}"),
        ("tiles", f"{s['tile_size']} px, overlap {s['tile_overlap']} px (0 = whole fields)"),
        ("uncertain", f"class probability &lt; {summary['uncertain_below']:g}"),
        ("Other", _open_set_text(cls)),
        ("myeloid", escape(", ".join(me["lineage"]["myeloid"]))),
        ("erythroid", escape(", ".join(me["lineage"]["erythroid"]))),
        ("time", f"detection {t['detect_s']:.1f} s, recognition {t['recognise_s']:.1f} s"),
    ]
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<h2>Method</h2><dl>{rows}</dl>"


def _slide(summary: Dict[str, Any], overview: Optional[str]) -> str:
    """The slide section of a slide count: the overview picture and where the count stopped."""
    slide = summary.get("slide")
    if not slide:
        return ""
    zone = slide.get("zone", {})
    text = (
        f"{escape(str(slide.get('file', '')))}: level {slide.get('level')} "
        f"({_fmt(slide.get('microns_per_pixel'), 3, ' um/px')}); "
        f"{zone.get('count', 0)} of {slide.get('fields_scored', 0)} fields in the counting zone "
        f"({zone.get('thick', 0)} too thick, {zone.get('empty', 0)} empty, "
        f"{zone.get('blurred', 0)} blurred); {slide.get('fields_counted', 0)} counted for "
        f"{slide.get('target_cells')} cells "
        f"({'reached' if slide.get('reached') else 'not reached'})"
    )
    img = f'<img alt="slide overview" src="{overview}" style="max-width:100%">' if overview else ""
    return (
        f'<h2>Slide</h2><p class="muted">{text}. Overview: tissue (grey outline), counting zone '
        f"(green), counted fields (blue, numbered in counting order).</p>{img}"
    )


def render_html(
    summary: Dict[str, Any],
    thumbnails: Dict[str, str],
    title: str,
    overview: Optional[str] = None,
) -> str:
    """The report page for ``summary`` (as in summary.json) with field thumbnails (data: URIs);
    a slide count's page also shows the slide's ``overview`` (data: URI)."""
    warnings = "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"])
    warn = f'<ul class="warn">{warnings}</ul>' if warnings else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} - differential count</title><style>{_CSS}</style></head><body>"
        f"<main><h1>Marrow differential count: {escape(title)}</h1>"
        f'<p class="sub">{escape(summary["created"])} &middot; {summary["detected"]} cells '
        f"detected in {len(summary['fields'])} field(s)</p>{_cards(summary)}{warn}"
        f"{_flagged(summary)}{_slide(summary, overview)}"
        f'<h2>Differential</h2><div class="grid">{_counts_table(summary)}'
        f'<div class="chart">{bar_chart_svg(summary["classes"])}'
        '<div class="muted">bars: percent of counted cells; whiskers: 95 % Wilson interval'
        f"</div></div></div><h2>Fields</h2>{_fields(summary, thumbnails)}{_skipped(summary)}"
        f"{_scale(summary)}{_method(summary)}</main></body></html>\n"
    )

"""The report page: one self-contained ``index.html`` (styles and script inline, pictures beside it).

It opens from disk with nothing loaded from the internet: a table of the
complaints that sorts and filters, and one card per complaint.
"""

from __future__ import annotations

import json
from html import escape

from pipeline.explain.attribution import IMAGE_METHOD, TEXT_METHOD

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 24px 48px;color:#1d1d1f;background:#f6f6f4}
h1{font-size:22px;margin:18px 0 4px}.meta{color:#555;margin:0 0 8px}
details.methods{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px 12px;margin:8px 0}
.controls{position:sticky;top:0;background:#f6f6f4;padding:8px 0;border-bottom:1px solid #ddd;z-index:2}
.controls label{margin-right:14px}
table{border-collapse:collapse;background:#fff;margin:12px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}th{cursor:pointer;background:#eee;user-select:none}
th[data-order=asc]::after{content:" \\25B2"}th[data-order=desc]::after{content:" \\25BC"}
.card{background:#fff;border:1px solid #ccc;border-radius:8px;padding:10px 16px;margin:14px 0;max-width:1100px}
.card>header{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}.card h2{font-size:17px;margin:0}
.source{color:#777;font-size:12px}.status{padding:0 6px;border-radius:4px;font-size:12px}
.status.ok{background:#d9f2dd}.status.partial{background:#fde9c5}
.warnings{color:#8a4b00;margin:4px 0}
.prediction{font-size:15px;margin:8px 0 4px}.label{font-weight:600}
.probs{display:grid;grid-template-columns:max-content 180px max-content;gap:2px 8px;font-size:12px;align-items:center}
.probs .bar{height:9px;background:#4c78a8;border-radius:2px}.probs .chosen{font-weight:600}
.share{color:#444;margin:6px 0}.share.alone{color:#8a4b00}
.caption{display:block;color:#666;font-size:12px;margin-top:8px}
.text{margin:2px 0 6px;line-height:1.9;white-space:pre-wrap;word-break:break-word}
.tok{border-radius:3px;padding:1px 0}.rest{color:#999}
.attachments{display:flex;flex-wrap:wrap;gap:12px;margin-top:8px}figure{margin:0}
figure img{display:block;height:160px;border:1px solid #ccc}.frames{display:flex;gap:4px}
figcaption{font-size:12px;color:#555;max-width:520px}
.fusion{display:flex;height:16px;width:420px;border-radius:3px;overflow:hidden;margin:6px 0 2px;font-size:10px}
.fusion span{color:#fff;text-align:center;overflow:hidden;white-space:nowrap}
.m-text{background:#4c78a8}.m-image{background:#f58518}.m-video{background:#54a24b}.m-absent{background:#999}
.task{display:none}.task.shown{display:block}.hidden{display:none}
.pos{background:rgba(220,50,32,.5)}.neg{background:rgba(40,90,220,.5)}
"""

SCRIPT = """
const tasks = JSON.parse(document.getElementById('tasks').textContent);
const taskSelect = document.getElementById('task'), labelSelect = document.getElementById('label');
const cmin = document.getElementById('cmin'), cmax = document.getElementById('cmax');
const statusSelect = document.getElementById('status');
const rows = Array.from(document.querySelectorAll('#records tbody tr'));
const cards = new Map(Array.from(document.querySelectorAll('.card')).map(c => [c.dataset.n, c]));
function labelOptions() {
  const task = taskSelect.value;
  labelSelect.innerHTML = '<option value="">any</option>' +
    tasks[task].map(c => `<option>${c.replace(/[&<>"]/g, ch => '&#' + ch.charCodeAt(0) + ';')}</option>`).join('');
}
function apply() {
  const task = taskSelect.value, label = labelSelect.value, status = statusSelect.value;
  const lo = parseFloat(cmin.value || '0'), hi = parseFloat(cmax.value || '1');
  let shown = 0;
  for (const row of rows) {
    const conf = parseFloat(row.dataset['conf_' + task]);
    const labels = (row.dataset['label_' + task] || '').split('|');
    const keep = (!label || labels.includes(label)) && conf >= lo && conf <= hi
      && (!status || row.dataset.status === status);
    row.classList.toggle('hidden', !keep);
    cards.get(row.dataset.n).classList.toggle('hidden', !keep);
    shown += keep;
  }
  document.querySelectorAll('.task').forEach(t => t.classList.toggle('shown', t.dataset.task === task));
  document.getElementById('shown').textContent = `${shown} of ${rows.length} shown`;
}
function sortBy(th) {
  const key = th.dataset.key, numeric = th.dataset.type === 'number';
  const order = th.dataset.order === 'asc' ? 'desc' : 'asc';
  document.querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = order;
  const value = r => numeric ? parseFloat(r.dataset[key]) : (r.dataset[key] || '');
  rows.sort((a, b) => (value(a) < value(b) ? -1 : value(a) > value(b) ? 1 : 0) * (order === 'asc' ? 1 : -1));
  const body = document.querySelector('#records tbody'), main = document.getElementById('cards');
  for (const row of rows) { body.appendChild(row); main.appendChild(cards.get(row.dataset.n)); }
}
const asked = new URLSearchParams(location.search).get('task');  // index.html?task=severity opens on that task
if (asked && asked in tasks) taskSelect.value = asked;
taskSelect.addEventListener('change', () => { labelOptions(); apply(); });
[labelSelect, cmin, cmax, statusSelect].forEach(el => el.addEventListener('input', apply));
document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => sortBy(th)));
labelOptions();
apply();
"""


def _attr(name: str) -> str:
    """A data attribute name that JavaScript's ``dataset`` reads back unchanged (``data-conf_x`` -> ``conf_x``)."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name.lower())


def _label_text(label) -> str:
    return ", ".join(label) if isinstance(label, list) else str(label)


def _shaded(segments: list[tuple[str, float | None]]) -> str:
    """Text with each token shaded by its score in [-1, 1]: red raised the logit, blue lowered it."""
    html = []
    for text, score in segments:
        if score is None:
            html.append(escape(text))
            continue
        rgb = "220,50,32" if score >= 0 else "40,90,220"
        html.append(
            f'<span class="tok" style="background:rgba({rgb},{abs(score) * 0.85:.3f})" '
            f'title="{score:+.3f}">{escape(text)}</span>'
        )
    return "".join(html)


def _fusion_bar(fusion: dict | None) -> str:
    if not fusion:
        return ""
    parts = []
    for modality in ("text", "image", "video", "absent"):
        share = fusion.get(modality, 0.0)
        if share > 0.005:
            name = "missing" if modality == "absent" else modality
            parts.append(
                f'<span class="m-{modality}" style="width:{share * 100:.1f}%" '
                f'title="{name} {share:.2f}">{escape(name)} {share * 100:.0f}%</span>'
            )
    return f'<span class="caption">fusion attention per modality</span><div class="fusion">{"".join(parts)}</div>'


def _attachments(items: list[dict], fusion: dict | None) -> str:
    weights = (fusion or {}).get("attachments", {})
    figures = []
    for item in items:
        weight = weights.get(item["path"])
        about = escape(item["path"]) + (f" · fusion weight {weight:.2f}" if weight is not None else "")
        if item["kind"] == "image":
            figures.append(
                f'<figure><img src="{escape(item["src"])}" alt="{escape(item["path"])}">'
                f"<figcaption>{about}</figcaption></figure>"
            )
        else:
            frames = "".join(
                f'<img src="{escape(f["src"])}" alt="frame {f["index"] + 1}" title="frame {f["index"] + 1}: '
                f"{f['share'] * 100:.0f}% of the clip's Grad-CAM\">"
                for f in item["frames"]
            )
            which = ", ".join(str(f["index"] + 1) for f in item["frames"])
            figures.append(
                f'<figure class="video"><div class="frames">{frames}</div>'
                f"<figcaption>{about} · frames {which} of {item['num_frames']}"
                f"{' (most Grad-CAM first)' if item['ranked'] else ''}</figcaption></figure>"
            )
    return f'<div class="attachments">{"".join(figures)}</div>' if figures else ""


def _task_section(task: str, part: dict, fusion: dict | None) -> str:
    chosen = part["label"] if isinstance(part["label"], list) else [part["label"]]
    probs = "".join(
        f'<span class="{"chosen" if c in chosen else ""}">{escape(c)}</span>'
        f'<div class="bar" style="width:{p * 100:.1f}%">'
        f"</div><span>{p:.3f}</span>"
        for c, p in part["probs"].items()
    )
    html = [
        f'<section class="task" data-task="{escape(task)}">',
        f'<p class="prediction">{escape(task)}: <span class="label">{escape(_label_text(part["label"]))}</span> '
        f'<span class="conf">(confidence {part["confidence"]:.3f})</span></p>',
        f'<div class="probs">{probs}</div>',
    ]
    w, share = part["deep_weight"], part["tfidf_share"]
    if share is not None and w == 0:
        html.append(
            '<p class="share alone">Decided by the TF-IDF regression alone (network weight 0 for this task): '
            "network attributions are not shown.</p>"
        )
    elif share is not None and w == 1:
        html.append(
            '<p class="share">Decided by the network alone (the TF-IDF regression\'s blend weight is 0 '
            "for this task).</p>"
        )
    elif share is not None:
        html.append(
            f'<p class="share">TF-IDF regression: {share * 100:.0f}% of this decision\'s logit margin '
            f"(blend weight {1 - w:.2f}; the network {w:.2f}).</p>"
        )
    if part["text_network"] is not None:
        html.append(
            f'<span class="caption">text · network: {escape(TEXT_METHOD)}</span>'
            f'<p class="text network">{_shaded(part["text_network"])}</p>'
        )
    if part["text_tfidf"] is not None:
        html.append(
            '<span class="caption">text · TF-IDF regression: each word\'s part of its logit</span>'
            f'<p class="text tfidf">{_shaded(part["text_tfidf"])}</p>'
        )
    if part["text_network"] is None and part["text_tfidf"] is None:
        html.append('<p class="share">No text.</p>')
    if part["attachments"]:
        method = IMAGE_METHOD if w > 0 else "as received (the network has no say in this task)"
        html.append(f'<span class="caption">photos and video frames · {escape(method)}</span>')
        html.append(_attachments(part["attachments"], fusion))
    html.append("</section>")
    return "".join(html)


def _task_attributes(tasks: dict) -> str:
    """Per task its label(s) and confidence as data attributes, which the script filters and sorts by."""
    return " ".join(
        f'data-label_{_attr(t)}="{escape("|".join(p["label"]) if isinstance(p["label"], list) else p["label"])}" '
        f'data-conf_{_attr(t)}="{p["confidence"]:.6f}"'
        for t, p in tasks.items()
    )


def card(record: dict) -> str:
    """One complaint: header, warnings, fusion bar and a section per task (the chosen task's is shown)."""
    attrs = _task_attributes(record["tasks"])
    warnings = "".join(f"<li>{escape(w)}</li>" for w in record["warnings"])
    sections = "".join(_task_section(t, p, record["fusion"]) for t, p in record["tasks"].items())
    return (
        f'<article class="card" id="card-{record["n"]}" data-n="{record["n"]}" '
        f'data-status="{escape(record["status"])}" {attrs}>'
        f"<header><h2>{escape(record['id'])}</h2>"
        f'<span class="status {escape(record["status"])}">{escape(record["status"])}</span>'
        f'<span class="source">{escape(record["source"])}</span></header>'
        f"{f'<ul class=warnings>{warnings}</ul>' if warnings else ''}"
        f"{_fusion_bar(record['fusion'])}{sections}</article>"
    )


def table_row(record: dict) -> str:
    tasks = record["tasks"]
    attrs = _task_attributes(tasks)
    cells = "".join(f"<td>{escape(_label_text(p['label']))} ({p['confidence']:.2f})</td>" for p in tasks.values())
    return (
        f'<tr data-n="{record["n"]}" data-id="{escape(record["id"])}" data-status="{escape(record["status"])}" '
        f'data-confidence="{record["confidence"]:.6f}" {attrs}><td><a href="#card-{record["n"]}">{escape(record["id"])}'
        f"</a></td><td>{escape(record['status'])}</td><td>{record['confidence']:.3f}</td>{cells}</tr>"
    )


def page(records: list[dict], classes: dict[str, list[str]], about: str) -> str:
    """The whole report; ``records`` in the order shown (lowest confidence first)."""
    tasks = list(classes)
    options = "".join(f'<option value="{_attr(t)}">{escape(t)}</option>' for t in tasks)
    heads = "".join(f'<th data-key="conf_{_attr(t)}" data-type="number">{escape(t)}</th>' for t in tasks)
    task_classes = json.dumps({_attr(t): c for t, c in classes.items()}, ensure_ascii=False).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Explanations: {len(records)} complaints</title><style>{STYLE}</style></head>
<body><h1>Why the model decided: {len(records)} complaints</h1>
<p class="meta">{escape(about)}</p>
<details class="methods"><summary>How to read this page</summary><ul>
<li><b>Text</b>: {escape(TEXT_METHOD)}, of the network's logit for the predicted class of the chosen task.
<span class="pos">Red</span> tokens raised it, <span class="neg">blue</span> ones lowered it; hover a token for its
value.</li>
<li><b>Photos and video frames</b>: {escape(IMAGE_METHOD)}, for the same logit, laid over the picture as it is
oriented for a viewer. Warm colours mattered most. For a video, the sampled frames with the most Grad-CAM mass.</li>
<li><b>TF-IDF regression</b>: where the run blends one in, its share of the decision, and each word's part of its
logit. A task decided by the regression alone shows no network attributions.</li>
<li><b>Fusion attention</b>: how the fusion head weighed text, photos and videos for this complaint, and
"missing": the placeholders that stand for an absent modality; the same for every task.</li></ul></details>
<div class="controls"><label>Explain task <select id="task">{options}</select></label>
<label>Label <select id="label"></select></label>
<label>Confidence from <input id="cmin" type="number" min="0" max="1" step="0.05" value="0"> to
<input id="cmax" type="number" min="0" max="1" step="0.05" value="1"></label>
<label>Status <select id="status"><option value="">any</option><option>ok</option><option>partial</option>
</select></label>
<span id="shown"></span></div>
<table id="records"><thead><tr><th data-key="id">id</th><th data-key="status">status</th>
<th data-key="confidence" data-type="number">lowest confidence</th>{heads}</tr></thead>
<tbody>{"".join(table_row(r) for r in records)}</tbody></table>
<main id="cards">{"".join(card(r) for r in records)}</main>
<script type="application/json" id="tasks">{task_classes}</script>
<script>{SCRIPT}</script></body></html>
"""

"""The report page: one self-contained HTML file (figures as base64 PNG, inline CSS and JS, nothing fetched).

Every text that comes from a run (problems, model outputs, labels, file contents) goes through `esc`; the inline
script only shows and hides entries (the `hidden` attribute) and never writes HTML.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from datetime import datetime, timezone

from melrl.report.figures import Figure
from melrl.report.run_data import ALL_COUNTERS, PHASES, VERDICT_HELP, VERDICTS, Run, first_heuristic, verdict

PART_TITLES = (
    ("failure_point", "Failure point (bifurcation)"),
    ("cognitive_pattern", "Latent cognitive pattern"),
    ("success_factors", "Success factors"),
    ("reflective_summary", "Reflective summary"),
)
MAX_REPLAYS_SHOWN = 16


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def cap(text, limit: int) -> str:
    """At most about `limit` characters: the head and the tail around a marker saying how much was left out."""
    text = "" if text is None else str(text)
    if limit <= 0 or len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]}\n[… {len(text) - head - tail:,} characters omitted …]\n{text[len(text) - tail:]}"


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: list[str], rows: list[list], table_id: str | None = None, cls: str = "data") -> str:
    out = [f'<table class="{cls}"' + (f' id="{esc(table_id)}"' if table_id else "") + ">", "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{esc(_fmt(c))}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ sections


def _figure_html(fig: Figure, files_dir: str | None) -> str:
    if fig.png is None:
        return f'<p class="note figure-missing" id="fig-{esc(fig.name)}-missing">{esc(fig.note)}</p>'
    data = base64.b64encode(fig.png).decode("ascii")
    link = (f' · <a href="{esc(files_dir)}/{esc(fig.name)}.png">{esc(fig.name)}.png</a>' if files_dir else "")
    note = f'<p class="note">{esc(fig.note)}</p>' if fig.note else ""
    return (
        f'<figure class="report-figure" id="fig-{esc(fig.name)}">'
        f'<img class="figure-img" id="img-{esc(fig.name)}" alt="{esc(fig.alt)}" '
        f'src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(fig.title)}{link}</figcaption>{note}</figure>"
    )


def _summary_section(runs: list[Run]) -> str:
    headers = ["run", "steps", "reward (first → last)", "reward (mean)", *ALL_COUNTERS, "retention", "mean NLL",
               "seconds"]
    rows = []
    for run in runs:
        if not run.train:
            rows.append([run.label, 0] + [None] * (len(headers) - 2))
            continue
        _, rewards = run.series("reward_mean")
        _, nlls = run.series("nll")
        totals = {c: run.total(c) for c in ALL_COUNTERS}
        seconds = sum(float(m.get(f"time_{p}") or 0.0) for m in run.train for p in PHASES)
        rows.append([
            run.label, len(run.train),
            f"{rewards[0]:.3f} → {rewards[-1]:.3f}" if rewards else None,
            sum(rewards) / len(rewards) if rewards else None,
            *[totals[c] for c in ALL_COUNTERS],
            totals["kept"] / totals["constructed"] if totals["constructed"] else None,
            sum(nlls) / len(nlls) if nlls else None,
            round(seconds, 1),
        ])
    paths = "".join(f"<li><b>{esc(r.label)}</b>: <code>{esc(r.path)}</code></li>" for r in runs)
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<ul class="run-paths">{paths}</ul>'
        + _table(headers, rows, "summary-table")
        + '<p class="hint">Counters are totals over the run; retention = kept / constructed; mean NLL over the steps '
          "that kept a meta-experience.</p></section>"
    )


def _notes_section(runs: list[Run]) -> str:
    items = [f"<li><b>{esc(run.label)}</b>: {esc(note)}</li>" for run in runs for note in run.notes]
    if not items:
        return ""
    return f'<section id="notes"><h2>Missing or damaged files</h2><ul class="notes">{"".join(items)}</ul></section>'


def _step_tables(runs: list[Run], max_rows: int = 2000) -> str:
    out = []
    for run in runs:
        if not run.train:
            continue
        headers = ["step", "reward", "mixed", *ALL_COUNTERS, "retention", "NLL"]
        rows = [[m.get("step"), m.get("reward_mean"), m.get("mixed_group_fraction"),
                 *[m.get(c) for c in ALL_COUNTERS], m.get("retention_ratio"), m.get("nll")]
                for m in run.train[:max_rows]]
        more = (f'<p class="note">First {max_rows:,} of {len(run.train):,} steps.</p>'
                if len(run.train) > max_rows else "")
        out.append(f'<details class="step-table"><summary>{esc(run.label)}: per-step counters</summary>'
                   + _table(headers, rows) + more + "</details>")
    return "".join(out)


def _time_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        if not run.train:
            continue
        n = len(run.train)
        means = [sum(float(m.get(f"time_{p}") or 0.0) for m in run.train) / n for p in (*PHASES, "nll")]
        rows.append([run.label, *means, sum(means[:-1])])
    if not rows:
        return ""
    return ('<h3>Mean seconds per step</h3>'
            + _table(["run", *PHASES, "(NLL, in update)", "total"], rows, "time-table")
            + '<p class="hint">The NLL column is the internalization share of update.</p>')


def _eval_table(metrics: dict) -> str:
    benches = sorted(metrics, key=lambda b: (b == "average", b))
    names: list[str] = []
    for bench in benches:
        for name in metrics[bench]:
            if name not in names:
                names.append(name)
    names.sort(key=lambda n: (not n.startswith("pass@1"), not n.startswith("avg@"), n))
    values = [v for b in benches for v in metrics[b].values()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    percent = bool(values) and all(0.0 <= v <= 1.0 for v in values)
    rows = []
    for bench in benches:
        row = [bench]
        for name in names:
            v = metrics[bench].get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row.append(f"{100 * v:.1f}" if percent else f"{v:.4g}")
            else:
                row.append(v)
        rows.append(row)
    headers = ["benchmark", *[f"{n} (%)" if percent else n for n in names]]
    return _table(headers, rows, cls="data eval-table")


def _markdown_table(text: str) -> str | None:
    """A Markdown pipe table as an HTML table (escaped), or None when the text holds none."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(r"\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?", lines[i + 1]):
            def cells(line):
                return [c.strip() for c in line.strip().strip("|").split("|")]

            body = []
            for line in lines[i + 2:]:
                if not line.startswith("|"):
                    break
                body.append(cells(line))
            before = "\n".join(lines[:i]).strip()
            intro = f'<p class="hint">{esc(before)}</p>' if before else ""
            return intro + _table(cells(lines[i]), body, cls="data eval-table")
    return None


def _evaluation_section(runs: list[Run]) -> str:
    parts = []
    for run in runs:
        for result in run.evals:
            where = esc(result.name) if result.name else "run directory"
            block = [f'<div class="evaluation"><h3>{esc(run.label)} · {where}</h3>']
            if result.metrics:
                block.append(_eval_table(result.metrics))
            elif result.markdown:
                block.append(_markdown_table(result.markdown) or f"<pre>{esc(cap(result.markdown, 20000))}</pre>")
            if result.error:
                block.append(f'<p class="note">{esc(result.error)}</p>')
            if result.markdown and result.metrics:
                block.append(f"<details><summary>results.md</summary><pre>{esc(cap(result.markdown, 20000))}</pre>"
                             "</details>")
            if result.config:
                config = json.dumps(result.config, indent=2, ensure_ascii=False, default=str)
                block.append(f"<details><summary>evaluation config</summary><pre>{esc(cap(config, 20000))}</pre>"
                             "</details>")
            block.append("</div>")
            parts.append("".join(block))
    if not parts:
        return ('<section id="evaluation"><h2>Evaluation</h2><p class="note" id="evaluation-missing">No evaluation '
                "results (results.json or eval/*/results.json) in any run directory.</p></section>")
    return '<section id="evaluation"><h2>Evaluation</h2>' + "".join(parts) + "</section>"


# ------------------------------------------------------------------------------------------------ browser


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _pre(text, limit: int, cls: str) -> str:
    text = "" if text is None else str(text)
    if not text.strip():
        return f'<p class="empty {cls}">(empty)</p>'
    return f'<pre class="{cls}">{esc(cap(text, limit))}</pre>'


def _entry_html(record: dict, run: Run, run_index: int, index: int, max_chars: int) -> str:
    v = verdict(record)
    step = record.get("step")
    problem_id = str(record.get("problem_id", ""))
    heuristic = first_heuristic(record)
    headline = heuristic or (f"not parsed: {record.get('parse_error')}" if record.get("parse_error") else "")
    pair = record.get("pair") if isinstance(record.get("pair"), dict) else {}
    out = [
        f'<details class="experience" id="exp-{run_index}-{index}" data-run="{esc(run.label)}" '
        f'data-step="{esc(step)}" data-problem-id="{esc(problem_id)}" data-verdict="{esc(v)}">',
        f'<summary><span class="badge verdict-{esc(v)}">{esc(v)}</span> <span class="run-label">{esc(run.label)}'
        f'</span> · step <b>{esc(step)}</b> · problem <code>{esc(cap(problem_id, 80))}</code>'
        f'<span class="headline">{esc(cap(headline, 160))}</span></summary>',
        '<div class="exp-body">',
        "<h4>Problem</h4>", _pre(record.get("problem"), max_chars, "problem"),
        f'<p class="meta">Gold answer: <code class="gold">{esc(cap(record.get("gold"), 500))}</code>'
        f' · pair: group {esc(pair.get("group"))}, correct rollout {esc(pair.get("correct"))}, incorrect rollout '
        f'{esc(pair.get("incorrect"))} · analysis tokens: {esc(record.get("analysis_tokens", "–"))}</p>',
        '<div class="solutions"><div><h4>Incorrect solution</h4>',
        _pre(record.get("incorrect_solution"), max_chars, "solution incorrect"),
        "</div><div><h4>Correct solution</h4>",
        _pre(record.get("correct_solution"), max_chars, "solution correct"),
        "</div></div>",
    ]
    status = "parsed" if record.get("parsed") else f"not parsed: {record.get('parse_error') or 'unknown reason'}"
    if record.get("truncated"):
        status = f"truncated: hit its token budget; {status}"
    out += [f'<h4>Analysis <span class="status">({esc(status)})</span></h4>',
            _pre(record.get("analysis"), max_chars, "analysis")]
    parts = record.get("parts")
    if isinstance(parts, dict) and parts:
        out.append('<h4>Parts</h4><dl class="parts">')
        for key, title in PART_TITLES:
            if parts.get(key):
                out.append(f'<dt>{esc(title)}</dt><dd class="part-{key}">{esc(cap(parts[key], max_chars))}</dd>')
        heuristics = _as_list(parts.get("heuristics"))
        if heuristics:
            items = "".join(f"<li>{esc(cap(h, max_chars))}</li>" for h in heuristics[:50])
            out.append(f'<dt>Heuristics</dt><dd><ol class="heuristics">{items}</ol></dd>')
        out.append("</dl>")
    leaks = _as_list(record.get("leaks"))
    if leaks:
        out.append('<p class="leaks"><b>Leak check:</b> rejected, quotes '
                   + ", ".join(f"<code>{esc(cap(x, 200))}</code>" for x in leaks[:50]) + "</p>")
    elif record.get("parsed"):
        out.append('<p class="leaks"><b>Leak check:</b> passed</p>')
    replays = _as_list(record.get("replay"))
    answers = _as_list(record.get("replay_answer"))
    verdicts = _as_list(record.get("replay_correct"))
    if replays:
        out.append(f'<h4>Replay ({sum(bool(x) for x in verdicts)} of {len(verdicts)} verified)</h4>'
                   '<ol class="replays">')
        for i, text in enumerate(replays[:MAX_REPLAYS_SHOWN]):
            ok = bool(verdicts[i]) if i < len(verdicts) else False
            answer = answers[i] if i < len(answers) else None
            out.append(
                f'<li class="replay replay-{"ok" if ok else "failed"}"><span class="replay-verdict">'
                f'{"✓ correct" if ok else "✗ incorrect"}</span> · answer '
                + (f"<code>{esc(cap(answer, 300))}</code>" if answer not in (None, "") else "<i>none extracted</i>")
                + _pre(text, max_chars, "replay-text") + "</li>"
            )
        out.append("</ol>")
        if len(replays) > MAX_REPLAYS_SHOWN:
            out.append(f'<p class="note">{len(replays) - MAX_REPLAYS_SHOWN} more replays not shown.</p>')
    else:
        out.append('<p class="replays-none"><b>Replay:</b> not replayed (it leaked, was empty, or the run\'s '
                   "experience_filter admits only parsed, untruncated analyses)</p>")
    out.append("</div></details>")
    return "".join(out)


def _browser_section(runs: list[Run], max_experiences: int, max_chars: int) -> str:
    with_bank = [r for r in runs if r.experiences]
    if not with_bank:
        return ('<section id="experiences"><h2>Meta-experiences</h2><p class="note" id="experiences-missing">No '
                "meta-experiences in any run (no experiences.jsonl, or an empty one: meta_experience off?).</p>"
                "</section>")
    entries, notes = [], []
    for run_index, run in enumerate(with_bank):
        records = run.experiences
        if max_experiences and len(records) > max_experiences:
            stride = -(-len(records) // max_experiences)
            chosen = list(enumerate(records))[::stride]
            notes.append(f"{run.label}: {len(chosen):,} of {len(records):,} meta-experiences shown (one in every "
                         f"{stride}; --max-experiences sets the cap); `melrl experiences` lists and exports them all.")
        else:
            chosen = list(enumerate(records))
        entries += [_entry_html(record, run, run_index, i, max_chars) for i, record in chosen]
    counts = {v: sum(verdict(r) == v for run in with_bank for r in run.experiences) for v in VERDICTS}
    legend = " · ".join(f'<span class="badge verdict-{v}" title="{esc(VERDICT_HELP[v])}">{v}</span> {counts[v]:,}'
                        for v in VERDICTS)
    run_options = "".join(f'<option value="{esc(r.label)}">{esc(r.label)}</option>' for r in with_bank)
    verdict_options = "".join(f'<option value="{v}">{v}</option>' for v in ("kept", "rejected", *VERDICTS[1:]))
    steps = [s for run in with_bank for r in run.experiences
             if isinstance(s := r.get("step"), (int, float)) and not isinstance(s, bool)]
    lo, hi = (min(steps), max(steps)) if steps else ("", "")
    run_filter = ('<label>run <select id="f-run"><option value="">all</option>' + run_options + "</select></label>"
                  if len(with_bank) > 1 else "")
    note_html = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    return (
        '<section id="experiences" data-js="off"><h2>Meta-experiences</h2>'
        f'<p class="legend">{legend}</p>'
        '<form id="exp-filter" class="filter" autocomplete="off">'
        f"{run_filter}"
        f'<label>steps <input type="number" id="f-step-min" placeholder="{esc(lo)}" size="6"></label>'
        f'<label>to <input type="number" id="f-step-max" placeholder="{esc(hi)}" size="6"></label>'
        '<label>problem <input type="search" id="f-problem" placeholder="id or text"></label>'
        f'<label>verdict <select id="f-verdict"><option value="">all</option>{verdict_options}</select></label>'
        '<button type="button" id="f-reset">reset</button>'
        '<button type="button" id="f-open">expand shown</button>'
        '<button type="button" id="f-close">collapse all</button>'
        "</form>"
        f'<p id="exp-count" aria-live="polite">{len(entries):,} entries</p>'
        '<p class="hint">The filter is kept in the address '
        "(e.g. <code>#verdict=kept&amp;step=3&amp;problem=p1</code>); "
        "a link with it opens the page filtered.</p>"
        f"{note_html}"
        f'<div id="exp-list">{"".join(entries)}</div></section>'
    )


# ------------------------------------------------------------------------------------------------ page

CSS = """
:root{--fg:#1d232a;--muted:#5b6470;--line:#d9dee4;--bg:#fff;--soft:#f5f7f9}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
margin:0 auto;max-width:1180px;padding:0 20px 40px}
header{border-bottom:1px solid var(--line);margin-bottom:8px}
h1{font-size:24px;margin:18px 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:13px;margin:12px 0 4px;color:var(--muted)}
nav a{margin-right:12px}.hint,.note,.meta{color:var(--muted)}.note{font-style:italic}
code{background:var(--soft);padding:0 3px;border-radius:3px}
pre{background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:8px;white-space:pre-wrap;
word-break:break-word;max-height:420px;overflow:auto;margin:4px 0}
table.data{border-collapse:collapse;margin:6px 0;font-size:13px}
table.data th,table.data td{border:1px solid var(--line);padding:3px 8px;text-align:right}
table.data th{background:var(--soft)}table.data td:first-child,table.data th:first-child{text-align:left}
figure.report-figure{margin:10px 0}figure.report-figure img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:12px}
.filter{display:flex;flex-wrap:wrap;gap:10px;align-items:center;background:var(--soft);padding:8px;
border:1px solid var(--line);border-radius:4px}
.filter input[type=search]{width:14em}
details.experience{border:1px solid var(--line);border-radius:4px;margin:6px 0;padding:0 10px}
details.experience>summary{cursor:pointer;padding:6px 0}
details.experience[open]>summary{border-bottom:1px solid var(--line)}
.headline{color:var(--muted);margin-left:10px}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;color:#fff;background:#777}
.verdict-kept{background:#2e7d32}.verdict-truncated{background:#8d6e63}.verdict-rejected-parse{background:#ef6c00}
.verdict-leaked{background:#c62828}.verdict-replay-failed{background:#6a1b9a}
.solutions{display:grid;grid-template-columns:1fr 1fr;gap:12px}
pre.incorrect{border-left:4px solid #c62828}pre.correct{border-left:4px solid #2e7d32}
dl.parts dt{font-weight:600;margin-top:6px}dl.parts dd{margin:2px 0 4px 16px;white-space:pre-wrap}
.replay-ok .replay-verdict{color:#2e7d32;font-weight:600}.replay-failed .replay-verdict{color:#c62828;font-weight:600}
.status{font-weight:normal}
"""

# The filter: reads its initial state from the address (#verdict=kept&step=2 or ?verdict=...), shows and hides
# entries with the `hidden` attribute, writes the state back to the address. It never builds HTML.
SCRIPT = r"""
(function () {
  // Mark each figure once the browser has decoded it (data-loaded = its width in pixels).
  Array.prototype.forEach.call(document.querySelectorAll('img.figure-img'), function (img) {
    function mark() { if (img.naturalWidth > 0) { img.setAttribute('data-loaded', String(img.naturalWidth)); } }
    if (img.complete) { mark(); } else { img.addEventListener('load', mark); }
  });
})();
(function () {
  var section = document.getElementById('experiences');
  var list = document.getElementById('exp-list');
  if (!section || !list) { return; }
  var entries = Array.prototype.slice.call(list.querySelectorAll('details.experience'));
  var texts = entries.map(function (e) {
    var p = e.querySelector('.problem');
    return (e.getAttribute('data-problem-id') + '\n' + (p ? p.textContent : '')).toLowerCase();
  });
  var el = function (id) { return document.getElementById(id); };
  var fields = {run: el('f-run'), step_min: el('f-step-min'), step_max: el('f-step-max'),
                problem: el('f-problem'), verdict: el('f-verdict')};
  function readAddress() {
    var raw = location.hash.length > 1 ? location.hash.slice(1) : location.search.slice(1);
    var params = new URLSearchParams(raw);
    Object.keys(fields).forEach(function (k) {
      if (fields[k] && params.has(k)) { fields[k].value = params.get(k); }
    });
    if (params.has('step')) { fields.step_min.value = params.get('step'); fields.step_max.value = params.get('step'); }
  }
  function state() {
    var s = {};
    Object.keys(fields).forEach(function (k) { if (fields[k] && fields[k].value !== '') { s[k] = fields[k].value; } });
    return s;
  }
  function apply() {
    var s = state();
    var lo = s.step_min !== undefined ? Number(s.step_min) : -Infinity;
    var hi = s.step_max !== undefined ? Number(s.step_max) : Infinity;
    var q = (s.problem || '').toLowerCase();
    var shown = 0;
    entries.forEach(function (e, i) {
      var step = Number(e.getAttribute('data-step'));
      var v = e.getAttribute('data-verdict');
      var ok = (!s.run || e.getAttribute('data-run') === s.run) && step >= lo && step <= hi &&
        (!q || texts[i].indexOf(q) !== -1 || e.getAttribute('data-problem-id').toLowerCase() === q) &&
        (!s.verdict || v === s.verdict || (s.verdict === 'rejected' && v !== 'kept'));
      if (ok) { e.removeAttribute('hidden'); shown++; } else { e.setAttribute('hidden', ''); }
    });
    el('exp-count').textContent = shown + ' of ' + entries.length + ' entries shown';
    section.setAttribute('data-shown', String(shown));
    return s;
  }
  function update() {
    var s = apply();
    var hash = new URLSearchParams(s).toString();
    try { history.replaceState(null, '', hash ? '#' + hash : location.pathname + location.search); } catch (err) {}
  }
  Object.keys(fields).forEach(function (k) {
    if (fields[k]) { fields[k].addEventListener('input', update); fields[k].addEventListener('change', update); }
  });
  el('exp-filter').addEventListener('submit', function (ev) { ev.preventDefault(); });
  el('f-reset').addEventListener('click', function () {
    Object.keys(fields).forEach(function (k) { if (fields[k]) { fields[k].value = ''; } });
    update();
  });
  el('f-open').addEventListener('click', function () {
    entries.forEach(function (e) { if (!e.hasAttribute('hidden')) { e.open = true; } });
  });
  el('f-close').addEventListener('click', function () { entries.forEach(function (e) { e.open = false; }); });
  window.addEventListener('hashchange', function () { readAddress(); apply(); });
  readAddress();
  apply();
  section.setAttribute('data-js', 'ready');
})();
"""


def render_page(
    runs: list[Run],
    figures: list[Figure],
    *,
    title: str | None = None,
    files_dir: str | None = None,
    max_experiences: int = 1000,
    max_chars: int = 3000,
) -> str:
    labels = ", ".join(r.label for r in runs)
    title = title or f"melrl report: {labels}"
    by_name = {f.name: f for f in figures}

    def fig(name: str) -> str:
        return _figure_html(by_name[name], files_dir) if name in by_name else ""

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<header><h1>{esc(title)}</h1>"
        f'<p class="hint">{len(runs)} run(s) · generated {generated} by melrl</p>'
        '<nav><a href="#summary">summary</a><a href="#training">training</a><a href="#validation">validation</a>'
        '<a href="#mel">meta-experiences: counts</a><a href="#time">time</a><a href="#evaluation">evaluation</a>'
        '<a href="#experiences">meta-experience browser</a></nav></header>',
        _notes_section(runs),
        _summary_section(runs),
        '<section id="training"><h2>Training reward</h2>' + fig("reward") + "</section>",
        '<section id="validation"><h2>Validation</h2>' + fig("validation") + "</section>",
        '<section id="mel"><h2>Meta-experiences: retention and counters</h2>' + fig("retention") + fig("counters")
        + _step_tables(runs) + "</section>",
        '<section id="time"><h2>Time per phase</h2>' + fig("time") + _time_table(runs) + "</section>",
        _evaluation_section(runs),
        _browser_section(runs, max_experiences, max_chars),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )

"""The clinician's page: one self-contained HTML document (inline CSS and JavaScript, no external requests).

Binary bundles show the calibrated probability and the POSITIVE / NEGATIVE badge; bundles of other tasks
(``/api/info`` has ``task``; ``/api/predict`` answers ``task_kind`` and ``outputs``) show the result line and a
table of the outputs: every class's probability with the predicted class marked, every label's probability
and decision at its threshold, or each target's value in its unit; heat maps name their target.
"""

PAGE_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Aortic stenosis screening</title>
<style>
  :root { --ink:#1d2733; --muted:#5b6b7c; --line:#d5dde6; --bg:#f5f7fa; --pos:#b42318; --neg:#1a7f37; --accent:#1f5fa8; }
  * { box-sizing: border-box; }
  body { margin:0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink); background:var(--bg); }
  header { background:#fff; border-bottom:1px solid var(--line); padding:14px 28px; }
  header h1 { margin:0; font-size:20px; }
  header p { margin:4px 0 0; color:var(--muted); font-size:13px; }
  main { max-width:1100px; margin:0 auto; padding:20px 28px 40px; }
  .card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 20px; margin-bottom:18px; }
  .grid { display:grid; grid-template-columns: 1fr 1fr; gap:18px; }
  label.field { display:block; font-weight:600; margin-bottom:6px; }
  .hint { color:var(--muted); font-size:12px; margin-top:4px; }
  input[type=file] { width:100%; padding:8px; border:1px dashed var(--line); border-radius:6px; background:#fafbfc; }
  details { margin-top:12px; font-size:13px; }
  details input, details select { margin:4px 10px 4px 0; padding:4px 6px; }
  button { background:var(--accent); color:#fff; border:0; border-radius:6px; padding:10px 22px; font-size:15px; cursor:pointer; }
  button:disabled { opacity:.6; cursor:wait; }
  .error { border-color:#f3b5b0; background:#fff4f3; color:#8a1c12; }
  .result-head { display:flex; align-items:center; gap:28px; flex-wrap:wrap; }
  .prob { font-size:44px; font-weight:700; }
  .prob small { display:block; font-size:13px; font-weight:400; color:var(--muted); }
  .badge { font-size:18px; font-weight:700; padding:8px 16px; border-radius:20px; color:#fff; }
  .badge.positive { background:var(--pos); } .badge.negative { background:var(--neg); }
  table { border-collapse:collapse; font-size:14px; }
  td { padding:3px 14px 3px 0; } td:first-child { color:var(--muted); }
  #threshold { margin-top:10px; text-align:center; }
  #ecg-figure { grid-column: 1 / -1; }
  .warn { color:#8a5a00; font-size:13px; margin:4px 0; }
  figure { margin:0; } figure img { max-width:100%; border:1px solid var(--line); border-radius:4px; }
  figcaption { font-size:13px; color:var(--muted); margin:6px 0 0; }
  .model { font-size:13px; color:var(--muted); }
  #outputs th { text-align:left; font-weight:600; padding:3px 14px 3px 0; border-bottom:1px solid var(--line); }
  #outputs td:first-child { color:var(--ink); }
  #outputs tr.hit td { font-weight:700; }
  .summary { font-size:26px; font-weight:700; margin-bottom:8px; }
  footer { font-size:12px; color:var(--muted); text-align:center; }
  @media (max-width: 760px) { .grid { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1 id="page-title">Aortic stenosis screening from ECG and chest X-ray</h1>
  <p id="model-line">Loading model&hellip;</p>
</header>
<main>
  <form id="form" class="card" autocomplete="off">
    <div class="grid">
      <div>
        <label class="field" for="ecg">12-lead ECG</label>
        <input id="ecg" name="ecg" type="file" multiple>
        <div class="hint">CSV, DICOM ECG, HDF5, NumPy, or WFDB: select the .hea and .dat together (or a ZIP of both).</div>
      </div>
      <div>
        <label class="field" for="cxr">Chest X-ray</label>
        <input id="cxr" name="cxr" type="file">
        <div class="hint">DICOM, PNG or JPEG. Either modality may be left empty.</div>
      </div>
    </div>
    <details>
      <summary>Headerless ECG files (CSV, NumPy): sampling rate and units</summary>
      <input id="ecg_fs" name="ecg_fs" type="number" step="any" min="1" placeholder="sampling rate (Hz)">
      <select id="ecg_units" name="ecg_units"><option value="">units: default</option><option>mV</option><option>uV</option><option>counts</option></select>
      <input id="ecg_resolution_uv" name="ecg_resolution_uv" type="number" step="any" min="0" placeholder="&micro;V per count">
      <div class="hint" id="defaults-hint"></div>
    </details>
    <p><label><input id="explain" type="checkbox" checked> show heat maps</label></p>
    <button id="submit" type="submit">Screen</button>
    <span id="busy" class="hint" hidden>Reading the files and running the model&hellip;</span>
  </form>

  <div id="error" class="card error" role="alert" hidden></div>

  <section id="result" class="card" hidden aria-live="polite">
    <div id="task-result" hidden>
      <div class="summary" id="summary"></div>
      <table id="outputs"><thead><tr id="outputs-head"></tr></thead><tbody id="outputs-body"></tbody></table>
    </div>
    <div class="result-head">
      <div class="prob" id="binary-prob"><span id="probability"></span><small>probability of aortic stenosis (calibrated)</small></div>
      <div id="binary-decision"><span id="decision" class="badge"></span><div class="hint" id="threshold"></div></div>
      <table>
        <tr><td>modalities used</td><td id="modalities"></td></tr>
        <tr><td>score (fused)</td><td id="score-fused"></td></tr>
        <tr><td>ECG branch</td><td id="score-ecg"></td></tr>
        <tr><td>X-ray branch</td><td id="score-cxr"></td></tr>
      </table>
    </div>
    <div id="warnings"></div>
    <div class="grid" style="margin-top:16px">
      <figure id="cxr-figure" hidden><img id="cxr-image" alt="X-ray Grad-CAM overlay"><figcaption>X-ray: Grad-CAM overlay (where the image raised the X-ray score)</figcaption></figure>
      <figure id="ecg-figure" hidden><img id="ecg-image" alt="12-lead ECG heat map"><figcaption>ECG: lead importance &times; time (12-lead heat map)</figcaption></figure>
    </div>
    <div class="grid" id="target-figures" style="margin-top:16px"></div>
  </section>

  <div class="card model" id="model-card"></div>
  <footer>Decision support for referral to echocardiography; not a diagnosis. Files are processed in memory and not kept.</footer>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = (x, d=3) => (x === null || x === undefined) ? "\u2013" : Number(x).toFixed(d);
const text = (id, v) => { $(id).textContent = v; };

let taskInfo = null;

function taskLines(info) {
  const t = info.task, v = info.validation || {};
  const kinds = {multiclass: t.ordinal ? "ordered classes" : "classes", multilabel: "labels", regression: "measurements"};
  const lines = [`Task: ${t.name} \u2013 ${kinds[t.kind] || t.kind}: ${t.names.join(", ")}.`];
  if (t.description) lines.push(`${t.description}.`);
  if (t.kind === "multiclass") lines.push("Prediction: the most probable class.");
  if (t.kind === "multilabel") lines.push("Decisions: " + t.names.map(n => `${n} at ${fmt(t.thresholds[n], 2)}`).join(", ") + ".");
  if (t.kind === "regression") lines.push("Values in " + t.names.map((n, i) => `${n}: ${t.units[i] || "units"}`).join(", ") + ".");
  if (v.macro_auroc !== undefined) lines.push(`Validation: macro AUROC ${fmt(v.macro_auroc)} (${v.n_records ?? "?"} records).`);
  if (v.mae_per_target) lines.push("Validation MAE: " + Object.entries(v.mae_per_target).map(([n, x]) => `${n} ${fmt(x, 3)}`).join(", ") + ".");
  return lines;
}

fetch("api/info").then(r => r.json()).then(info => {
  text("model-line", `Model: ${info.name} \u00b7 ${info.fusion} fusion \u00b7 reads ${info.modalities.map(m => m === "ecg" ? "ECG" : "X-ray").join(" + ")}`);
  const v = info.validation || {};
  const card = $("model-card");
  card.textContent = "";
  if (info.task) {
    taskInfo = info.task;
    text("page-title", `${info.task.name}: prediction from ECG and chest X-ray`);
    document.title = info.task.name;
  }
  const lines = info.task ? [...taskLines(info),
    `Upload limit ${info.max_upload_mb} MB. Bundle ${String(info.content_hash || "").slice(0, 19)}\u2026, cardiofusion ${info.cardiofusion}.`] : [
    `Label: ${info.label || "aortic stenosis"}.`,
    `Decision: ${info.threshold_rule}.`,
    `Validation: AUROC ${fmt(v.auroc)}, sensitivity ${fmt(v.sensitivity_at_threshold, 2)}, specificity ${fmt(v.specificity_at_threshold, 2)} (${v.n_records ?? "?"} records).`,
    `Upload limit ${info.max_upload_mb} MB. Bundle ${String(info.content_hash || "").slice(0, 19)}\u2026, cardiofusion ${info.cardiofusion}.`,
  ];
  for (const l of lines) { const p = document.createElement("div"); p.textContent = l; card.appendChild(p); }
  const d = info.ecg_reader_defaults || {};
  text("defaults-hint", `Defaults (from the training data): ${d.fs ?? 500} Hz, ${d.units ?? "uV"}${d.units === "counts" ? `, ${d.resolution_uv} \u00b5V per count` : ""}.`);
  if (!info.explanations) { $("explain").checked = false; $("explain").disabled = true; }
}).catch(() => text("model-line", "Model information unavailable."));

function showError(message) {
  $("result").hidden = true;
  const box = $("error");
  box.textContent = message.charAt(0).toUpperCase() + message.slice(1);
  box.hidden = false;
}

function cell(row, value) { const td = document.createElement("td"); td.textContent = value; row.appendChild(td); }

function showOutputs(r) {
  text("summary", r.summary);
  const head = $("outputs-head"), body = $("outputs-body");
  head.textContent = ""; body.textContent = "";
  const cols = r.task_kind === "regression" ? ["target", "value", "unit"]
             : r.task_kind === "multilabel" ? ["label", "probability", "threshold", "decision"] : ["class", "probability", ""];
  for (const c of cols) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  for (const o of r.outputs) {
    const tr = document.createElement("tr");
    cell(tr, o.name);
    if (r.task_kind === "regression") { cell(tr, fmt(o.value, 3)); cell(tr, o.unit || ""); }
    else if (r.task_kind === "multilabel") { cell(tr, fmt(o.probability, 3)); cell(tr, fmt(o.threshold, 2)); cell(tr, (o.decision || "").toUpperCase()); if (o.decision === "positive") tr.className = "hit"; }
    else { cell(tr, fmt(o.probability, 3)); cell(tr, o.decision === "predicted" ? "\u2190 predicted" : ""); if (o.decision === "predicted") tr.className = "hit"; }
    body.appendChild(tr);
  }
}

function showTargetFigures(images) {
  const box = $("target-figures");
  box.textContent = "";
  for (const [key, src] of Object.entries(images || {})) {
    const [kind, name] = key.split(/:(.*)/s);
    if (!name || !String(src).startsWith("data:image/png;base64,")) continue;
    const fig = document.createElement("figure");
    if (kind === "ecg") fig.style.gridColumn = "1 / -1";
    const img = document.createElement("img"); img.src = src; img.alt = `${kind === "ecg" ? "ECG" : "X-ray"} heat map for ${name}`;
    const cap = document.createElement("figcaption");
    cap.textContent = `${kind === "ecg" ? "ECG: lead importance \u00d7 time" : "X-ray: Grad-CAM overlay"} \u2013 target ${name}`;
    fig.appendChild(img); fig.appendChild(cap); box.appendChild(fig);
  }
}

function showResult(r) {
  $("error").hidden = true;
  const multi = Boolean(r.task_kind);
  $("task-result").hidden = !multi;
  $("binary-prob").hidden = multi;
  $("binary-decision").hidden = multi;
  showTargetFigures(multi ? r.images : {});
  if (multi) showOutputs(r);
  text("probability", fmt(r.probability, 2));
  const badge = $("decision");
  badge.textContent = r.decision === "positive" ? "POSITIVE \u2013 refer for echocardiography" : "NEGATIVE";
  badge.className = "badge " + r.decision;
  text("threshold", `threshold ${fmt(r.threshold, 3)}`);
  text("modalities", r.modalities.map(m => m === "ecg" ? "ECG" : "X-ray").join(" + "));
  const sc = (x) => Array.isArray(x) ? x.map(v => fmt(v, 3)).join(" / ") : fmt(x, 4);
  text("score-fused", sc(r.scores.fused));
  text("score-ecg", sc(r.scores.ecg));
  text("score-cxr", sc(r.scores.cxr));
  const w = $("warnings");
  w.textContent = "";
  for (const msg of r.warnings || []) { const p = document.createElement("p"); p.className = "warn"; p.textContent = "\u26a0 " + msg; w.appendChild(p); }
  for (const kind of ["cxr", "ecg"]) {
    const src = (r.images || {})[kind];
    $(kind + "-figure").hidden = !src;
    if (src && src.startsWith("data:image/png;base64,")) { $(kind + "-image").src = src; } else { $(kind + "-image").removeAttribute("src"); }
  }
  $("result").hidden = false;
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const data = new FormData();
  for (const f of $("ecg").files) data.append("ecg", f, f.name);
  for (const f of $("cxr").files) data.append("cxr", f, f.name);
  for (const k of ["ecg_fs", "ecg_units", "ecg_resolution_uv"]) if ($(k).value) data.append(k, $(k).value);
  data.append("explain", $("explain").checked ? "1" : "0");
  if (!$("ecg").files.length && !$("cxr").files.length) { showError("Choose an ECG file, an X-ray file, or both."); return; }
  $("submit").disabled = true; $("busy").hidden = false;
  try {
    const resp = await fetch("api/predict", { method: "POST", body: data });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) { showError((body && body.error) ? body.error : `The server refused the upload (HTTP ${resp.status}).`); return; }
    showResult(body);
  } catch (e) {
    showError("The screening service cannot be reached.");
  } finally {
    $("submit").disabled = false; $("busy").hidden = true;
  }
});
</script>
</body>
</html>
"""

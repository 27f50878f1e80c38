/* The page: images of a case are sent one at a time to POST /api/v1/analyze; the fields, their
 * cells and the case's differential are kept and recomputed here, so the confidence slider and
 * the class switches update everything without a new request. Downloads ask the server to write
 * the report of the visible cells (the count tool's summary.json and cells.csv). A pixel size
 * typed in (when the model's scale is known) goes with each image as `microns_per_pixel`; the
 * scale used, its warnings and the fields outside the training data (`flags`) are shown.
 */
"use strict";

(function () {
  const API = document.body.dataset.api || "/api/v1";
  const $ = (id) => document.getElementById(id);
  const state = {
    model: null,
    classes: {},
    classNames: [],
    lineage: { myeloid: [], erythroid: [] },
    fields: [],
    selected: null,
    threshold: 0.5,
    excluded: new Set(),
    uncertainBelow: 0.5,
    queue: [],
    busy: false,
    nextId: 1,
    pixelHint: "",
  };
  const Scale = window.BMCScale;
  const viewer = new window.FieldViewer($("overlay"), $("tooltip"), $("stage"));

  // ------------------------------------------------------------------ helpers
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key in node) node[key] = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }
  const fmt = (v, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : "—");
  const megabytes = (bytes) => `${Math.round(bytes / 1048576)} MB`;
  const doneFields = () => state.fields.filter((f) => f.status === "done");
  const visible = (cell) => cell.det_score >= state.threshold && !state.excluded.has(cell.label);

  function showError(text) {
    const close = el("button", { type: "button", className: "dismiss", textContent: "×" });
    close.setAttribute("aria-label", "Dismiss this message");
    const item = el("div", { className: "message error" }, el("span", { textContent: text }), close);
    close.addEventListener("click", () => item.remove());
    $("messages").appendChild(item);
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body.error && body.error.message) return body.error.message;
    } catch (e) {
      /* not JSON */
    }
    return `the server answered ${response.status} ${response.statusText}`;
  }

  // ------------------------------------------------------------------ the model
  async function loadModel() {
    const response = await fetch(`${API}/model`);
    if (!response.ok) throw new Error(await errorText(response));
    const model = await response.json();
    state.model = model;
    state.classNames = model.class_names;
    state.classes = Object.fromEntries(model.classes.map((c) => [c.name, c]));
    if (model.other_class) state.classes[model.other_class.name] = model.other_class;
    state.lineage = model.lineage.map;
    state.uncertainBelow = model.settings.uncertain_below;
    state.threshold = model.settings.default_threshold;
    const slider = $("threshold");
    slider.min = String(Math.floor(100 * model.settings.min_score) / 100);
    slider.value = String(state.threshold);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    $("limit-size").textContent = megabytes(model.settings.max_file_bytes);
    $("uncertain-rule").textContent =
      `Uncertain: class probability below ${state.uncertainBelow}; counted apart, in no ` +
      "percentage. Dashed boxes in the field." +
      (model.settings.open_set
        ? " Other: a cell of no type the classifier knows (open-set score below " +
          `${model.settings.open_set.threshold.toPrecision(4)}); listed for review, in no ` +
          "percentage."
        : "");
    window.BMCModelPanel.render(model, $("model-badge"), $("model-info"));
    const entry = Scale.entryState(model);
    state.pixelHint = entry.hint;
    $("pixel-size").disabled = !entry.enabled;
    if (!entry.enabled) $("pixel-size").value = "";
    $("pixel-size").placeholder = entry.enabled ? "optional" : "";
    markPixelSize(null);
  }

  // ------------------------------------------------------------------ the pixel size
  /** Show the entry's hint, or ``error`` in its place (aria-invalid). */
  function markPixelSize(error) {
    const input = $("pixel-size");
    const hint = $("pixel-size-hint");
    if (error) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    const invalid = "Enter a positive number (e.g. 0.25) or leave empty.";
    hint.textContent = error ? invalid : state.pixelHint;
    hint.classList.toggle("error", Boolean(error));
  }

  /** The pixel size to send (null: none), or undefined after telling what is wrong with it. */
  function pixelSize() {
    const input = $("pixel-size");
    if (input.disabled) return null;
    const parsed = Scale.parse(input.value);
    markPixelSize(parsed.error);
    if (!parsed.error) return parsed.value;
    showError(parsed.error);
    input.focus();
    return undefined;
  }

  // ------------------------------------------------------------------ uploads
  function addFiles(files) {
    if (!files.length) return;
    const limit = state.model ? state.model.settings.max_file_bytes : Infinity;
    const mpp = pixelSize();
    if (mpp === undefined) return; // nothing is sent with a pixel size that is not a number
    for (const file of files) {
      if (file.size === 0) {
        showError(`${file.name} is empty (0 bytes)`);
        continue;
      }
      if (file.size > limit) {
        showError(`${file.name} is larger than the ${megabytes(limit)} limit per file`);
        continue;
      }
      const field = {
        id: state.nextId++,
        file,
        filename: file.name,
        status: "queued",
        data: null,
        mpp,
        scale: null,
      };
      state.fields.push(field);
      state.queue.push(field);
    }
    renderFilmstrip();
    pump();
  }

  async function pump() {
    if (state.busy) return;
    state.busy = true;
    while (state.queue.length) {
      const field = state.queue.shift();
      if (!state.fields.includes(field)) continue; // removed by "New case"
      field.status = "analysing";
      renderFilmstrip();
      await analyze(field);
    }
    state.busy = false;
  }

  async function analyze(field, attempt = 0) {
    const form = new FormData();
    form.append("files", field.file, field.file.name);
    form.append("preview", "1");
    if (field.mpp !== null) form.append("microns_per_pixel", String(field.mpp));
    let response;
    try {
      response = await fetch(`${API}/analyze`, { method: "POST", body: form });
    } catch (e) {
      return failField(field, `${field.filename}: the server cannot be reached (${e.message})`);
    }
    if (response.status === 503 && attempt < 8) {
      const wait = Number(response.headers.get("Retry-After") || "2");
      await new Promise((resolve) => setTimeout(resolve, 1000 * wait));
      return analyze(field, attempt + 1);
    }
    if (!state.fields.includes(field)) return undefined; // "New case" meanwhile
    if (!response.ok) return failField(field, await errorText(response));
    const body = await response.json();
    field.data = body.fields[0];
    field.scale = body.scale || null;
    field.status = "done";
    field.file = null; // the preview is all the page needs now
    if (state.selected === null || !findField(state.selected)?.data) state.selected = field.id;
    render();
  }

  function failField(field, message) {
    showError(message);
    state.fields = state.fields.filter((f) => f !== field);
    render();
  }

  // ------------------------------------------------------------------ rendering
  const findField = (id) => state.fields.find((f) => f.id === id);
  const flagsOf = (field) => (field.data && field.data.flags) || [];

  function render() {
    renderFilmstrip();
    renderViewer();
    renderTable();
    renderOutliers();
  }

  function renderFilmstrip() {
    const list = $("fields");
    list.replaceChildren();
    for (const field of state.fields) {
      const shown = field.data ? field.data.cells.filter(visible).length : null;
      const status = { queued: "waiting…", analysing: "analysing…" }[field.status];
      const label = status || `${shown} cell${shown === 1 ? "" : "s"}`;
      const thumb = field.data
        ? el("img", { src: field.data.preview || "", alt: "" })
        : el("span", { className: "spinner", "aria-hidden": "true" });
      const flags = flagsOf(field);
      const button = el(
        "button",
        {
          type: "button",
          className: `thumb ${field.status}${flags.length ? " flagged" : ""}`,
          disabled: !field.data,
        },
        thumb,
        el("span", { className: "thumb-name", textContent: field.filename }),
        el("span", { className: "thumb-count", textContent: label })
      );
      if (flags.length) {
        const mark = el("span", { className: "thumb-flag", title: flags.join("\n") });
        mark.append(
          el("span", { className: "warn-mark", textContent: "⚠ ", "aria-hidden": "true" }),
          "atypical field",
          el("span", {
            className: "visually-hidden",
            textContent: `: outside the training data (${flags.join("; ")})`,
          })
        );
        button.appendChild(mark);
      }
      button.setAttribute("aria-pressed", String(field.id === state.selected));
      button.addEventListener("click", () => select(field.id));
      list.appendChild(el("li", {}, button));
    }
    const done = doneFields();
    const index = done.findIndex((f) => f.id === state.selected);
    $("prev-field").disabled = index <= 0;
    $("next-field").disabled = index < 0 || index >= done.length - 1;
  }

  function renderViewer() {
    const field = findField(state.selected);
    $("empty").hidden = Boolean(field && field.data);
    if (!field || !field.data) {
      viewer.clear();
      $("field-title").textContent = "No field yet";
      $("field-meta").textContent = "Add the images of a case to count its cells.";
      $("field-flags").hidden = true;
      return;
    }
    const flags = flagsOf(field);
    const line = $("field-flags");
    line.hidden = !flags.length;
    line.replaceChildren(
      el("span", { className: "warn-mark", textContent: "⚠ ", "aria-hidden": "true" }),
      `Outside the training data: ${flags.join("; ")}`
    );
    line.title = flags.join("\n");
    viewer.show(field.data, state.classes, state.uncertainBelow);
    viewer.showLabels($("show-labels").checked);
    applyFilter();
  }

  function applyFilter() {
    const field = findField(state.selected);
    if (!field || !field.data) return;
    const shown = viewer.filter(state.threshold, state.excluded);
    const d = field.data;
    const seconds = d.detect_s + d.recognise_s;
    $("field-title").textContent = field.filename;
    const brief = Scale.brief(field.scale);
    const scaled = brief ? `${brief} · ` : "";
    $("field-meta").textContent =
      `${shown} of ${d.cells.length} cells shown · ${d.width} × ${d.height} px ${d.format} · ` +
      `${scaled}analysed in ${seconds.toFixed(2)} s`;
  }

  function tableRow(row) {
    const info = state.classes[row.class];
    const off = state.excluded.has(row.class);
    const box = el("input", { type: "checkbox", checked: !off, id: `toggle-${row.class}` });
    box.addEventListener("change", () => toggleClass(row.class, box.checked));
    const swatch = el("span", { className: "swatch", "aria-hidden": "true" });
    swatch.style.background = info.color;
    const name = el(
      "label",
      { htmlFor: box.id, className: "class-name", title: `${info.full_name} (${row.class})` },
      swatch,
      el("span", { className: "abbr", textContent: row.class }),
      el("span", { className: "full", textContent: info.full_name })
    );
    const num = (value, text) => el("td", { className: "num", textContent: text, dataset: { value } });
    const [lo, hi] = row.ci95_percent;
    return el(
      "tr",
      { className: off ? "excluded" : row.count ? "" : "zero", dataset: { class: row.class } },
      el("td", { className: "toggle-col" }, box),
      el("th", { scope: "row" }, name),
      num(row.count, off ? "off" : String(row.count)),
      num(row.percent, off ? "" : fmt(row.percent)),
      el("td", {
        className: "num ci",
        textContent: off || !Number.isFinite(lo) ? "" : `${fmt(lo)}–${fmt(hi)}`,
        dataset: { lo, hi },
      })
    );
  }

  function renderTable() {
    const fields = doneFields();
    const cells = fields.flatMap((f) => f.data.cells.filter(visible));
    const diff = window.BMCStats.differential(
      cells,
      state.classNames,
      state.lineage,
      state.uncertainBelow
    );
    $("diff-body").replaceChildren(...diff.classes.map(tableRow));
    $("total-count").textContent = String(diff.counted);
    $("total-count").dataset.value = diff.counted;
    $("total-percent").textContent = diff.counted ? "100" : "—";
    $("uncertain-count").textContent = String(diff.uncertain.total);
    $("uncertain-count").dataset.value = diff.uncertain.total;
    $("other-row").hidden = !diff.other;
    $("other-count").textContent = String(diff.other);
    $("other-count").dataset.value = diff.other;
    const me = diff.me;
    const applies = state.model && state.model.lineage.me_applies;
    $("me-ratio").textContent = applies && me.ratio !== null ? `${me.ratio.toFixed(2)} : 1` : "—";
    $("me-ratio").dataset.value = me.ratio === null ? "" : me.ratio;
    $("me-detail").textContent = applies
      ? `myeloid ${me.myeloid} / erythroid ${me.erythroid}`
      : "not applicable: the model has no myeloid and erythroid classes";
    const warnings = fields.length ? [...diff.warnings, ...state.model.lineage.warnings] : [];
    for (const field of fields) {
      for (const text of (field.scale && field.scale.warnings) || []) {
        if (!warnings.includes(text)) warnings.push(text);
      }
    }
    const flagged = fields.filter((f) => flagsOf(f).length).length;
    if (flagged) {
      warnings.push(
        `${flagged} of ${fields.length} field${fields.length === 1 ? "" : "s"} outside the ` +
          "training data (listed below): their cells are counted but may be misread"
      );
    }
    $("scale-line").hidden = !fields.length;
    $("scale-line").textContent = Scale.caseLine(fields);
    $("warnings").replaceChildren(...warnings.map((w) => el("li", { textContent: w })));
    $("summary-line").textContent = fields.length
      ? `${diff.counted} cells counted in ${fields.length} field${fields.length === 1 ? "" : "s"}` +
        ` · ${diff.uncertain.total} uncertain` +
        (diff.other ? ` · ${diff.other} Other` : "")
      : "No cells yet.";
    $("download-csv").disabled = $("download-json").disabled = !fields.length;
  }

  function renderOutliers() {
    const flagged = doneFields().filter((f) => flagsOf(f).length);
    $("ood-card").hidden = !flagged.length;
    $("ood-list").replaceChildren(
      ...flagged.map((field) => {
        const link = el("button", {
          type: "button",
          className: "field-link",
          textContent: field.filename,
        });
        link.setAttribute("aria-label", `Show ${field.filename}`);
        link.addEventListener("click", () => select(field.id));
        const reasons = el("ul", {}, ...flagsOf(field).map((r) => el("li", { textContent: r })));
        return el("li", { dataset: { field: field.data.name } }, link, reasons);
      })
    );
  }

  // ------------------------------------------------------------------ interactions
  function select(id) {
    state.selected = id;
    render();
  }

  function step(delta) {
    const done = doneFields();
    const index = done.findIndex((f) => f.id === state.selected);
    const next = done[index + delta];
    if (next) select(next.id);
  }

  function toggleClass(name, on) {
    if (on) state.excluded.delete(name);
    else state.excluded.add(name);
    applyFilter();
    renderTable();
    renderFilmstrip();
    const box = $(`toggle-${name}`);
    if (box) box.focus();
  }

  function onThreshold() {
    state.threshold = Number($("threshold").value);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    applyFilter();
    renderTable();
    renderFilmstrip();
  }

  function newCase() {
    state.fields = [];
    state.queue = [];
    state.selected = null;
    state.excluded.clear();
    $("case-name").value = "";
    $("messages").replaceChildren();
    render();
    $("dropzone").focus();
  }

  async function download(kind) {
    const body = {
      fields: doneFields().map((f) => ({ ...f.data, preview: undefined })),
      min_score: state.threshold,
      excluded_classes: [...state.excluded],
      case: $("case-name").value.trim(),
    };
    const path = kind === "csv" ? "cells.csv" : "summary";
    const response = await fetch(`${API}/${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) return showError(`download failed: ${await errorText(response)}`);
    const blob = await response.blob();
    const stem = (body.case || "case").replace(/[^A-Za-z0-9._-]+/g, "_");
    const link = el("a", {
      href: URL.createObjectURL(blob),
      download: `${stem}-${kind === "csv" ? "cells.csv" : "summary.json"}`,
    });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function wireDropzone() {
    const zone = $("dropzone");
    const input = $("file-input");
    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      addFiles([...input.files]);
      input.value = "";
    });
    // files dropped anywhere on the page are added (and never opened by the browser)
    for (const type of ["dragenter", "dragover"]) {
      window.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    window.addEventListener("dragleave", (event) => {
      if (!event.relatedTarget) zone.classList.remove("dragging");
    });
    window.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (event.dataTransfer) addFiles([...event.dataTransfer.files]);
    });
  }

  function wire() {
    wireDropzone();
    $("threshold").addEventListener("input", onThreshold);
    $("show-labels").addEventListener("change", (e) => viewer.showLabels(e.target.checked));
    $("prev-field").addEventListener("click", () => step(-1));
    $("next-field").addEventListener("click", () => step(1));
    $("new-case").addEventListener("click", newCase);
    $("download-csv").addEventListener("click", () => download("csv"));
    $("download-json").addEventListener("click", () => download("json"));
    const pixel = $("pixel-size");
    pixel.addEventListener("input", () => markPixelSize(null));
    pixel.addEventListener("change", () => markPixelSize(Scale.parse(pixel.value).error));
  }

  wire();
  loadModel()
    .then(render)
    .catch((e) => showError(`cannot load the model description: ${e.message}`));
})();

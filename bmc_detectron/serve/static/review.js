// The review screen: each change is sent at once with the cell's row version; a 409 tells the
// person (another reviewer changed the cell, or the case is signed). Undo sends a new change.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const caseId = document.body.dataset.case;
  const state = { data: null, cells: [], field: null, selected: null, undo: [], images: {}, adding: false, typed: "" };

  function say(text, isError) {
    const m = $("message");
    m.hidden = !text;
    m.textContent = text || "";
    m.classList.toggle("error", Boolean(isError));
  }

  function base() { return `/cases/${encodeURIComponent(caseId)}/versions/${state.data.version}`; }
  function cell(id) { return state.cells.find((c) => c.id === id); }
  function fieldCells() { return state.cells.filter((c) => c.field === state.field && !c.deleted); }

  function render() {
    const d = state.data;
    $("case-title").textContent = `${d.case_id} v${d.version}`;
    $("case-status").textContent = d.status.replace("_", " ");
    $("case-status").className = "status status-" + d.status;
    $("sign").hidden = !d.editable;
    $("reopen").hidden = d.editable;
    $("add-mode").disabled = $("undo").disabled = !d.editable;
    document.body.classList.toggle("read-only", !d.editable);
    for (const kind of ["html", "csv", "json"]) $("report-" + kind).href = BMC.api + base() + "/report." + kind;
    const field = d.fields.find((f) => f.name === state.field);
    ReviewView.fieldNav(d.fields, state.cells, state.field, showField);
    ReviewView.boxes(field, state.cells.filter((c) => c.field === state.field), state.selected, pick);
    const sel = cell(state.selected);
    ReviewView.palette(d.class_choices, sel ? ReviewView.finalClass(sel) : null, d.editable && Boolean(sel), (name) => classify(state.selected, name));
    $("cell-info").textContent = sel
      ? `#${sel.id} ${sel.field}: model ${sel.model_class || "-"}${sel.model_prob ? ` (${Math.round(sel.model_prob * 100)}%)` : ""}, now ${ReviewView.finalClass(sel)}${sel.reviewed_by ? `, reviewed by ${sel.reviewed_by}` : ""}`
      : "no cell selected";
    ReviewView.differential(d.differential, d.sign_offs);
    ReviewView.gallery(d.class_choices, state.cells, state.images, state.selected, { pick, drop: classify });
  }

  function showField(name) {
    state.field = name;
    const sel = cell(state.selected);
    if (sel && sel.field !== name) state.selected = null; // keys act on this field's cells only
    const f = state.data.fields.find((x) => x.name === name);
    const img = $("field-image");
    img.src = BMC.api + base() + "/fields/" + encodeURIComponent(name) + "/image";
    // as wide as the screen allows, the whole field in view (CSSOM: allowed by the CSP)
    $("stage").style.width = `min(100%, calc((100vh - 190px) * ${f.width / f.height}))`;
    render();
  }

  function stepField(by) {
    const names = state.data.fields.map((f) => f.name);
    const next = names[names.indexOf(state.field) + by];
    if (next !== undefined) showField(next);
  }

  function pick(id) {
    const c = cell(id);
    if (!c) return;
    state.selected = id;
    if (c.field !== state.field) showField(c.field); else render();
  }

  async function load(keepField) {
    const data = await BMC.call("GET", `/cases/${encodeURIComponent(caseId)}`);
    state.data = data;
    state.cells = data.fields.flatMap((f) => f.cells.map((c) => ({ ...c, field: f.name })));
    for (const f of data.fields) {
      if (state.images[f.name]) continue;
      const im = new Image();
      im.onload = () => render();
      im.src = BMC.api + `/cases/${encodeURIComponent(caseId)}/versions/${data.version}/fields/${encodeURIComponent(f.name)}/image`;
      state.images[f.name] = im;
    }
    showField(keepField && data.fields.some((f) => f.name === keepField) ? keepField : data.fields[0].name);
  }

  function applied(answer) {
    state.data.differential = answer.differential;
    state.data.status = answer.status;
    if (answer.cell) {
      const old = cell(answer.cell.id);
      const merged = { ...answer.cell, field: old ? old.field : state.field };
      if (old) Object.assign(old, merged); else state.cells.push(merged);
    }
    say("");
    render();
  }

  async function send(path, body, undoEntry) {
    if (!state.data.editable) { say("this case is signed: read-only (open a new version to change it)", true); return null; }
    try {
      const answer = await BMC.call("POST", base() + path, body);
      if (undoEntry) state.undo.push(undoEntry);
      applied(answer);
      return answer;
    } catch (e) {
      say(e.status === 409 && e.code === "conflict" ? e.message + " (press F5 to reload)" : e.message, true);
      return null;
    }
  }

  function before(c) { return { id: c.id, reviewed_class: c.reviewed_class, deleted: c.deleted }; }

  async function classify(id, name) {
    const c = cell(id);
    if (!c || ReviewView.finalClass(c) === name && c.reviewed_by) return;
    await send(`/cells/${id}/class`, { class: name, version: c.version }, before(c));
  }

  async function remove(id) {
    const c = cell(id);
    if (!c) return;
    const next = neighbour(1);
    const answer = await send(`/cells/${id}/delete`, { version: c.version }, before(c));
    if (answer) { state.selected = next === id ? null : next; render(); }
  }

  async function undo() {
    const entry = state.undo.pop();
    if (!entry) { say("nothing to undo"); return; }
    const c = cell(entry.id);
    const answer = await send(`/cells/${entry.id}/restore`, { reviewed_class: entry.reviewed_class, deleted: entry.deleted, version: c.version });
    if (!answer) state.undo.push(entry);
    else { state.selected = entry.id; render(); }
  }

  function neighbour(step) {
    const list = fieldCells();
    if (!list.length) return null;
    const i = list.findIndex((c) => c.id === state.selected);
    return list[(i + step + list.length) % list.length].id;
  }

  function typedClass(letter) {
    state.typed = (state.typed + letter).toLowerCase();
    const hits = state.data.class_choices.filter((n) => n.toLowerCase().startsWith(state.typed));
    if (!hits.length) { state.typed = letter.toLowerCase(); return null; }
    const exact = hits.find((n) => n.toLowerCase() === state.typed);
    if (hits.length === 1 || exact) { state.typed = ""; return exact || hits[0]; }
    return null;
  }

  document.addEventListener("keydown", (e) => {
    if (!state.data || e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === "[" || k === "]" || k === "PageUp" || k === "PageDown") {
      e.preventDefault();
      stepField(k === "[" || k === "PageUp" ? -1 : 1);
    } else if (["ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp"].includes(k)) {
      e.preventDefault();
      pick(neighbour(k === "ArrowRight" || k === "ArrowDown" ? 1 : -1));
    } else if (k === "Delete" || k === "Backspace") {
      e.preventDefault();
      if (state.selected !== null) remove(state.selected);
    } else if (k === "z" || k === "Z") {
      undo();
    } else if (k === "a" && e.shiftKey === false && !state.typed && !state.data.class_choices.some((n) => n.toLowerCase().startsWith("a"))) {
      toggleAdd();
    } else if (/^[0-9]$/.test(k) && state.selected !== null) {
      const i = k === "0" ? 9 : Number(k) - 1;
      if (i < state.data.class_choices.length) classify(state.selected, state.data.class_choices[i]);
    } else if (/^[a-zA-Z]$/.test(k) && state.selected !== null) {
      const name = typedClass(k);
      if (name) classify(state.selected, name);
    }
  });

  function toggleAdd() {
    state.adding = !state.adding;
    $("add-mode").setAttribute("aria-pressed", String(state.adding));
    $("stage").classList.toggle("adding", state.adding);
  }

  function svgPoint(e) {
    const svg = $("review-boxes");
    const r = svg.getBoundingClientRect();
    const f = state.data.fields.find((x) => x.name === state.field);
    return [Math.min(Math.max(0, (e.clientX - r.left) * f.width / r.width), f.width),
      Math.min(Math.max(0, (e.clientY - r.top) * f.height / r.height), f.height)];
  }

  let drag = null;
  $("review-boxes").addEventListener("mousedown", (e) => {
    if (!state.adding) return;
    drag = { start: svgPoint(e), rect: document.createElementNS("http://www.w3.org/2000/svg", "rect") };
    drag.rect.setAttribute("class", "rcell drawing");
    $("review-boxes").append(drag.rect);
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const [x, y] = svgPoint(e), [sx, sy] = drag.start;
    const attrs = { x: Math.min(x, sx), y: Math.min(y, sy), width: Math.abs(x - sx), height: Math.abs(y - sy) };
    for (const [k, v] of Object.entries(attrs)) drag.rect.setAttribute(k, v);
  });
  window.addEventListener("mouseup", async (e) => {
    if (!drag) return;
    const [x, y] = svgPoint(e), [sx, sy] = drag.start;
    drag = null;
    if (Math.abs(x - sx) < 3 || Math.abs(y - sy) < 3) { render(); return; }
    toggleAdd();
    const box = [Math.min(x, sx), Math.min(y, sy), Math.max(x, sx), Math.max(y, sy)].map((v) => Math.round(v * 10) / 10);
    const answer = await send("/cells", { field: state.field, box });
    if (answer) {
      // undoing an added cell deletes it
      state.undo.push({ id: answer.cell.id, reviewed_class: answer.cell.reviewed_class, deleted: true });
      state.selected = answer.cell.id;
      render();
    }
  });

  $("add-mode").addEventListener("click", toggleAdd);
  $("undo").addEventListener("click", undo);
  $("sign").addEventListener("click", async () => {
    if (!confirm(`Sign case ${caseId} v${state.data.version}? It becomes read-only.`)) return;
    try { state.data = await BMC.call("POST", base() + "/sign", {}); state.undo = []; await load(state.field); say("signed"); }
    catch (e) { say(e.message, true); }
  });
  $("reopen").addEventListener("click", async () => {
    try { await BMC.call("POST", base() + "/reopen", {}); state.undo = []; state.images = {}; await load(state.field); say("a new version is open for review; the signed one is kept"); }
    catch (e) { say(e.message, true); }
  });

  BMC.whoami($("user-name")).then(() => load()).catch((e) => say(e.message, true));
})();

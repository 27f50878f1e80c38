// What the review screen draws: the cells on the field, the palette, the differential table,
// the gallery of cell crops grouped by class, the field buttons or pager. No state of its own: review.js calls it.
"use strict";
const ReviewView = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function finalClass(cell) {
    return cell.reviewed_class !== null ? cell.reviewed_class : cell.model_class;
  }

  function boxes(field, cells, selectedId, onPick) {
    const svg = $("review-boxes");
    svg.setAttribute("viewBox", `0 0 ${field.width} ${field.height}`);
    const rects = cells.filter((c) => !c.deleted).map((c) => {
      const [x0, y0, x1, y1] = c.box;
      const rect = document.createElementNS(SVG, "rect");
      const attrs = { x: x0, y: y0, width: x1 - x0, height: y1 - y0, "data-id": c.id };
      for (const [k, v] of Object.entries(attrs)) rect.setAttribute(k, v);
      let cls = "rcell";
      if (c.reviewed_by) cls += " reviewed";
      if (c.added) cls += " added";
      if (c.id === selectedId) cls += " selected";
      rect.setAttribute("class", cls);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${finalClass(c)}${c.reviewed_by ? " (reviewed)" : ""}`;
      rect.append(title);
      rect.addEventListener("mousedown", (e) => { e.stopPropagation(); onPick(c.id); });
      return rect;
    });
    svg.replaceChildren(...rects);
  }

  const PAGER_ABOVE = 12; // more fields than this: a pager instead of one button per field

  function fieldText(f, cells, i, n) {
    const kept = cells.filter((c) => c.field === f.name && !c.deleted);
    const todo = kept.filter((c) => !c.reviewed_by).length;
    return `field ${i + 1} of ${n}: ${f.name} · ${kept.length} cells${todo ? ` · ${todo} to review ●` : ""}`;
  }

  // The fields above the image: a button each, or (many fields) previous / next and a select
  function fieldNav(fields, cells, current, onShow) {
    const nav = $("field-tabs");
    nav.classList.toggle("pager", fields.length > PAGER_ABOVE);
    if (fields.length <= PAGER_ABOVE) {
      nav.replaceChildren(...fields.map((f) => {
        const b = BMC.el("button", { class: "button quiet tab" + (f.name === current ? " current" : ""), type: "button", text: f.name });
        b.addEventListener("click", () => onShow(f.name));
        return b;
      }));
      return;
    }
    let select = $("field-select");
    if (!select || select.options.length !== fields.length) { // built once, then kept (an open drop-down stays open)
      select = BMC.el("select", { id: "field-select", "aria-label": "Field" });
      const step = (by) => { const o = select.options[select.selectedIndex + by]; if (o) onShow(o.value); };
      const prev = BMC.el("button", { id: "field-prev", class: "button quiet", type: "button", title: "previous field ([ or PageUp)", text: "‹ Previous" });
      const next = BMC.el("button", { id: "field-next", class: "button quiet", type: "button", title: "next field (] or PageDown)", text: "Next ›" });
      prev.addEventListener("click", () => step(-1));
      next.addEventListener("click", () => step(1));
      select.addEventListener("change", () => { onShow(select.value); select.blur(); });
      nav.replaceChildren(prev, select, next, BMC.el("span", { class: "hint", text: "● cells to review" }));
    }
    fields.forEach((f, i) => {
      const o = select.options[i] || select.appendChild(BMC.el("option"));
      o.value = f.name;
      o.textContent = fieldText(f, cells, i, fields.length);
    });
    select.value = current;
    $("field-prev").disabled = select.selectedIndex <= 0;
    $("field-next").disabled = select.selectedIndex >= fields.length - 1;
  }

  function palette(choices, current, editable, onChoose) {
    $("palette").replaceChildren(...choices.map((name, i) => {
      const key = i < 9 ? String(i + 1) : i === 9 ? "0" : "";
      const b = BMC.el("button", { class: "button quiet chip", "data-class": name, type: "button" },
        BMC.el("kbd", { text: key }), " " + name);
      if (name === current) b.classList.add("current");
      b.disabled = !editable;
      b.addEventListener("click", () => onChoose(name));
      return b;
    }));
  }

  function fmt(v) { return v === null || v === undefined || Number.isNaN(v) ? "-" : String(v); }

  function differential(diff, signOffs) {
    const model = Object.fromEntries(diff.model.classes.map((r) => [r.class, r.count]));
    $("diff-rows").replaceChildren(...diff.reviewed.classes.map((r) => BMC.el("tr", { "data-class": r.class },
      BMC.el("td", { text: r.class }), BMC.el("td", { text: String(model[r.class] || 0) }),
      BMC.el("td", { class: "reviewed-count", text: String(r.count) }),
      BMC.el("td", { text: r.percent === null || r.percent === undefined ? "-" : Number(r.percent).toFixed(1) }))));
    const me = (d) => (d.me && d.me.ratio !== null && d.me.ratio !== undefined ? Number(d.me.ratio).toFixed(2) : "-");
    $("diff-me").textContent = `counted: model ${diff.model.counted}, reviewer ${diff.reviewed.counted} · M:E model ${me(diff.model)}, reviewer ${me(diff.reviewed)}`;
    $("signed-by").textContent = signOffs.map((s) => `signed by ${s.user} at ${s.at.replace("T", " ").slice(0, 16)} UTC`).join("; ");
  }

  function crop(image, box) {
    const canvas = document.createElement("canvas");
    const [x0, y0, x1, y1] = box;
    const side = 56, w = Math.max(1, x1 - x0), h = Math.max(1, y1 - y0), s = side / Math.max(w, h);
    canvas.width = canvas.height = side;
    try {
      canvas.getContext("2d").drawImage(image, x0, y0, w, h, (side - w * s) / 2, (side - h * s) / 2, w * s, h * s);
      return canvas.toDataURL("image/png");
    } catch (e) { return ""; }
  }

  function gallery(choices, cells, images, selectedId, handlers) {
    const groups = choices.map((name) => {
      const members = cells.filter((c) => !c.deleted && finalClass(c) === name);
      const tiles = members.map((c) => {
        const src = images[c.field] && images[c.field].complete ? crop(images[c.field], c.box) : "";
        const tile = BMC.el("button", { class: "tile" + (c.reviewed_by ? " reviewed" : "") + (c.id === selectedId ? " selected" : ""),
          "data-id": c.id, draggable: "true", type: "button", title: `${c.field} #${c.id}` });
        if (src) tile.append(BMC.el("img", { src, alt: name }));
        tile.addEventListener("click", () => handlers.pick(c.id));
        tile.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", String(c.id)));
        return tile;
      });
      const group = BMC.el("div", { class: "group", "data-class": name },
        BMC.el("h3", { text: `${name} (${members.length})` }), BMC.el("div", { class: "tiles" }, ...tiles));
      group.addEventListener("dragover", (e) => e.preventDefault());
      group.addEventListener("drop", (e) => {
        e.preventDefault();
        handlers.drop(Number(e.dataTransfer.getData("text/plain")), name);
      });
      return group;
    });
    $("gallery").replaceChildren(...groups);
  }

  return { boxes, fieldNav, palette, differential, gallery, finalClass };
})();

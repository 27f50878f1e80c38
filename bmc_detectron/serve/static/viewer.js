/* The field viewer: the field's preview in an SVG, one rectangle per cell in its class colour,
 * a tooltip (class, probabilities, detection score) on hover, and the filter that hides cells
 * below the confidence slider or of classes switched off, without a new request.
 */
"use strict";

(function (global) {
  const SVG_NS = "http://www.w3.org/2000/svg";

  function svgElement(name, attributes) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
    return el;
  }

  /** Uncertain: class probability below the rule, and not an Other cell (stats.js). */
  function isUncertain(cell, uncertainBelow) {
    return cell.label !== global.BMCStats.OTHER && cell.prob < uncertainBelow;
  }

  function percent(p) {
    return `${(100 * p).toFixed(p >= 0.995 || p < 0.005 ? 0 : 1)} %`;
  }

  class FieldViewer {
    /** svg: the overlay <svg>; tooltip: a positioned <div>; stage: their container. */
    constructor(svg, tooltip, stage) {
      this.svg = svg;
      this.tooltip = tooltip;
      this.stage = stage;
      this.image = svg.querySelector("image");
      this.boxes = svg.querySelector("#boxes");
      this.labels = svg.querySelector("#labels");
      this.field = null;
      this.classes = {};
      this.uncertainBelow = 0.5;
      svg.addEventListener("mousemove", (event) => this.onHover(event));
      svg.addEventListener("mouseleave", () => this.hideTooltip());
    }

    /** Draw a field ({width, height, preview, cells}); classes: name -> {color, full_name}. */
    show(field, classes, uncertainBelow) {
      this.field = field;
      this.classes = classes;
      this.uncertainBelow = uncertainBelow;
      this.svg.setAttribute("viewBox", `0 0 ${field.width} ${field.height}`);
      this.image.setAttribute("width", field.width);
      this.image.setAttribute("height", field.height);
      this.image.setAttribute("href", field.preview || "");
      this.boxes.replaceChildren();
      this.labels.replaceChildren();
      const fontSize = Math.max(10, Math.round(Math.max(field.width, field.height) / 70));
      field.cells.forEach((cell, index) => {
        const [x0, y0, x1, y1] = cell.box;
        const color = (classes[cell.label] || {}).color || "#4a90c2";
        const rect = svgElement("rect", {
          x: x0,
          y: y0,
          width: Math.max(0, x1 - x0),
          height: Math.max(0, y1 - y0),
          stroke: color,
          class: isUncertain(cell, uncertainBelow) ? "cell uncertain" : "cell",
          "data-index": index,
          "data-label": cell.label,
          "data-score": cell.det_score,
        });
        this.boxes.appendChild(rect);
        const text = svgElement("text", { x: x0 + 2, y: Math.max(fontSize, y0 - 3), fill: color });
        text.setAttribute("font-size", fontSize);
        text.setAttribute("data-index", index);
        text.textContent = `${cell.label} ${Math.round(100 * cell.prob)}%`;
        this.labels.appendChild(text);
      });
    }

    clear() {
      this.field = null;
      this.svg.setAttribute("viewBox", "0 0 4 3");
      this.image.setAttribute("href", "");
      this.boxes.replaceChildren();
      this.labels.replaceChildren();
      this.hideTooltip();
    }

    /** Hide the cells scoring below threshold or of an excluded class; returns how many show. */
    filter(threshold, excluded) {
      if (!this.field) return 0;
      let shown = 0;
      const rects = this.boxes.children;
      const texts = this.labels.children;
      this.field.cells.forEach((cell, i) => {
        const hide = cell.det_score < threshold || excluded.has(cell.label);
        rects[i].classList.toggle("is-hidden", hide);
        texts[i].classList.toggle("is-hidden", hide);
        if (!hide) shown += 1;
      });
      return shown;
    }

    showLabels(on) {
      this.labels.classList.toggle("is-hidden", !on);
    }

    onHover(event) {
      const target = event.target;
      if (!(target instanceof SVGRectElement) || !target.classList.contains("cell")) {
        this.hideTooltip();
        return;
      }
      const cell = this.field.cells[Number(target.dataset.index)];
      this.fillTooltip(cell);
      const bounds = this.stage.getBoundingClientRect();
      const x = event.clientX - bounds.left + 14;
      const y = event.clientY - bounds.top + 14;
      const tip = this.tooltip;
      tip.hidden = false;
      const maxX = bounds.width - tip.offsetWidth - 8;
      const maxY = bounds.height - tip.offsetHeight - 8;
      tip.style.left = `${Math.max(8, Math.min(x, maxX))}px`;
      tip.style.top = `${Math.max(8, Math.min(y, maxY))}px`;
    }

    fillTooltip(cell) {
      const info = this.classes[cell.label] || { full_name: cell.label, color: "#888" };
      const tip = this.tooltip;
      tip.replaceChildren();
      const head = document.createElement("div");
      head.className = "tip-head";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = info.color;
      const title = document.createElement("strong");
      title.textContent = `${info.full_name} (${cell.label})`;
      head.append(swatch, title);
      tip.appendChild(head);
      const lines = [
        [
          "class probability",
          percent(cell.prob) +
            (isUncertain(cell, this.uncertainBelow) ? " — uncertain" : "") +
            (cell.label === global.BMCStats.OTHER ? " of the closest type; no known type" : ""),
        ],
        ["detection score", cell.det_score.toFixed(3)],
      ];
      if (cell.probs) {
        const names = Object.keys(this.classes);
        const ranked = cell.probs
          .map((p, i) => [names[i], p])
          .sort((a, b) => b[1] - a[1])
          .slice(1, 3)
          .filter(([, p]) => p >= 0.01);
        for (const [name, p] of ranked) lines.push([`next: ${name}`, percent(p)]);
      }
      const list = document.createElement("dl");
      for (const [key, value] of lines) {
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.textContent = value;
        list.append(dt, dd);
      }
      tip.appendChild(list);
    }

    hideTooltip() {
      this.tooltip.hidden = true;
    }
  }

  global.FieldViewer = FieldViewer;
})(window);

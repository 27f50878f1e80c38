/* The input's scale on the page: the "Pixel size (µm per pixel)" entry (checked here before any
 * request), and the words for the scale a field was analysed at (the analyze answer's `scale`)
 * and for the model's (GET /api/v1/model's `scale`).
 */
"use strict";

(function (global) {
  const NUMBER = /^(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?$/i;

  /** A number in few digits: 0.25, 2.00 -> "2", 0.123456 -> "0.1235". */
  function short(value, digits = 4) {
    return String(Number(Number(value).toPrecision(digits)));
  }

  /**
   * The pixel size typed in: {value: null} when empty, {value: number} for a positive number
   * (a decimal comma is read as a point), {error: text} otherwise.
   */
  function parse(raw) {
    const text = String(raw || "")
      .trim()
      .replace(",", ".");
    if (!text) return { value: null };
    const value = NUMBER.test(text) ? Number(text) : NaN;
    if (!(Number.isFinite(value) && value > 0)) {
      return {
        error:
          `pixel size "${String(raw).trim().slice(0, 40)}" is not a positive number: give ` +
          "the images' micrometres per pixel (e.g. 0.25) or leave it empty",
      };
    }
    return { value };
  }

  /** The model's pixel size (µm) when recorded, else null. */
  function modelMicrons(model) {
    const scale = model && model.scale;
    return scale && Number.isFinite(scale.microns_per_pixel) && scale.microns_per_pixel > 0
      ? scale.microns_per_pixel
      : null;
  }

  /** Whether the entry can be used, and its hint, for a model description. */
  function entryState(model) {
    const mpp = modelMicrons(model);
    if (mpp === null) {
      return {
        enabled: false,
        hint: "Not available: the model has no recorded scale.",
      };
    }
    return {
      enabled: true,
      hint: `Optional. Fields are resized to the model's ${short(mpp)} µm per pixel.`,
    };
  }

  /** The model panel's rows about the model's scale. */
  function modelRows(model) {
    const scale = model && model.scale;
    if (!scale) return [["Scale", "not recorded"]];
    const rows = [];
    const mpp = modelMicrons(model);
    rows.push(["Pixel size", mpp === null ? "not recorded" : `${short(mpp)} µm per pixel`]);
    if (scale.rbc_diameter_px) {
      const microns = mpp === null ? "" : ` (${short(scale.rbc_diameter_px * mpp, 3)} µm)`;
      rows.push(["Red-cell diameter", `${short(scale.rbc_diameter_px, 3)} px${microns}`]);
    }
    if (scale.source) rows.push(["Scale from", scale.source]);
    return rows;
  }

  /** How each source of the scale is said (as the count's report says it). */
  const SOURCE_WORDS = {
    given: "given",
    file: "read from the image files",
    probe: "found by the detector probe",
    ruler: "estimated from the red cells",
  };

  /** A key telling apart the scales fields were analysed at. */
  function key(scale) {
    if (!scale || !scale.source || scale.source === "none") {
      return scale && scale.asked ? "unsettled" : "own";
    }
    return `${scale.source}:${scale.microns_per_pixel}:${scale.to_training_scale}`;
  }

  /** " (confidence 80 %)" for a found scale, "" for a given one or none. */
  function confidence(scale) {
    if (!scale || scale.source === "given" || !Number.isFinite(scale.confidence)) return "";
    return ` (confidence ${Math.round(100 * scale.confidence)} %)`;
  }

  /** What a field's scale was, in words ("0.4 µm/px given, resized ×2.00 to …"). */
  function describe(scale) {
    if (key(scale) === "own") return "images analysed at their own size";
    if (key(scale) === "unsettled") {
      const why = scale.decision ? ` (${scale.decision})` : "";
      return `scale not settled${why}: images analysed at the model's scale (factor 1)`;
    }
    const how = SOURCE_WORDS[scale.source] || scale.source;
    const target = modelMicrons({ scale: scale.model });
    const to = target === null ? "" : ` to the model's ${short(target)} µm/px`;
    const mpp = Number.isFinite(scale.microns_per_pixel)
      ? `${short(scale.microns_per_pixel)} µm/px ${how}`
      : how;
    const factor = Number(scale.to_training_scale);
    const resized = Number.isFinite(factor) ? `resized ×${factor.toFixed(2)}` : "resized";
    return `${mpp}${confidence(scale)}; fields ${resized}${to}`;
  }

  /** A field's scale in a few words for its details line ("" at its own size). */
  function brief(scale) {
    if (key(scale) === "own") return "";
    if (key(scale) === "unsettled") return "scale not settled";
    const factor = Number(scale.to_training_scale);
    const mpp = Number.isFinite(scale.microns_per_pixel)
      ? `${short(scale.microns_per_pixel)} µm/px`
      : "scale estimated";
    return Number.isFinite(factor) ? `${mpp}, resized ×${factor.toFixed(2)}` : mpp;
  }

  /** The case's scale line from its analysed fields ({scale}); "" without fields. */
  function caseLine(fields) {
    if (!fields.length) return "";
    const groups = new Map();
    for (const field of fields) {
      const k = key(field.scale);
      if (!groups.has(k)) groups.set(k, { scale: field.scale, n: 0 });
      groups.get(k).n += 1;
    }
    if (groups.size === 1) return `Scale: ${describe(fields[0].scale)}`;
    const parts = [...groups.values()].map((g) => {
      const what = brief(g.scale) || `${g.n === 1 ? "its" : "their"} own size`;
      return `${g.n} field${g.n === 1 ? "" : "s"} at ${what}`;
    });
    return `Scale differs between fields: ${parts.join(" · ")}`;
  }

  global.BMCScale = {
    parse,
    entryState,
    modelMicrons,
    modelRows,
    describe,
    brief,
    caseLine,
    key,
    short,
    SOURCE_WORDS,
  };
})(window);

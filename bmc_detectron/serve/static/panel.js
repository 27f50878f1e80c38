/* The model panel: what GET /api/v1/model says about the models, their scale, the thresholds
 * and limits. */
"use strict";

(function (global) {
  const megabytes = (bytes) => `${Math.round(bytes / 1048576)} MB`;

  function modelRows(model) {
    const short = (sha) => (sha ? `${String(sha).slice(0, 12)}…` : "—");
    const source = (m) => m.source.config_file || m.source.config || "—";
    const weights = (m) => m.source.weights || "—";
    const rows = [["Runtime", model.backend === "onnxruntime" ? "ONNX Runtime" : "PyTorch"]];
    for (const [key, path] of Object.entries(model.files || {})) {
      if (path) rows.push([key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()), path]);
    }
    const det = model.detector;
    rows.push(["Detector", `${det.class_names.length} class(es), input ${det.min_size} px short side`]);
    rows.push(["Detector config", source(det)], ["Detector weights", weights(det)]);
    if (det.identity.onnx_sha256) rows.push(["Detector ONNX", short(det.identity.onnx_sha256)]);
    if (model.classifier) {
      const cls = model.classifier;
      rows.push(["Classifier", `${cls.class_names.length} classes, ${cls.crop_size} px crops`]);
      rows.push(["Classifier config", source(cls)], ["Classifier weights", weights(cls)]);
    } else {
      rows.push(["Classifier", "none (the detector's classes are counted)"]);
    }
    const s = model.settings;
    if (global.BMCScale) rows.push(...global.BMCScale.modelRows(model));
    rows.push(["Scores kept from", s.min_score.toFixed(2)]);
    rows.push(["Uncertain below", `class probability ${s.uncertain_below}`]);
    rows.push(["Limits", `${s.max_files} files per request, ${megabytes(s.max_file_bytes)} and ` +
      `${Math.round(s.max_pixels / 1e6)} MP per image`]);
    rows.push(["Version", `bmc-detectron ${model.package_version}`]);
    rows.push(["Fingerprint", short(model.fingerprint)]);
    return rows;
  }

  /** Fill the badge (runtime) and the <dl> of the model panel from GET /api/v1/model. */
  function render(model, badge, list) {
    badge.textContent = model.backend === "onnxruntime" ? "ONNX Runtime" : "PyTorch";
    list.replaceChildren();
    for (const [key, value] of modelRows(model)) {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.title = value;
      list.append(dt, dd);
    }
  }

  global.BMCModelPanel = { render, modelRows };
})(window);

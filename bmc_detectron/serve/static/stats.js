/* The differential count in the browser, the same arithmetic as bmc_detectron/structures/differential.py
 * (tests/test_serve_browser.py compares the page's table with it): counts of the cells counted
 * with confidence, percentages, 95 % Wilson score intervals, the M:E ratio and the ICSH warning.
 */
"use strict";

(function (global) {
  // Two-sided 95 % normal quantile (stats.Z95).
  const Z95 = 1.959963984540054;
  // ICSH 2008: a marrow differential counts at least this many nucleated cells.
  const MIN_DIFFERENTIAL_CELLS = 500;
  // The label of a cell of no known type (data/classes.py OTHER).
  const OTHER = "Other";

  /** Wilson score interval [lo, hi] of k / n ([NaN, NaN] when n is 0). */
  function wilson(k, n, z = Z95) {
    if (n <= 0) return [NaN, NaN];
    const p = k / n;
    const z2 = z * z;
    const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
    const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
    const lo = k === 0 ? 0 : Math.max(0, centre - half);
    const hi = k === n ? 1 : Math.min(1, centre + half);
    return [lo, hi];
  }

  /** "myeloid", "erythroid" or "" for a class under a lineage map {myeloid: [], erythroid: []}. */
  function lineageOf(name, lineage) {
    if (lineage.myeloid.includes(name)) return "myeloid";
    if (lineage.erythroid.includes(name)) return "erythroid";
    return "";
  }

  /** Myeloid and erythroid totals and their ratio (null without an erythroid cell). */
  function meRatio(counts, lineage) {
    const sum = (names) => names.reduce((total, c) => total + (counts[c] || 0), 0);
    const myeloid = sum(lineage.myeloid);
    const erythroid = sum(lineage.erythroid);
    return { myeloid, erythroid, ratio: erythroid ? myeloid / erythroid : null };
  }

  /**
   * The differential of cells ({label, prob}) over classNames, as stats.differential:
   * a cell whose prob is below uncertainBelow is uncertain (counted apart, in no percentage);
   * a cell labelled OTHER (no known type, the classifier's open-set outcome) is counted under
   * `other` only: neither uncertain nor in any percentage.
   */
  function differential(cells, classNames, lineage, uncertainBelow) {
    const counts = {};
    const unsure = {};
    for (const name of classNames) {
      counts[name] = 0;
      unsure[name] = 0;
    }
    let other = 0;
    for (const cell of cells) {
      if (cell.label === OTHER) {
        other += 1;
        continue;
      }
      const target = cell.prob < uncertainBelow ? unsure : counts;
      target[cell.label] = (target[cell.label] || 0) + 1;
    }
    const n = Object.values(counts).reduce((a, b) => a + b, 0);
    const classes = Object.keys(counts).map((name) => {
      const k = counts[name];
      const [lo, hi] = wilson(k, n);
      return {
        class: name,
        count: k,
        percent: n ? (100 * k) / n : NaN,
        ci95_percent: [100 * lo, 100 * hi],
        lineage: lineageOf(name, lineage),
        uncertain: unsure[name] || 0,
      };
    });
    const warnings = [];
    if (n < MIN_DIFFERENTIAL_CELLS) {
      warnings.push(
        `only ${n} nucleated cells counted; ICSH (2008) asks for at least ` +
          `${MIN_DIFFERENTIAL_CELLS} in a marrow differential`
      );
    }
    const uncertainTotal = Object.values(unsure).reduce((a, b) => a + b, 0);
    return {
      counted: n,
      uncertain: { total: uncertainTotal, per_class: unsure },
      other,
      classes,
      me: meRatio(counts, lineage),
      warnings,
    };
  }

  global.BMCStats = { Z95, MIN_DIFFERENTIAL_CELLS, OTHER, wilson, lineageOf, meRatio, differential };
})(window);

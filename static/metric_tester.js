// The new-job page's metric presets: a preset fills rows of the metric table (one per name) and
// tells the tester to run again. Rows are added the way anyjob.js adds them (the "Add metric"
// button), so the table's limit and numbering stay its own. Without this file the rows are
// typed by hand and the tester still runs (htmx).
(function () {
  "use strict";

  var PREFIX = "md";

  function presets() {
    var data = document.getElementById("metric-presets-data");
    return data ? JSON.parse(data.textContent) : [];
  }

  function escapeRegex(text) {
    return text.replace(/[.*+?^${}()|[\]\\\-]/g, "\\$&");
  }

  function visibleRows() {
    return Array.prototype.slice.call(
      document.querySelectorAll('[data-rows="' + PREFIX + '"] tbody tr.row:not([hidden])')
    );
  }

  function emptyRow() {
    var found = null;
    visibleRows().some(function (row) {
      var name = row.querySelector("[data-metric-name]");
      var regex = row.querySelector("[data-metric-regex]");
      if (name && regex && !name.value.trim() && !regex.value) {
        found = row;
        return true;
      }
      return false;
    });
    if (found) return found;
    var add = document.querySelector('[data-add-row="' + PREFIX + '"]');
    if (!add || add.disabled) return null;
    add.click();
    var rows = visibleRows();
    return rows[rows.length - 1];
  }

  function namesTyped() {
    var box = document.getElementById("metric-preset-names");
    if (!box) return [];
    return box.value.split(",").map(function (n) { return n.trim(); }).filter(Boolean);
  }

  function existing() {
    var names = {};
    visibleRows().forEach(function (row) {
      var name = row.querySelector("[data-metric-name]");
      if (name && name.value.trim()) names[name.value.trim().toLowerCase()] = row;
    });
    return names;
  }

  function fill(preset) {
    var typed = namesTyped();
    var rows = typed.length
      ? typed.map(function (n) { return { name: n, regex: preset.template.split("{name}").join(escapeRegex(n)) }; })
      : preset.rows;
    var have = existing();
    rows.forEach(function (r) {
      // A name already in the table gets the preset's expression (no second row of that name).
      var row = have[r.name.toLowerCase()] || emptyRow();
      if (!row) return;
      row.querySelector("[data-metric-name]").value = r.name;
      row.querySelector("[data-metric-regex]").value = r.regex;
      have[r.name.toLowerCase()] = row;
    });
    var lines = document.getElementById("id_mt-lines");
    var job = document.getElementById("id_mt-job");
    if (lines && !lines.value.trim() && !(job && job.value.trim())) lines.value = preset.example;
    document.body.dispatchEvent(new CustomEvent("metrics-changed", { bubbles: true }));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-metric-preset]");
    if (button) {
      event.preventDefault();
      var key = button.dataset.metricPreset;
      presets().forEach(function (p) { if (p.key === key) fill(p); });
      return;
    }
    // A removed metric row: test again once anyjob.js has hidden it.
    if (event.target.closest('[data-rows="' + PREFIX + '"] [data-remove-row]')) {
      setTimeout(function () {
        document.body.dispatchEvent(new CustomEvent("metrics-changed", { bubbles: true }));
      }, 0);
    }
  });
})();

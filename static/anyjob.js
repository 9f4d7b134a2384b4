// anyjob's few lines of JavaScript: adding and removing form rows, and log follow mode.
// Everything else is htmx attributes in the templates; every page works without this file.
(function () {
  "use strict";

  function rowsOf(prefix) {
    return document.querySelectorAll('[data-rows="' + prefix + '"] tbody tr.row:not([hidden])').length;
  }

  function refreshAdd(prefix) {
    var button = document.querySelector('[data-add-row="' + prefix + '"]');
    if (!button) return;
    var limit = parseInt(button.dataset.limit, 10);
    button.disabled = rowsOf(prefix) >= limit;
  }

  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-row]");
    if (add) {
      event.preventDefault();
      var prefix = add.dataset.addRow;
      var total = document.getElementById("id_" + prefix + "-TOTAL_FORMS");
      var template = document.getElementById(prefix + "-empty-row");
      var index = parseInt(total.value, 10);
      var html = template.innerHTML.replace(/__prefix__/g, String(index));
      document.querySelector('[data-rows="' + prefix + '"] tbody').insertAdjacentHTML("beforeend", html);
      total.value = String(index + 1);
      refreshAdd(prefix);
      var first = document.querySelector("#id_" + prefix + "-" + index + "-" + add.dataset.focus);
      if (first) first.focus();
      return;
    }
    var remove = event.target.closest("[data-remove-row]");
    if (remove) {
      event.preventDefault();
      var row = remove.closest("tr");
      var box = row.querySelector('input[name$="-DELETE"]');
      if (box) box.checked = true;
      row.hidden = true;
      refreshAdd(remove.closest("[data-rows]").dataset.rows);
      // The preview listens for input events on the form.
      row.closest("form").dispatchEvent(new Event("input", { bubbles: true }));
    }
  });

  // A secret environment variable's value is typed into a password field (the server never
  // fills one in: a clone or a form sent back asks for it again).
  document.addEventListener("change", function (event) {
    var box = event.target.closest("[data-env-secret]");
    if (!box) return;
    var value = box.closest("tr").querySelector("[data-env-value]");
    if (value) value.type = box.checked ? "password" : "text";
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-add-row]").forEach(function (b) { refreshAdd(b.dataset.addRow); });
    // With JavaScript the remove buttons replace the "remove" checkboxes.
    document.querySelectorAll(".js-remove").forEach(function (el) { el.hidden = false; });
    document.querySelectorAll(".nojs-remove").forEach(function (el) { el.hidden = true; });
  });

  // Follow mode: keep the log scrolled to its end while "Follow" is ticked.
  document.addEventListener("htmx:afterSettle", function () {
    var follow = document.getElementById("log-follow");
    var box = document.getElementById("log-lines");
    if (follow && box && follow.checked) box.scrollTop = box.scrollHeight;
  });
})();

// The invocation body's JSON helper: pretty-print it, or say where it is not JSON.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-format-json]");
  if (!button) return;
  event.preventDefault();
  var area = document.getElementById(button.dataset.formatJson);
  var out = document.getElementById(button.dataset.formatJson + "-json-error");
  try {
    area.value = JSON.stringify(JSON.parse(area.value), null, 2);
    out.textContent = "";
  } catch (e) {
    out.textContent = "Not valid JSON: " + e.message;
  }
});

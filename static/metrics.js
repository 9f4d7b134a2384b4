// anyjob's metric charts, drawn with uPlot (static/vendor/uplot):
//  - the job page (#metric-charts): a chart per metric from metrics.json, followed with
//    ?since=<last step> every few seconds while the job runs, and left alone once it is final;
//  - the compare page (#compare-charts): one chart per metric with a line per job, from the
//    compare page's metrics.json; and #parallel, the hyperparameters' parallel coordinates.
// Both share the controls: x axis (step, relative time, wall time), log-scale y, and smoothing
// (an exponential moving average drawn over the raw curve, kept faint beneath). The controls'
// state is kept in the page's query string (x=, log=, smooth=), so a URL shows what its sender saw.
// No inline script or attribute: everything is read from data-* attributes and JSON blocks.
(function () {
  "use strict";

  var FINAL = ["Completed", "Failed", "Stopped"];
  var POLL_MS = 3000;
  // A followed chart holding more points than this is read again whole (downsampled) instead.
  var MAX_LIVE_POINTS = 6000;
  var HEIGHT = 240;
  var DEFAULT_SMOOTH = 0.6;
  var PALETTE = [
    "#2458c6", "#d1495b", "#2a9d8f", "#e9a03b", "#7b4fc9", "#3d8b37", "#c2571a", "#1b998b",
    "#b5179e", "#5c6f84", "#ef476f", "#118ab2", "#8d6a00", "#6a4c93", "#06a77d", "#d62828",
    "#4361ee", "#9c6644", "#f77f00", "#2b2d42"
  ];

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function faint(hex) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + ",0.25)";
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-3)) return v.toExponential(3);
    return String(Math.round(v * 1e6) / 1e6);
  }

  // Exponential moving average, debiased (the first values are not pulled towards 0), as
  // TensorBoard smooths; a missing value stays missing and does not move the average.
  function ema(values, weight) {
    if (!(weight > 0)) return values.slice();
    var out = new Array(values.length), acc = 0, n = 0;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v === null || !isFinite(v)) { out[i] = null; continue; }
      n += 1;
      acc = acc * weight + (1 - weight) * v;
      out[i] = acc / (1 - Math.pow(weight, n));
    }
    return out;
  }

  // --- the controls, kept in the query string ---------------------------------------------

  function readState() {
    var q = new URLSearchParams(window.location.search);
    var x = q.get("x");
    var smooth = parseFloat(q.get("smooth"));
    return {
      x: x === "rel" || x === "wall" ? x : "step",
      log: q.get("log") === "1",
      smooth: isFinite(smooth) && smooth >= 0 && smooth <= 0.99 ? smooth : DEFAULT_SMOOTH
    };
  }

  // Only what differs from the defaults goes in the URL (a page left as it loaded keeps its URL).
  function writeState(state, url) {
    if (url) {
      var q = new URLSearchParams(window.location.search);
      if (state.x !== "step") q.set("x", state.x); else q.delete("x");
      if (state.log) q.set("log", "1"); else q.delete("log");
      if (state.smooth !== DEFAULT_SMOOTH) q.set("smooth", String(state.smooth)); else q.delete("smooth");
      var query = q.toString();
      window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : "") + window.location.hash);
    }
    // Links and forms that carry the state along (the compare page's metric picker).
    document.querySelectorAll("[data-keeps-chart-state]").forEach(function (form) {
      ["x", "log", "smooth"].forEach(function (key) {
        var input = form.querySelector('input[name="' + key + '"]');
        if (input) input.value = key === "log" ? (state.log ? "1" : "") : String(state[key]);
      });
    });
  }

  function bindControls(root, state, redraw) {
    var x = root.querySelector("[data-chart-x]");
    var log = root.querySelector("[data-chart-log]");
    var smooth = root.querySelector("[data-chart-smooth]");
    var shown = root.querySelector("[data-chart-smooth-value]");
    if (x) x.value = state.x;
    if (log) log.checked = state.log;
    if (smooth) smooth.value = String(state.smooth);
    if (shown) shown.textContent = state.smooth.toFixed(2);
    function changed(rebuild) {
      if (x) state.x = x.value;
      if (log) state.log = log.checked;
      if (smooth) state.smooth = parseFloat(smooth.value);
      if (shown) shown.textContent = state.smooth.toFixed(2);
      writeState(state, true);
      redraw(rebuild);
    }
    if (x) x.addEventListener("change", function () { changed(true); });
    if (log) log.addEventListener("change", function () { changed(true); });
    if (smooth) smooth.addEventListener("input", function () { changed(false); });
    writeState(state, false); // the forms that carry the state along
  }

  // --- one chart: a uPlot with raw (faint) and smoothed lines per source -----------------------

  // ``sources``: [{label, color, steps[], ms[], values[], t0}] (one per job on the compare page).
  function xValues(source, mode) {
    if (mode === "step") return source.steps;
    if (mode === "wall") return source.ms.map(function (t) { return t / 1000; });
    return source.ms.map(function (t) { return (t - source.t0) / 1000; });
  }

  function xLabel(mode) {
    return mode === "step" ? "step" : mode === "rel" ? "seconds since the first point" : "time";
  }

  function tableFor(sources, state) {
    // One [x, raw, smoothed] table per source, joined on x (uPlot.join) when there are several.
    var tables = sources.map(function (s) {
      var ys = s.values.map(function (v) { return state.log && !(v > 0) ? null : v; });
      return [xValues(s, state.x), ys, ema(ys, state.smooth)];
    });
    if (tables.length === 1) return tables[0];
    return uPlot.join(tables);
  }

  function seriesFor(sources, state) {
    var series = [{ label: xLabel(state.x) }];
    if (state.x === "wall") series[0].value = "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}";
    var smoothing = state.smooth > 0;
    sources.forEach(function (s) {
      series.push({
        label: smoothing ? s.label + " (raw)" : s.label,
        stroke: smoothing ? faint(s.color) : s.color,
        width: 1,
        spanGaps: true,
        show: true,
        value: function (u, v) { return fmt(v); }
      });
      series.push({
        label: s.label,
        stroke: s.color,
        width: 2,
        spanGaps: true,
        show: smoothing,
        value: function (u, v) { return fmt(v); }
      });
    });
    return series;
  }

  function Chart(box, sources, state) {
    this.box = box;
    this.sources = sources;
    this.state = state;
    this.plot = null;
  }

  Chart.prototype.draw = function (rebuild) {
    var log = this.state.log;
    var empty = !this.sources.some(function (s) { return s.values.length; });
    var nothing = empty || (log && !this.sources.some(function (s) { return s.values.some(function (v) { return v > 0; }); }));
    var placeholder = this.box.querySelector(".chart-empty");
    if (nothing) {
      if (this.plot) { this.plot.destroy(); this.plot = null; }
      if (!placeholder) {
        placeholder = document.createElement("p");
        placeholder.className = "chart-empty";
        this.box.appendChild(placeholder);
      }
      placeholder.textContent = empty ? "No points yet." : "No value above 0: a log scale cannot draw these.";
      return;
    }
    if (placeholder) placeholder.remove();
    var data = tableFor(this.sources, this.state);
    if (this.plot && !rebuild) {
      var smoothing = this.state.smooth > 0;
      var plot = this.plot;
      this.sources.forEach(function (s, i) {
        plot.setSeries(1 + 2 * i, { show: true });
        plot.setSeries(2 + 2 * i, { show: smoothing });
        plot.series[1 + 2 * i].stroke = function () { return smoothing ? faint(s.color) : s.color; };
      });
      plot.setData(data);
      return;
    }
    if (this.plot) this.plot.destroy();
    var width = Math.max(this.box.clientWidth, 300);
    this.plot = new uPlot(
      {
        width: width,
        height: HEIGHT,
        scales: { x: { time: this.state.x === "wall" }, y: { distr: this.state.log ? 3 : 1 } },
        axes: [
          { label: xLabel(this.state.x), labelSize: 20 },
          { size: 64, values: function (u, vals) { return vals.map(fmt); } }
        ],
        series: seriesFor(this.sources, this.state),
        legend: { show: true }
      },
      data,
      this.box
    );
  };

  Chart.prototype.resize = function () {
    if (this.plot) this.plot.setSize({ width: Math.max(this.box.clientWidth, 300), height: HEIGHT });
  };

  function sourceFrom(points, label, colour) {
    var s = { label: label, color: colour, steps: [], ms: [], values: [], t0: null };
    addPoints(s, points);
    return s;
  }

  function addPoints(source, points) {
    var lastStep = source.steps.length ? source.steps[source.steps.length - 1] : -Infinity;
    for (var i = 0; i < points.length; i++) {
      var p = points[i];
      if (p[0] <= lastStep) continue; // already drawn (an overlapping ?since= answer)
      source.steps.push(p[0]);
      source.ms.push(p[1]);
      source.values.push(p[2] === null ? null : Number(p[2]));
      lastStep = p[0];
    }
  }

  function onResize(charts) {
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () { charts().forEach(function (c) { c.resize(); }); }, 150);
    });
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (r) {
        if (!r.ok) throw new Error(url + ": HTTP " + r.status);
        return r.json();
      }
    );
  }

  // --- the job page ------------------------------------------------------------------------

  function jobPage(root) {
    var url = root.dataset.metricsUrl;
    var state = readState();
    var charts = {}; // metric name -> {chart, source, figure}
    var order = [];
    var maxStep = 0;
    var failures = 0;

    function figureFor(name) {
      var figures = root.querySelectorAll("figure[data-metric]");
      for (var i = 0; i < figures.length; i++) if (figures[i].dataset.metric === name) return figures[i];
      var template = document.getElementById("metric-chart-template");
      var figure = template.content.firstElementChild.cloneNode(true);
      figure.dataset.metric = name;
      figure.querySelector("[data-metric-name]").textContent = name; // text, never HTML
      root.querySelector("#metric-chart-list").appendChild(figure);
      var none = root.querySelector("#metric-none");
      if (none) none.remove();
      return figure;
    }

    function t0() {
      var first = Infinity;
      order.forEach(function (n) { if (charts[n].source.ms.length) first = Math.min(first, charts[n].source.ms[0]); });
      return first === Infinity ? 0 : first;
    }

    function stats(figure, m) {
      ["last", "min", "max", "count"].forEach(function (key) {
        var el = figure.querySelector('[data-stat="' + key + '"]');
        if (el && m[key] !== undefined && m[key] !== null) el.textContent = key === "count" ? String(m[key]) : fmt(m[key]);
      });
      var dropped = figure.querySelector("[data-stat-dropped]");
      if (dropped && m.dropped) {
        dropped.hidden = false;
        dropped.textContent = m.dropped + " later points past the bound were counted, not kept.";
      }
    }

    function apply(answer, whole) {
      var metrics = (answer && answer.metrics) || {};
      if (answer && answer.final) root.dataset.final = "1"; // one more read, then no more
      Object.keys(metrics).forEach(function (name) {
        var m = metrics[name];
        if (!charts[name]) {
          var figure = figureFor(name);
          var source = sourceFrom([], name, color(order.length));
          charts[name] = { figure: figure, source: source, chart: new Chart(figure.querySelector("[data-chart]"), [source], state) };
          order.push(name);
        }
        var entry = charts[name];
        if (whole) {
          entry.source.steps = [];
          entry.source.ms = [];
          entry.source.values = [];
        }
        addPoints(entry.source, m.points || []);
        stats(entry.figure, m);
        var steps = entry.source.steps;
        if (steps.length) maxStep = Math.max(maxStep, steps[steps.length - 1]);
      });
      var start = t0();
      order.forEach(function (n) {
        charts[n].source.t0 = start;
        charts[n].chart.draw(whole);
      });
      root.dataset.points = String(order.reduce(function (sum, n) { return sum + charts[n].source.steps.length; }, 0));
    }

    function final() {
      if (root.dataset.final === "1") return true;
      var badge = document.getElementById("status");
      return !!badge && FINAL.indexOf(badge.textContent.trim()) >= 0;
    }

    function tooMany() {
      return order.some(function (n) { return charts[n].source.steps.length > MAX_LIVE_POINTS; });
    }

    function poll() {
      // Once the job is final, one last read brings what the poller stored at the end; then stop.
      var ending = final();
      var whole = !maxStep || tooMany();
      getJSON(whole ? url : url + "?since=" + maxStep)
        .then(function (answer) {
          failures = 0;
          apply(answer, whole);
          if (!ending) setTimeout(poll, POLL_MS);
          else root.dataset.following = "0";
        })
        .catch(function () {
          failures += 1; // a server restart or a lost connection: try again, more slowly
          if (!ending || failures < 3) setTimeout(poll, POLL_MS * Math.min(failures + 1, 10));
        });
    }

    bindControls(root, state, function (rebuild) {
      var start = t0();
      order.forEach(function (n) { charts[n].source.t0 = start; charts[n].chart.draw(rebuild); });
    });
    onResize(function () { return order.map(function (n) { return charts[n].chart; }); });
    root.dataset.following = final() ? "0" : "1";
    getJSON(url)
      .then(function (answer) {
        apply(answer, true);
        if (!final()) setTimeout(poll, POLL_MS);
      })
      .catch(function () { setTimeout(poll, POLL_MS); });
  }

  // --- the compare page: overlays ---------------------------------------------------------------

  function comparePage(root) {
    var state = readState();
    var charts = [];
    getJSON(root.dataset.metricsUrl).then(function (answer) {
      var jobs = answer.jobs || [];
      var names = [];
      jobs.forEach(function (job) {
        Object.keys(job.metrics || {}).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); });
      });
      names.sort();
      var list = root.querySelector("#compare-chart-list");
      var template = document.getElementById("metric-chart-template");
      if (!names.length) {
        var none = document.createElement("p");
        none.className = "help";
        none.textContent = "None of these jobs has metric points.";
        list.appendChild(none);
      }
      names.forEach(function (name) {
        var figure = template.content.firstElementChild.cloneNode(true);
        figure.dataset.metric = name;
        figure.querySelector("[data-metric-name]").textContent = name;
        list.appendChild(figure);
        var sources = [];
        jobs.forEach(function (job, i) {
          var m = job.metrics && job.metrics[name];
          if (!m) return;
          var s = sourceFrom(m.points || [], job.name, color(i));
          s.t0 = s.ms.length ? s.ms[0] : 0; // relative time: since each job's own first point
          sources.push(s);
        });
        figure.dataset.lines = String(sources.length);
        var chart = new Chart(figure.querySelector("[data-chart]"), sources, state);
        chart.draw(true);
        charts.push(chart);
      });
      root.dataset.loaded = "1";
    });
    bindControls(root, state, function (rebuild) { charts.forEach(function (c) { c.draw(rebuild); }); });
    onResize(function () { return charts; });
  }

  // --- the compare page: parallel coordinates ------------------------------------------------
  // x is the axis index (one per hyperparameter, then the metric), y each axis's value scaled to
  // 0..1 on the server (numbers on their own scale, categories in order); one series per job.
  // The axes, their names and their ticks are drawn in uPlot's draw hook.

  function parallel(box) {
    var data = JSON.parse(document.getElementById("parallel-data").textContent);
    if (!data.axes || data.axes.length < 2 || !data.lines.length) return;
    var xs = data.axes.map(function (a, i) { return i; });
    var table = [xs].concat(data.lines.map(function (l) { return l.values; }));
    var series = [{ label: "axis" }].concat(
      data.lines.map(function (l) {
        return { label: l.job, stroke: l.color, width: 2, spanGaps: false, points: { show: true, size: 5 } };
      })
    );
    function drawAxes(u) {
      var ctx = u.ctx, px = uPlot.pxRatio;
      var top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
      ctx.save();
      ctx.font = Math.round(11 * px) + "px system-ui, sans-serif";
      ctx.fillStyle = "#1d2430";
      ctx.strokeStyle = "#8a94a3";
      ctx.lineWidth = px;
      data.axes.forEach(function (axis, i) {
        var x = u.valToPos(i, "x", true);
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, bottom);
        ctx.stroke();
        ctx.textAlign = i === 0 ? "left" : i === data.axes.length - 1 ? "right" : "center";
        ctx.textBaseline = "bottom";
        ctx.font = "600 " + Math.round(12 * px) + "px system-ui, sans-serif";
        ctx.fillText(axis.name + (axis.log ? " (log)" : ""), x, top - 6 * px);
        ctx.font = Math.round(11 * px) + "px system-ui, sans-serif";
        ctx.textBaseline = "middle";
        // Tick labels beside the axis (right of it; left of the last one), on a white ground.
        var last = i === data.axes.length - 1;
        ctx.textAlign = last ? "right" : "left";
        (axis.ticks || []).forEach(function (tick) {
          var y = u.valToPos(tick[0], "y", true);
          var text = tick[1], w = ctx.measureText(text).width, gap = 4 * px;
          var left = last ? x - gap - w : x + gap;
          ctx.fillStyle = "rgba(255,255,255,0.85)";
          ctx.fillRect(left - 2 * px, y - 7 * px, w + 4 * px, 14 * px);
          ctx.fillStyle = "#1d2430";
          ctx.fillText(text, last ? x - gap : x + gap, y);
        });
      });
      ctx.restore();
    }
    var plot = new uPlot(
      {
        width: Math.max(box.clientWidth, 400),
        height: 320,
        padding: [28, 40, 10, 40],
        scales: { x: { time: false, range: [-0.02, xs.length - 0.98] }, y: { range: [-0.04, 1.04] } },
        axes: [{ show: false }, { show: false }],
        cursor: { show: false },
        legend: { show: true, live: false },
        series: series,
        hooks: { draw: [drawAxes] }
      },
      table,
      box
    );
    box.dataset.lines = String(data.lines.length);
    window.addEventListener("resize", function () { plot.setSize({ width: Math.max(box.clientWidth, 400), height: 320 }); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof uPlot === "undefined") return; // the tables and numbers still say it all
    var job = document.getElementById("metric-charts");
    if (job && job.dataset.metricsUrl) jobPage(job);
    var compare = document.getElementById("compare-charts");
    if (compare && compare.dataset.metricsUrl) comparePage(compare);
    var par = document.getElementById("parallel");
    if (par && document.getElementById("parallel-data")) parallel(par);
    // The compare page's metric picker submits itself (a button does it without JavaScript).
    document.querySelectorAll("[data-submit-on-change]").forEach(function (form) {
      form.addEventListener("change", function (event) {
        if (event.target.closest("select")) form.submit();
      });
    });
  });
})();

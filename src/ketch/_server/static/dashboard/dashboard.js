// ketch dashboard: sortable tables, click to copy, notices, the live log view and charts.
// htmx does the requests (polled fragments, actions, server-sent events); uPlot draws.
(function () {
  "use strict";

  // -- sortable tables: click a header; the order survives a polled refresh ----------------
  const sortState = new Map(); // table id -> {col, dir}

  function cellValue(row, col) {
    const cell = row.children[col];
    if (!cell) return "";
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  }

  function sortTable(table, col, dir) {
    const body = table.tBodies[0];
    if (!body) return;
    const th = table.tHead.rows[0].children[col];
    const numeric = th && th.dataset.type === "num";
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      let x = cellValue(a, col), y = cellValue(b, col);
      if (numeric) {
        x = parseFloat(x); y = parseFloat(y);
        x = isNaN(x) ? -Infinity : x; y = isNaN(y) ? -Infinity : y;
        return (x - y) * dir;
      }
      return x.localeCompare(y, undefined, {numeric: true}) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.from(table.tHead.rows[0].children).forEach(function (h, i) {
      if (i === col) h.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else h.removeAttribute("aria-sort");
    });
  }

  document.addEventListener("click", function (e) {
    const th = e.target.closest("table.sortable thead th");
    if (!th || th.classList.contains("nosort")) return;
    const table = th.closest("table");
    const col = Array.from(th.parentNode.children).indexOf(th);
    const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    sortTable(table, col, dir);
    if (table.id) sortState.set(table.id, {col: col, dir: dir});
  });

  function reapplySorts(root) {
    sortState.forEach(function (s, id) {
      const table = document.getElementById(id);
      if (table && root.contains(table)) sortTable(table, s.col, s.dir);
    });
  }

  // -- click (or Enter) to copy -----------------------------------------------------------
  function copy(el) {
    const text = el.dataset.copy;
    const done = function () {
      el.classList.add("copied");
      setTimeout(function () { el.classList.remove("copied"); }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(el); });
    } else {
      selectText(el);
      try { if (document.execCommand("copy")) done(); } catch (err) { /* text stays selected */ }
    }
  }

  function selectText(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  document.addEventListener("click", function (e) {
    const el = e.target.closest("[data-copy]");
    if (el) copy(el);
  });
  document.addEventListener("keydown", function (e) {
    const el = e.target.closest && e.target.closest("[data-copy]");
    if (el && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); copy(el); }
  });

  document.addEventListener("change", function (e) {
    if (e.target.matches("select[data-autosubmit]")) e.target.form.submit();
  });

  // -- notices: an action's error is shown, not swallowed ---------------------------------
  function notify(text, isError) {
    const box = document.getElementById("notice");
    if (!box) return;
    box.textContent = text;
    box.classList.toggle("error", !!isError);
    box.hidden = false;
  }

  document.addEventListener("htmx:responseError", function (e) {
    const xhr = e.detail.xhr;
    notify(xhr.responseText || ("the server answered " + xhr.status), true);
  });
  document.addEventListener("htmx:sendError", function () {
    notify("the server did not answer; is it still running?", true);
  });

  // -- live logs: keep the newest 2,000 lines, follow the end unless scrolled up ----------
  const MAX_LINES = 2000;
  document.addEventListener("scroll", function (e) {
    const el = e.target;
    if (el.classList && el.classList.contains("logs")) {
      el.dataset.stick = (el.scrollHeight - el.scrollTop - el.clientHeight < 40) ? "1" : "0";
    }
  }, true);
  document.addEventListener("htmx:sseMessage", function (e) {
    const el = e.target.closest ? e.target.closest(".logs") : null;
    if (!el) return;
    while (el.childElementCount > MAX_LINES) el.removeChild(el.firstElementChild);
    if (el.dataset.stick !== "0") el.scrollTop = el.scrollHeight;
  });

  // -- charts (uPlot), refreshed every 5 s --------------------------------------------------
  const CHARTS = {
    rate: [["web", "web requests/s", "--c1"], ["calls", "calls/s", "--c2"]],
    latency: [["p50", "p50 ms", "--c1"], ["p95", "p95 ms", "--c2"], ["p99", "p99 ms", "--c3"]],
    cold: [["cold", "cold starts", "--c2"]],
  };

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function drawChart(el, data) {
    const defs = CHARTS[el.dataset.kind];
    const columns = [data.t].concat(defs.map(function (d) { return data[d[0]]; }));
    el.dataset.points = String(data.t.length);
    const width = Math.max(el.clientWidth, 200);
    if (el._plot) {
      el._plot.setData(columns);
      if (Math.abs(el._plot.width - width) > 2) el._plot.setSize({width: width, height: 200});
      return;
    }
    if (!data.t.length) return;
    const axis = {stroke: cssVar("--muted"), grid: {stroke: cssVar("--line"), width: 1},
                  ticks: {stroke: cssVar("--line"), width: 1}};
    const opts = {
      width: width, height: 200,
      // Always the last hour, so one point is not stretched over years.
      scales: {x: {time: true, range: function () {
        const now = Date.now() / 1000;
        return [now - 3600, now + 30];
      }}},
      axes: [axis, Object.assign({}, axis, {size: 55})],
      series: [{}].concat(defs.map(function (d) {
        return {label: d[1], stroke: cssVar(d[2]), width: 2, spanGaps: false,
                points: {show: true, size: 5}};
      })),
    };
    el._plot = new uPlot(opts, columns, el);
  }

  function refreshCharts() {
    const charts = document.querySelectorAll(".chart[data-src]");
    if (!charts.length || typeof uPlot === "undefined") return;
    const src = charts[0].dataset.src;
    fetch(src, {credentials: "same-origin", headers: {"accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error("status " + r.status); return r.json(); })
      .then(function (data) { charts.forEach(function (el) { drawChart(el, data); }); })
      .catch(function (err) { notify("could not load the chart data: " + err.message, true); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector(".chart[data-src]")) {
      refreshCharts();
      setInterval(refreshCharts, 5000);
      window.addEventListener("resize", refreshCharts);
    }
  });

  document.addEventListener("htmx:afterSettle", function (e) { reapplySorts(e.target); });
})();

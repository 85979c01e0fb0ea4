// webhook-orchestrator dashboard: the Overview's charts, drawn with the vendored Chart.js from the
// JSON the page carries (#chart-data). The tables beside each chart hold the same numbers.
(function () {
  "use strict";

  var STATUS_VARS = {
    queued: "--queued", running: "--running", success: "--success", failed: "--failed",
    cancelled: "--cancelled", succeeded: "--success", pending: "--queued",
  };

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function stacked(canvas, data) {
    var datasets = Object.keys(data.series).map(function (status) {
      return { label: status, data: data.series[status], backgroundColor: css(STATUS_VARS[status]) };
    });
    return {
      type: "bar",
      data: { labels: data.labels, datasets: datasets },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { x: { stacked: true, ticks: { color: css("--muted") } },
                  y: { stacked: true, beginAtZero: true, ticks: { precision: 0, color: css("--muted") } } },
        plugins: { legend: { labels: { color: css("--fg") } } },
      },
    };
  }

  function deliveries(canvas, data) {
    var keys = Object.keys(data);
    return {
      type: "doughnut",
      data: {
        labels: keys,
        datasets: [{ data: keys.map(function (k) { return data[k]; }),
                     backgroundColor: keys.map(function (k) { return css(STATUS_VARS[k]); }) }],
      },
      options: { animation: false, maintainAspectRatio: false,
                 plugins: { legend: { position: "right", labels: { color: css("--fg") } } } },
    };
  }

  function backlog(canvas, data) {
    return {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "pending", data: data.backlog, backgroundColor: css("--queued"), xAxisID: "x" },
          { label: "oldest pending (s)", data: data.oldest, backgroundColor: css("--failed"), xAxisID: "x2" },
        ],
      },
      options: {
        indexAxis: "y", animation: false, maintainAspectRatio: false,
        scales: {
          x: { beginAtZero: true, position: "bottom", ticks: { precision: 0, color: css("--muted") } },
          x2: { beginAtZero: true, position: "top", grid: { drawOnChartArea: false }, ticks: { color: css("--muted") } },
          y: { ticks: { color: css("--muted") } },
        },
        plugins: { legend: { labels: { color: css("--fg") } } },
      },
    };
  }

  var BUILDERS = { hour: stacked, day: stacked, deliveries: deliveries, backlog: backlog };

  function draw() {
    var source = document.getElementById("chart-data");
    if (!source || typeof Chart === "undefined") return;
    var all = JSON.parse(source.textContent);
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var name = canvas.dataset.chart;
      new Chart(canvas, BUILDERS[name](canvas, all[name]));
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();

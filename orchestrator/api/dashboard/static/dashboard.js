// webhook-orchestrator dashboard: live updates over server-sent events.
// Every page works without this script; it only keeps the Runs list and a Run page current.
// The server renders every piece of HTML it sends; this script only puts it in place.
(function () {
  "use strict";

  function say(text) {
    var status = document.getElementById("live-status");
    if (status) status.textContent = text;
  }

  function rowsFromHtml(html) {
    var body = document.createElement("tbody");
    body.innerHTML = html;
    return body;
  }

  // Runs list: insert new runs at the top (first page only), update changed rows in place,
  // drop rows that no longer pass the filters.
  function liveRuns(table) {
    var body = table.querySelector("tbody");
    var insert = table.dataset.insert === "true";
    var source = new EventSource(table.dataset.liveRuns);
    source.addEventListener("open", function () { say("Updated live as runs change."); });
    source.addEventListener("error", function () { say("Live updates interrupted; reconnecting…"); });
    source.addEventListener("run", function (event) {
      var data = JSON.parse(event.data);
      var current = document.getElementById("run-" + data.id);
      if (!data.match) {
        if (current) current.remove();
        return;
      }
      var row = rowsFromHtml(data.html).firstElementChild;
      if (current) {
        current.replaceWith(row);
      } else if (insert) {
        body.prepend(row);
        var empty = document.getElementById("no-runs");
        if (empty) empty.remove();
      }
    });
    source.addEventListener("resync", function () {
      // Some transitions went unheard: read the rows again.
      fetch(table.dataset.liveRuns, { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
        .then(function (html) { body.replaceChildren.apply(body, Array.from(rowsFromHtml(html).children)); })
        .catch(function () { say("Could not refresh the list; reload the page."); });
    });
  }

  // One run: replace the live part (status, fields, timeline, output) after each transition.
  function liveRun(container) {
    if (container.dataset.terminal === "true") return;
    var source = new EventSource(container.dataset.liveRun);
    source.addEventListener("state", function (event) {
      var data = JSON.parse(event.data);
      container.innerHTML = data.html;
      if (data.terminal) {
        source.close(); // the stream ends here; without this EventSource would reconnect
        container.dataset.terminal = "true";
        say("The run has ended.");
      } else {
        say("Updated live.");
      }
    });
    source.addEventListener("gone", function () { source.close(); say("This run no longer exists."); });
    source.addEventListener("error", function () {
      if (container.dataset.terminal !== "true") say("Live updates interrupted; reconnecting…");
    });
  }

  function start() {
    document.querySelectorAll("table[data-live-runs]").forEach(liveRuns);
    document.querySelectorAll("[data-live-run]").forEach(liveRun);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();

// The Correctness tab's verdict, in its colour, and the chart of anomalies over
// time, above the tab's table (loadtests/swarm/correctness_web.py serves this file).
// Locust draws the table itself from the rows the server adds to its stats;
// this only adds what a table cannot show: a colour, a chart, links to timelines.
(function () {
  "use strict";
  const base = new URL(document.currentScript.src).pathname.replace(/\/correctness\/tab\.js$/, "");
  let shownAt = 0;

  function onCorrectnessTab() {
    return new URLSearchParams(window.location.search).get("tab") === "correctness";
  }

  function banner() {
    let box = document.getElementById("correctness-verdict");
    if (box && document.body.contains(box)) {
      return box;
    }
    const table = document.querySelector("table");
    if (!table) {
      return null;
    }
    const container = table.closest(".MuiTableContainer-root") || table;
    box = document.createElement("div");
    box.id = "correctness-verdict";
    box.innerHTML =
      '<div class="verdict" style="color:white;font:bold 22px sans-serif;padding:14px 18px;' +
      'border-radius:4px;margin:8px 0 12px"></div>' +
      '<p class="timelines" style="margin:0 0 12px"></p>' +
      '<img class="chart" alt="Anomalies found so far, per scope of state" ' +
      'style="max-width:100%;background:white;border-radius:4px;margin-bottom:12px">';
    container.parentNode.insertBefore(box, container);
    shownAt = 0; // a new chart at once
    return box;
  }

  async function refresh() {
    const existing = document.getElementById("correctness-verdict");
    if (!onCorrectnessTab()) {
      if (existing) {
        existing.remove();
      }
      return;
    }
    const box = banner();
    if (!box) {
      return;
    }
    try {
      const answer = await (await fetch(base + "/correctness", { cache: "no-store" })).json();
      const verdict = box.querySelector(".verdict");
      verdict.textContent = answer.verdict;
      verdict.style.background = answer.colour;
      verdict.dataset.status = answer.status;
      // Each witness's timeline: a page drawn from the witnesses found so far.
      const links = answer.timelines.map((t) => `<a href="${t.href}" target="_blank">${t.kind}</a>`);
      box.querySelector(".timelines").innerHTML = links.length ? `timelines: ${links.join(" · ")}` : "";
      const now = Date.now();
      if (now - shownAt > 4000) {
        box.querySelector(".chart").src = base + "/correctness/chart.svg?at=" + now;
        shownAt = now;
      }
    } catch (error) {
      // Locust has stopped: keep what is shown.
    }
  }

  window.setInterval(refresh, 2000);
  window.addEventListener("popstate", refresh);
  document.addEventListener("click", () => window.setTimeout(refresh, 100));
})();

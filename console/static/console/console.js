/* The console's live updates: poll JSON endpoints, refresh numbers and tables, draw lag charts in SVG. */
(function () {
  "use strict";
  var POLL_MS = 2000;

  function getJSON(url, done) {
    var request = new XMLHttpRequest();
    request.open("GET", url);
    request.setRequestHeader("Accept", "application/json");
    request.onload = function () { if (request.status === 200) { done(JSON.parse(request.responseText)); } };
    request.send();
  }

  function cell(row, text) { var td = document.createElement("td"); td.textContent = text; row.appendChild(td); }

  function fill(section, data) {
    section.querySelectorAll("[data-field]").forEach(function (node) {
      var value = data[node.getAttribute("data-field")];
      if (value !== undefined) { node.textContent = value; }
    });
  }

  function pollOverview(section) {
    var last = null;
    var tick = function () {
      getJSON(section.getAttribute("data-poll"), function (data) {
        fill(section, data);
        var now = Date.now();
        if (last) {
          var rate = (data.records_produced - last.data.records_produced) / ((now - last.at) / 1000);
          section.querySelector("[data-rate=records_produced]").textContent = rate.toFixed(1);
        }
        last = {data: data, at: now};
        var chart = section.querySelector("[data-chart]");
        if (chart) { drawChart(chart, data.backlog_history); }
        var consumed = section.querySelector("[data-consume-rate]");
        if (consumed) { consumed.textContent = data.consume_rate === null ? "–" : data.consume_rate.toFixed(1); }
        var notes = section.querySelector("[data-list=attention]");
        notes.textContent = "";
        (data.attention.length ? data.attention : ["Nothing: no stalled group, dead letter, failed task or failing outbox event."])
          .forEach(function (text) { var li = document.createElement("li"); li.textContent = text; notes.appendChild(li); });
        section.querySelectorAll("[data-task]").forEach(function (node) {
          node.textContent = data.tasks[node.getAttribute("data-task")];
        });
        var body = section.querySelector("[data-rows=groups]");
        body.textContent = "";
        data.groups.forEach(function (g) {
          var row = document.createElement("tr"), td = document.createElement("td"), link = document.createElement("a");
          link.href = "groups/" + encodeURIComponent(g.name) + "/"; link.textContent = g.name;
          td.appendChild(link); row.appendChild(td); cell(row, g.lag); body.appendChild(row);
        });
      });
    };
    tick();
    setInterval(tick, POLL_MS);
  }

  function drawChart(svg, history) {
    var NS = "http://www.w3.org/2000/svg", width = 600, height = 160, pad = 30;
    var totals = {}, times = [];
    history.forEach(function (p) {
      if (!(p.t in totals)) { totals[p.t] = 0; times.push(p.t); }
      totals[p.t] += p.lag;
    });
    svg.textContent = "";
    if (!times.length) {
      var empty = document.createElementNS(NS, "text");
      empty.setAttribute("x", pad); empty.setAttribute("y", height / 2);
      empty.textContent = "No samples yet (the lag sampler runs under manage.py serve).";
      svg.appendChild(empty);
      return;
    }
    var max = Math.max.apply(null, times.map(function (t) { return totals[t]; }).concat([1]));
    var points = times.map(function (t, i) {
      var x = pad + (times.length === 1 ? 0 : i * (width - 2 * pad) / (times.length - 1));
      var y = height - pad - totals[t] * (height - 2 * pad) / max;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    var line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", "line");
    svg.appendChild(line);
    var label = document.createElementNS(NS, "text");
    label.setAttribute("x", 2); label.setAttribute("y", pad - 8);
    label.textContent = "max " + max + " · " + times.length + " samples";
    svg.appendChild(label);
  }

  function pollGroup(section) {
    var tick = function () {
      getJSON(section.getAttribute("data-group-poll"), function (data) {
        fill(section, data);
        var body = section.querySelector("[data-rows=partitions]");
        body.textContent = "";
        data.partitions.forEach(function (p) {
          var row = document.createElement("tr");
          [p.topic, p.partition, p.current_offset === null ? "–" : p.current_offset, p.log_end_offset,
           p.lag === null ? "–" : p.lag, p.host || ""].forEach(function (v) { cell(row, v); });
          body.appendChild(row);
        });
        drawChart(section.querySelector("[data-chart]"), data.history);
      });
    };
    tick();
    setInterval(tick, POLL_MS);
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  document.querySelectorAll("[data-poll]").forEach(pollOverview);
  document.querySelectorAll("[data-group-poll]").forEach(pollGroup);
})();

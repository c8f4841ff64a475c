"""The dashboard's single HTML page: inline CSS and vanilla JS, no external assets.

The page polls ``api/latest`` and draws everything with DOM and inline SVG built from
text nodes (never innerHTML), so released values cannot inject markup. The CSS and the
script are kept apart so the server can pin them with Content-Security-Policy hashes.
"""

from __future__ import annotations

PAGE_CSS = """
:root {
  --bg: #f3f5f8; --card: #ffffff; --ink: #1d2433; --muted: #667085; --line: #e3e7ee;
  --users: #3b6fd8; --events: #14937a; --rest-users: #a9bfed; --rest-events: #94d3c4;
  --warn: #b54708; --bad: #b42318;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 "DejaVu Sans", "Liberation Sans", "Helvetica Neue", Arial, sans-serif;
}
header {
  display: flex; justify-content: space-between; align-items: center; gap: 16px;
  padding: 14px 28px; background: #1d2433; color: #fff;
}
header h1 { margin: 0; font-size: 20px; font-weight: 700; letter-spacing: .2px; }
header h1 span { font-weight: 400; color: #b8c2d6; margin-left: 6px; }
header .sub { margin: 2px 0 0; color: #b8c2d6; font-size: 12px; }
.status { font-size: 12px; color: #d5dbe7; white-space: nowrap; }
.status .dot {
  display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  background: #98a2b3; margin-right: 6px; vertical-align: 1px;
}
.status.live .dot { background: #32d583; }
.status.down .dot { background: #f97066; }
main { padding: 18px 28px 8px; max-width: 1360px; margin: 0 auto; }
.banner {
  background: #fef3f2; color: var(--bad); border: 1px solid #fecdca; border-radius: 8px;
  padding: 8px 12px; margin-bottom: 14px;
}
.banner.info { background: #fffaeb; color: var(--warn); border-color: #fedf89; }
.waiting {
  text-align: center; color: var(--muted); font-size: 18px; padding: 80px 0;
}
section.pipeline {
  background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 16px 20px 18px; margin-bottom: 22px; box-shadow: 0 1px 2px rgba(16,24,40,.05);
}
.sec-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 10px; }
.sec-head h2 { margin: 0 6px 0 0; font-size: 19px; }
.badge {
  font-size: 12px; color: #344054; background: #f2f4f7; border: 1px solid var(--line);
  border-radius: 999px; padding: 1px 9px;
}
.badge.noise { color: var(--warn); background: #fffaeb; border-color: #fedf89; }
.window { margin-left: auto; color: var(--muted); font-size: 13px; }
.window b { color: var(--ink); font-weight: 600; }
.tiles {
  display: grid; grid-template-columns: repeat(7, minmax(0, 1fr)); gap: 10px; margin: 14px 0;
}
.tile { border: 1px solid var(--line); border-radius: 10px; padding: 8px 12px; }
.tile .num { font-size: 22px; font-weight: 700; font-variant-numeric: tabular-nums; }
.tile .lbl { font-size: 12px; color: var(--muted); }
.tile.suppressed .num { color: var(--bad); }
.tile.rolled .num { color: var(--warn); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px 8px; }
.card h3 { margin: 0 0 4px; font-size: 14px; font-weight: 600; }
.card h3 small { color: var(--muted); font-weight: 400; margin-left: 6px; }
.wide { margin-top: 14px; }
svg.chart { width: 100%; height: auto; display: block; }
svg text { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
.grid { stroke: #edf0f4; stroke-width: 1; }
.axis { stroke: #98a2b3; stroke-width: 1; }
.tick { fill: var(--muted); font-size: 11px; }
.label { fill: var(--ink); font-size: 12px; }
.label.rest { fill: var(--muted); font-style: italic; }
.value { fill: #344054; font-size: 11px; font-weight: 600; }
.axis-title { fill: var(--muted); font-size: 11px; font-weight: 600; letter-spacing: .3px; }
.bar.users { fill: var(--users); }
.bar.events { fill: var(--events); }
.bar.users.rest { fill: var(--rest-users); }
.bar.events.rest { fill: var(--rest-events); }
.bar.window { fill: #7a8aa8; }
.bar.window.latest { fill: var(--events); }
.legend { font-size: 12px; color: var(--muted); margin: 2px 0 4px; }
.swatch {
  display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px;
  vertical-align: -1px;
}
.swatch.users { background: var(--users); }
.swatch.events { background: var(--events); }
.swatch.users.rest { background: var(--rest-users); }
.swatch.events.rest { background: var(--rest-events); }
.note { color: var(--muted); font-size: 12.5px; margin: 12px 2px; }
.note code { background: #f2f4f7; padding: 0 4px; border-radius: 4px; }
.table-wrap { max-height: 420px; overflow: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; }
th {
  position: sticky; top: 0; background: #f9fafb; font-weight: 600; color: #344054;
  font-size: 12px;
}
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.rest { color: var(--muted); font-style: italic; }
tr:hover td { background: #f9fafb; }
.more { color: var(--muted); font-size: 12px; margin: 6px 2px 0; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 4px 0 20px; }
@media (max-width: 900px) {
  .tiles { grid-template-columns: repeat(3, minmax(0, 1fr)); }
  .grid2 { grid-template-columns: 1fr; }
}
"""

PAGE_JS = """
"use strict";
(() => {
  const POLL_MS = 3000;
  const TOP = 10;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const REST = "(rest)";
  const app = document.getElementById("app");
  const statusEl = document.getElementById("status");
  const topicsEl = document.getElementById("topics");
  let lastText = null;

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function append(e, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      e.append(k instanceof Node ? k : String(k));
    }
  }
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }

  const nf0 = new Intl.NumberFormat("en-US", {maximumFractionDigits: 0});
  const nf1 = new Intl.NumberFormat("en-US", {maximumFractionDigits: 1});
  const nfc = new Intl.NumberFormat("en-US", {notation: "compact", maximumFractionDigits: 1});
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number" || !Number.isFinite(v)) return String(v);
    return Number.isInteger(v) ? nf0.format(v) : nf1.format(v);
  }
  function compact(v) { return Math.abs(v) < 10000 ? fmt(v) : nfc.format(v); }
  function num(v) { return typeof v === "number" && Number.isFinite(v) ? v : 0; }
  function niceScale(v, ticks) {
    // A round tick step (1, 2 or 5 times a power of ten) and the axis end it gives.
    const raw = v > 0 ? v / ticks : 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((x) => x >= raw) || 10 * p;
    const n = Math.max(1, Math.ceil(v / step));
    return {max: n * step, step, n};
  }
  function dimValue(v) { return v === "*" ? REST : String(v); }
  function isRest(cell) { return Object.values(cell.dims).includes("*"); }
  function cellLabel(cell, dims) {
    const names = dims.length ? dims : Object.keys(cell.dims);
    return names.map((d) => dimValue(cell.dims[d])).join(" · ");
  }
  function fitLabels(root) {
    // Shorten chart labels to their room, measured by the browser; the tooltip has all.
    for (const t of root.querySelectorAll("text[data-fit]")) {
      const room = Number(t.getAttribute("data-fit"));
      const full = t.firstChild.nodeValue;
      let lo = 1, hi = full.length;
      if (t.getComputedTextLength() <= room) continue;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        t.firstChild.nodeValue = full.slice(0, mid) + "…";
        if (t.getComputedTextLength() <= room) lo = mid;
        else hi = mid - 1;
      }
      t.firstChild.nodeValue = full.slice(0, lo).trimEnd() + "…";
    }
  }
  function parseTs(t) { const d = new Date(t); return Number.isNaN(d.getTime()) ? null : d; }
  function pad(n) { return String(n).padStart(2, "0"); }
  function ymd(d) {
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  }
  function hm(d) { return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`; }
  function windowText(w) {
    const a = parseTs(w.start), b = parseTs(w.end);
    if (!a || !b) return `${w.start} – ${w.end}`;
    const end = ymd(a) === ymd(b) || (b - a <= 86400000 && hm(b) === "00:00")
      ? hm(b) : `${ymd(b)} ${hm(b)}`;
    return `${ymd(a)} ${hm(a)} – ${end} UTC`;
  }

  function barChart(cells, metric, dims, unit) {
    const W = 600, LABEL = 290, RIGHT = 56, ROW = 24, TOPPAD = 6, AXIS = 40;
    const rows = cells.slice(0, TOP);
    const plotH = rows.length * ROW;
    const H = TOPPAD + plotH + AXIS;
    const scale = niceScale(Math.max(1, ...rows.map((c) => num(c[metric]))), 4);
    const plotW = W - LABEL - RIGHT;
    const x = (v) => LABEL + (Math.max(0, v) / scale.max) * plotW;
    const svg = s("svg", {
      viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": `top cells by ${unit}`,
    });
    for (let i = 0; i <= scale.n; i++) {
      const v = scale.step * i, xx = x(v);
      svg.append(s("line", {x1: xx, x2: xx, y1: TOPPAD, y2: TOPPAD + plotH, class: "grid"}));
      svg.append(s("text", {
        x: xx, y: TOPPAD + plotH + 15, "text-anchor": "middle", class: "tick", text: compact(v),
      }));
    }
    rows.forEach((c, i) => {
      const y = TOPPAD + i * ROW;
      const label = cellLabel(c, dims);
      const rest = isRest(c);
      const v = num(c[metric]);
      svg.append(s("text", {
        x: LABEL - 8, y: y + ROW / 2 + 4, "text-anchor": "end",
        class: rest ? "label rest" : "label", text: label, "data-fit": LABEL - 14,
      }, s("title", {text: label})));
      svg.append(s("rect", {
        x: LABEL, y: y + 4, width: Math.max(1.5, x(v) - LABEL), height: ROW - 8, rx: 3,
        class: `bar ${metric}${rest ? " rest" : ""}`,
      }, s("title", {text: `${label}: ${fmt(c[metric])} ${unit}`})));
      svg.append(s("text", {
        x: x(v) + 6, y: y + ROW / 2 + 4, class: "value", text: fmt(c[metric]),
      }));
    });
    svg.append(s("line", {x1: LABEL, x2: LABEL, y1: TOPPAD, y2: TOPPAD + plotH, class: "axis"}));
    svg.append(s("text", {
      x: LABEL + plotW / 2, y: H - 6, "text-anchor": "middle", class: "axis-title", text: unit,
    }));
    return svg;
  }

  function historyChart(history) {
    const W = 1200, H = 200, L = 72, R = 16, T = 18, B = 52;
    const plotW = W - L - R, plotH = H - T - B;
    const n = Math.max(history.length, 1);
    const scale = niceScale(Math.max(1, ...history.map((w) => num(w.released_events))), 4);
    const y = (v) => T + plotH - (Math.max(0, v) / scale.max) * plotH;
    const slot = Math.min(120, plotW / n), bw = Math.min(56, slot * 0.6);
    const svg = s("svg", {
      viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": "released events per window",
    });
    for (let i = 0; i <= scale.n; i++) {
      const v = scale.step * i, yy = y(v);
      svg.append(s("line", {x1: L, x2: W - R, y1: yy, y2: yy, class: "grid"}));
      svg.append(s("text", {
        x: L - 8, y: yy + 4, "text-anchor": "end", class: "tick", text: compact(v),
      }));
    }
    let prevDay = null;
    history.forEach((w, i) => {
      const v = num(w.released_events);
      const cx = L + slot * i + slot / 2;
      const d = parseTs(w.start);
      const day = d ? ymd(d) : "";
      svg.append(s("rect", {
        x: cx - bw / 2, y: y(v), width: bw, height: Math.max(1.5, T + plotH - y(v)), rx: 3,
        class: i === history.length - 1 ? "bar window latest" : "bar window",
      }, s("title", {text: `${windowText(w)}: ${fmt(v)} released events`})));
      svg.append(s("text", {
        x: cx, y: y(v) - 5, "text-anchor": "middle", class: "value", text: fmt(v),
      }));
      svg.append(s("text", {
        x: cx, y: T + plotH + 15, "text-anchor": "middle", class: "tick", text: d ? hm(d) : w.start,
      }));
      if (day !== prevDay) {
        svg.append(s("text", {
          x: cx, y: T + plotH + 29, "text-anchor": "middle", class: "tick", text: day,
        }));
        prevDay = day;
      }
    });
    svg.append(s("line", {x1: L, x2: W - R, y1: T + plotH, y2: T + plotH, class: "axis"}));
    svg.append(s("text", {
      x: L + plotW / 2, y: H - 5, "text-anchor": "middle", class: "axis-title",
      text: "window start (UTC)",
    }));
    svg.append(s("text", {
      x: 14, y: T + plotH / 2, "text-anchor": "middle", class: "axis-title",
      transform: `rotate(-90 14 ${T + plotH / 2})`, text: "released events",
    }));
    return svg;
  }

  function tiles(st) {
    const sm = st.summary;
    const items = [
      ["cells_released", "cells released", sm.cells_released, ""],
      ["cells_rolled_up", "rolled up into (rest)", sm.cells_rolled_up, "rolled"],
      ["cells_suppressed", "suppressed", sm.cells_suppressed, "suppressed"],
      ["k", "k: min. people per cell", sm.k, ""],
      ["released_events", "events in released cells", st.released_events, ""],
      ["late_events", "late events", sm.late_events, ""],
      ["rejected_events", "rejected events", sm.rejected_events, ""],
    ];
    return h("div", {class: "tiles"}, items.map(([key, label, v, cls]) =>
      h("div", {class: `tile ${cls}`.trim(), "data-stat": key},
        h("div", {class: "num", text: fmt(v)}), h("div", {class: "lbl", text: label}))));
  }

  function cellTable(st) {
    const dims = st.dimensions;
    const head = h("tr", {},
      dims.map((d) => h("th", {text: d})),
      h("th", {class: "n", text: "users"}), h("th", {class: "n", text: "events"}),
      st.columns.map(([, label]) => h("th", {class: "n", text: label})));
    const rows = st.cells.map((c) => h("tr", {},
      dims.map((d) => h("td", {
        class: c.dims[d] === "*" ? "rest" : null, text: dimValue(c.dims[d]),
      })),
      h("td", {class: "n", text: fmt(c.users)}), h("td", {class: "n", text: fmt(c.events)}),
      st.columns.map(([key]) => h("td", {class: "n", text: fmt(c.metrics[key])}))));
    return h("div", {class: "table-wrap"},
      h("table", {}, h("thead", {}, head), h("tbody", {}, rows)));
  }

  function section(st) {
    const head = h("div", {class: "sec-head"},
      h("h2", {text: st.pipeline}),
      h("span", {class: "badge", text: `output ${st.output}`}),
      st.pipeline_version !== null
        ? h("span", {class: "badge", text: `v${st.pipeline_version}`}) : null,
      st.k !== null ? h("span", {class: "badge", text: `k = ${st.k}`}) : null,
      st.noise ? h("span", {class: "badge noise", text: "noisy numbers"}) : null,
      st.window ? h("div", {class: "window"}, "latest complete window ",
        h("b", {text: windowText(st.window)})) : null);
    const sec = h("section", {
      class: "pipeline", "data-pipeline": st.pipeline, "data-output": st.output,
    }, head);
    if (!st.window) {
      sec.append(h("p", {class: "waiting", text: "waiting for the first window…"}));
      return sec;
    }
    sec.append(tiles(st));
    if (st.cells_missing > 0) {
      sec.append(h("div", {class: "banner info",
        text: `${fmt(st.cells_received)} of ${fmt(st.summary.cells_released)} cells ` +
          "of this window received so far."}));
    }
    const legend = (metric) => h("div", {class: "legend"}, `top ${TOP} cells`,
      h("span", {class: `swatch ${metric}`}), "released on its own",
      h("span", {class: `swatch ${metric} rest`}), `${REST} cell`);
    sec.append(h("div", {class: "grid2"},
      h("div", {class: "card"}, h("h3", {text: "Top cells by users"}), legend("users"),
        barChart(st.top_users, "users", st.dimensions, "users (distinct people)")),
      h("div", {class: "card"}, h("h3", {text: "Top cells by events"}), legend("events"),
        barChart(st.top_events, "events", st.dimensions, "events"))));
    sec.append(h("div", {class: "card wide"},
      h("h3", {}, "Released events per window",
        h("small", {text: `last ${st.history.length} complete ` +
          `window${st.history.length === 1 ? "" : "s"}, sum over released cells`})),
      historyChart(st.history)));
    sec.append(h("p", {class: "note"},
      h("b", {text: REST}), " cells (", h("code", {text: "*"}),
      " in the records) are the rest: the events of every value not released on its own " +
      "at that level, never “all”. Cells are disjoint, so the sums here are of released " +
      "cells only: suppressed events are in no cell, and there is no total."));
    const more = st.cells_total > st.cells.length
      ? h("p", {class: "more",
        text: `showing the top ${fmt(st.cells.length)} of ${fmt(st.cells_total)} cells by users`})
      : null;
    sec.append(h("div", {class: "card wide"},
      h("h3", {}, "Cells",
        h("small", {text: `${fmt(st.cells_total)} released in this window, by users`})),
      cellTable(st), more));
    return sec;
  }

  function render(data) {
    topicsEl.textContent = `topics: ${data.topics.join(", ")}`;
    const kids = [];
    if (data.error) kids.push(h("div", {class: "banner", text: `Kafka: ${data.error}`}));
    if (data.missing_topics.length) {
      kids.push(h("div", {class: "banner info",
        text: `topic${data.missing_topics.length > 1 ? "s" : ""} not created yet: ` +
          data.missing_topics.join(", ")}));
    }
    if (!data.streams.some((st) => st.window)) {
      kids.push(h("p", {class: "waiting", text: "waiting for the first window…"}));
    }
    for (const st of data.streams) if (st.window) kids.push(section(st));
    for (const st of data.streams) if (!st.window) kids.push(section(st));
    app.replaceChildren(...kids);
    fitLabels(app);
  }

  function setStatus(cls, text) {
    statusEl.className = `status ${cls}`;
    statusEl.replaceChildren(h("span", {class: "dot"}), text);
  }

  async function poll() {
    try {
      const r = await fetch("api/latest", {cache: "no-store"});
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const text = await r.text();
      const data = JSON.parse(text);
      if (text !== lastText) {
        render(data);
        lastText = text;
      }
      const now = new Date();
      setStatus(data.connected ? "live" : "down",
        `${data.connected ? "live" : "not connected"} · ${fmt(data.records)} records · ` +
        `updated ${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}`);
    } catch (e) {
      setStatus("down", `dashboard unreachable (${e.message})`);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  poll();
})();
"""

PAGE_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>anonstream · released aggregates</title>
<style>{css}</style>
</head>
<body>
<header>
  <div>
    <h1>anonstream<span>released aggregates</span></h1>
    <p class="sub" id="topics"></p>
  </div>
  <div id="status" class="status"><span class="dot"></span>connecting…</div>
</header>
<main id="app"><p class="waiting">waiting for the first window…</p></main>
<footer>Read-only view of the output topics (read_committed), latest complete windows only.
k-anonymous releases: every cell has at least k distinct people.</footer>
<script>{js}</script>
</body>
</html>
"""


def render_page() -> str:
    return PAGE_TEMPLATE.replace("{css}", PAGE_CSS).replace("{js}", PAGE_JS)

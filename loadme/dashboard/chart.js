// The runs-per-day chart: stacked bars by state, drawn as SVG by this code (no library).

import {svg} from "./dom.js";

const WIDTH = 760;
const HEIGHT = 260;
const MARGIN = {top: 18, right: 12, bottom: 34, left: 44};

/** A round upper bound and tick step for counts up to `max`: 1, 2, 5, 10, 20, 50, ... */
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return {top: 1, step: 1};
  const rough = max / ticks;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough));
  return {top: Math.ceil(max / step) * step, step};
}

/** The chart of `days` ([{date, total, by_state}]), each bar stacked in the order of `states`. */
export function runsPerDayChart(days, states, title) {
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const {top, step} = niceScale(Math.max(0, ...days.map((d) => d.total)));
  const y = (count) => MARGIN.top + plotHeight - (count / top) * plotHeight;
  const band = plotWidth / Math.max(1, days.length);
  const barWidth = Math.max(2, Math.min(48, band * 0.7));
  const labelEvery = Math.ceil(days.length / 12);

  const grid = [];
  for (let tick = 0; tick <= top; tick += step) {
    grid.push(svg("line", {class: "grid", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(tick), y2: y(tick)}));
    grid.push(svg("text", {class: "tick", x: MARGIN.left - 6, y: y(tick) + 4, "text-anchor": "end"}, tick));
  }

  const bars = days.map((day, index) => {
    const x = MARGIN.left + index * band + (band - barWidth) / 2;
    let base = 0;
    const parts = [];
    for (const state of states) {
      const count = day.by_state[state] || 0;
      if (!count) continue;
      parts.push(svg("rect", {class: `bar st-${state}`, x, width: barWidth, y: y(base + count),
        height: Math.max(0, y(base) - y(base + count)), "data-state": state, "data-count": count},
      svg("title", {}, `${day.date}: ${count} ${state.replace("_", " ")}`)));
      base += count;
    }
    const label = index % labelEvery === 0 || index === days.length - 1
      ? svg("text", {class: "day", x: x + barWidth / 2, y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle"},
        day.date.slice(5))
      : null;
    const total = day.total && days.length <= 31
      ? svg("text", {class: "total", x: x + barWidth / 2, y: y(day.total) - 4, "text-anchor": "middle"}, day.total)
      : null;
    return svg("g", {class: "day-bar", "data-date": day.date, "data-total": day.total}, parts, total, label);
  });

  return svg("svg", {class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-labelledby": "chart-title"},
    svg("title", {id: "chart-title"}, title),
    grid,
    svg("line", {class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(0), y2: y(0)}),
    bars);
}

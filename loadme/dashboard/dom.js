// Building the page without ever parsing data as HTML: every text goes in as a text node.

/** An element: el("a", {href: "#/runs", class: "x"}, "text", child, ...). Attributes are set with
 * setAttribute (values are strings, never markup); `null`/`false` attributes are left out; `true` sets
 * a boolean attribute; `on` is a map of event listeners. Children: nodes, strings (text), arrays, or null. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element, like el(). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else if (value !== null && value !== undefined && value !== false) {
      node.setAttribute(name, String(value));
    }
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace a node's children, keeping keyboard focus on the element with the same data-focus-key. */
export function replaceKeepingFocus(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.getAttribute("data-focus-key") : null;
  container.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  if (key) {
    const again = [...container.querySelectorAll("[data-focus-key]")].find((n) => n.getAttribute("data-focus-key") === key);
    if (again) again.focus();
  }
}

/** A table: caption, column headers and rows (arrays of cells: nodes or text). */
export function table(caption, headers, rows, attrs = {}) {
  return el("table", attrs,
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {scope: "col"}, h)))),
    el("tbody", {}, rows));
}

export function row(cells, attrs = {}) {
  return el("tr", attrs, cells.map((cell) => (cell instanceof Node && cell.nodeName === "TD") ? cell : el("td", {}, cell)));
}

/** Collapse a text to one line (API errors are shown that way). */
export function oneLine(text) {
  return String(text ?? "").replace(/\s+/g, " ").trim();
}

const pad = (n) => String(n).padStart(2, "0");

/** An ISO 8601 time in local time, "YYYY-MM-DD HH:MM:SS" (or only "HH:MM:SS.mmm" with clockOnly), in a
 * <time> element whose title is the exact value. */
export function time(iso, {clockOnly = false} = {}) {
  if (!iso) return "";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const clock = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
  const text = clockOnly ? `${clock}.${String(at.getMilliseconds()).padStart(3, "0")}`
    : `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${clock}`;
  return el("time", {datetime: iso, title: iso}, text);
}

/** Seconds as "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"; "" for none. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "";
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const whole = Math.round(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  if (whole < 86400) return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
  return `${Math.floor(whole / 86400)} d ${Math.floor((whole % 86400) / 3600)} h`;
}

/** A run state as a badge (its colour comes from the stylesheet, its meaning from the text). */
export function stateBadge(state) {
  return el("span", {class: `state state-${state}`, "data-state": state}, String(state).replace("_", " "));
}

export const TERMINAL_STATES = ["succeeded", "failed", "timed_out", "cancelled"];
export const STATES = ["queued", "deploying", "running", "succeeded", "failed", "timed_out", "cancelled"];

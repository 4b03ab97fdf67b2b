// The loadme dashboard: runs, a run's page, stats and the poison queues, from the app's own HTTP API.
// Views are chosen by the URL's fragment (#/runs?state=failed&since=today, #/runs/<id>, #/stats,
// #/poison), so every view can be bookmarked and the back button works.

import {API_BASE, ApiError, api, entraLoginUrl, forgetAuth, getAuth, useKey} from "./api.js";
import {runsPerDayChart} from "./chart.js";
import {STATES, TERMINAL_STATES, duration, el, oneLine, replaceKeepingFocus, row, stateBadge, table, time}
  from "./dom.js";

const REFRESH_MS = {runs: 5000, run: 3000, stats: 30000, poison: 5000};
const QUEUES = ["initjob", "stage2", "removeinfra"];
const SINCE = [
  ["", "the retention period"], ["1h", "the last hour"], ["today", "today (local time)"],
  ["24h", "the last 24 hours"], ["7d", "the last 7 days"],
];
const PAGE_SIZES = ["25", "50", "100", "200"];
const LOG_TAIL = 2000;

const $ = (id) => document.getElementById(id);
const main = $("main");

// ---- messages: one line, the API's error text -----------------------------------------------------
function say(text, {error = false, link = null} = {}) {
  const box = $("message");
  const line = oneLine(text);
  // The same error again (an auto-refresh failing each time) is not announced again.
  if (!box.hidden && error && box.classList.contains("error") && box.querySelector(".text").textContent === line) return;
  const parts = [el("span", {class: "text"}, line)];
  if (link) parts.push(" ", el("a", {href: link.href}, link.text));
  parts.push(el("button", {type: "button", class: "dismiss", "aria-label": "Dismiss the message",
    on: {click: () => { box.hidden = true; }}}, "×"));
  box.replaceChildren(...parts);
  box.className = error ? "message error" : "message info";
  box.removeAttribute("data-run-id");
  box.setAttribute("role", error ? "alert" : "status");
  box.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
}

/** Report a failed call; a refused key or an expired sign-in asks again. */
function report(error) {
  if (!(error instanceof ApiError)) {
    say(`unexpected error: ${error && error.message ? error.message : error}`, {error: true});
    return;
  }
  if (error.unauthorized) {
    // A wrong key, or an expired Microsoft sign-in when Entra ID protects the app: which one, the answer
    // does not say reliably, so both ways out are offered.
    stopRefresh(); // until a key is given again
    say(`${error.message} (enter a valid function key, or sign in with Microsoft again)`,
      {error: true, link: {href: entraLoginUrl(), text: "Sign in with Microsoft"}});
    askForAuth();
  } else {
    say(error.message, {error: true});
  }
}

// ---- the function key, kept for this tab only ------------------------------------------------------
function showAuthState() {
  const auth = getAuth();
  $("auth-state").textContent = auth ? "function key set (this tab only)" : "no function key";
  $("forget-key").hidden = !auth;
}

function askForAuth() {
  const dialog = $("auth-dialog");
  if (dialog.open) return;
  $("auth-key").value = "";
  $("entra-login").href = entraLoginUrl();
  dialog.showModal();
  $("auth-key").focus();
}

function setUpAuth() {
  const dialog = $("auth-dialog");
  dialog.addEventListener("cancel", (event) => event.preventDefault()); // a choice is needed to go on
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("auth-key").value.trim();
    if (!key) {
      $("auth-key").setCustomValidity("Enter a function key");
      $("auth-key").reportValidity();
      return;
    }
    useKey(key);
    dialog.close();
    showAuthState();
    clearMessage();
    route();
  });
  $("auth-key").addEventListener("input", () => $("auth-key").setCustomValidity(""));
  $("forget-key").addEventListener("click", () => {
    forgetAuth();
    stopRefresh();
    showAuthState();
    say("Forgotten: this tab holds no key and no sign-in choice any more.");
    askForAuth();
  });
  showAuthState();
}

// ---- auto-refresh ----------------------------------------------------------------------------------
let refreshTimer = null;
let refreshTask = null;

function startRefresh(task, ms) {
  stopRefresh();
  refreshTask = {task, ms};
  schedule();
}

function schedule() {
  clearTimeout(refreshTimer);
  if (!refreshTask || !$("auto-refresh").checked) return;
  refreshTimer = setTimeout(async () => {
    if (!document.hidden && refreshTask) {
      const current = generation;
      await Promise.all([refreshTask.task(), refreshPoisonCount(() => current === generation, {force: false})]);
    }
    schedule();
  }, refreshTask.ms);
}

function stopRefresh() {
  clearTimeout(refreshTimer);
  refreshTask = null;
}

/** "Updated <time>" under a view; says so when auto-refresh is paused. */
function updated(node = null) {
  const nodes = node ? [node] : document.querySelectorAll(".updated[data-at]");
  for (const each of nodes) {
    if (node) each.setAttribute("data-at", new Date().toISOString());
    const at = new Date(each.getAttribute("data-at"));
    each.textContent = `Updated ${at.toLocaleTimeString()}` + ($("auto-refresh").checked ? "" : " (auto-refresh paused)");
  }
}

// ---- routing ---------------------------------------------------------------------------------------
let shownView = null;
let generation = 0; // a view's answers that arrive after the user moved on are dropped

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  return {parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query)};
}

function route({focus = false} = {}) {
  stopRefresh();
  const current = ++generation;
  const live = () => current === generation;
  const {parts, params} = parseHash();
  const view = parts[0] || "runs";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === (view === "runs" && parts[1] ? "" : view)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!getAuth()) {
    main.replaceChildren(el("p", {}, "Enter a function key to see the runs."));
    askForAuth();
    return;
  }
  if (view === "runs" && parts[1]) runView(parts[1], live);
  else if (view === "stats") statsView(params, live);
  else if (view === "poison") poisonView(live);
  else runsView(params, live);
  refreshPoisonCount(live);
  // Moving to another view puts the keyboard focus on its heading; a changed filter leaves it in place.
  const shown = parts.slice(0, 2).join("/") || "runs";
  if (focus && shown !== shownView) {
    const heading = main.querySelector("h2");
    if (heading) heading.focus();
  }
  shownView = shown;
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function heading(...text) {
  return el("h2", {tabindex: "-1"}, ...text);
}

function runLink(runId, text = null) {
  return el("a", {href: `#/runs/${encodeURIComponent(runId)}`, class: "run-id", title: runId,
    "data-focus-key": `run-${runId}`}, text ?? runId.slice(0, 12));
}

/** The number of poisoned messages next to "Poison queues" (from GET /status, at most every 15 s). */
let poisonCountAt = 0;

async function refreshPoisonCount(live, {force = true} = {}) {
  if (!force && Date.now() - poisonCountAt < 15000) return;
  poisonCountAt = Date.now();
  try {
    const status = await api("GET", "/status");
    if (live()) showPoisonCount(Object.values(status.poison_queues || {}).reduce((sum, q) => sum + (q.depth || 0), 0));
  } catch {
    // the view's own call reports what is wrong
  }
}

function showPoisonCount(depth) {
  const badge = $("poison-count");
  badge.textContent = depth ? String(depth) : "";
  badge.hidden = !depth;
  badge.setAttribute("aria-label", `${depth} poisoned message${depth === 1 ? "" : "s"}`);
}

// ---- the runs table --------------------------------------------------------------------------------
function sinceTime(since) {
  const now = new Date();
  switch (since) {
    case "1h": return new Date(now - 3600e3).toISOString();
    case "24h": return new Date(now - 86400e3).toISOString();
    case "7d": return new Date(now - 7 * 86400e3).toISOString();
    case "today": return new Date(now.getFullYear(), now.getMonth(), now.getDate()).toISOString();
    default: return "";
  }
}

function select(id, label, options, value, onChange) {
  if (!options.some(([v]) => v === value)) options = [...options, [value, value]]; // a value typed into the URL
  return el("label", {for: id}, label, " ",
    el("select", {id, on: {change: (event) => onChange(event.target.value)}},
      options.map(([v, text]) => el("option", {value: v, selected: v === value}, text))));
}

function runsView(params, live) {
  const filters = {state: params.get("state") || "", since: params.get("since") || "", limit: params.get("limit") || "25"};
  const setFilter = (name, value) => {
    const next = new URLSearchParams({...filters, [name]: value});
    for (const [k, v] of [...next]) if (!v) next.delete(k);
    navigate(`#/runs${next.toString() ? "?" + next : ""}`);
  };
  const cursors = [null]; // cursors[i]: the cursor of page i (null: the newest)
  let page = 0;
  let nextCursor = null;

  const body = el("tbody", {id: "runs-body"});
  const info = el("p", {class: "updated", id: "runs-updated"});
  const newer = el("button", {type: "button", id: "newer", disabled: true,
    on: {click: () => { page -= 1; load(); }}}, "← Newer");
  const older = el("button", {type: "button", id: "older", disabled: true,
    on: {click: () => { cursors[page + 1] = nextCursor; page += 1; load(); }}}, "Older →");
  const pageLabel = el("span", {class: "page"});

  async function load() {
    try {
      const data = await api("GET", "/runs", {query: {state: filters.state, since: sinceTime(filters.since),
        limit: filters.limit, cursor: cursors[page]}});
      if (!live()) return;
      const rows = data.runs.map((run) => row([
        time(run.created_at),
        runLink(run.run_id),
        stateBadge(run.state),
        run.trigger,
        String(run.steps),
        duration(run.duration_seconds),
        run.exit_code === null || run.exit_code === undefined ? "" : String(run.exit_code),
        el("span", {class: "reason"}, run.reason || ""),
      ], {"data-run-id": run.run_id}));
      const what = filters.state ? `${filters.state.replace("_", " ")} runs` : "runs";
      replaceKeepingFocus(body, rows.length ? rows
        : [el("tr", {}, el("td", {colspan: "8", class: "empty"}, `No ${what} in ${sinceLabel(filters.since)}.`))]);
      nextCursor = data.next_cursor;
      newer.disabled = page === 0;
      older.disabled = !nextCursor;
      pageLabel.textContent = `Page ${page + 1}`;
      updated(info);
    } catch (error) {
      if (live()) report(error);
    }
  }

  main.replaceChildren(
    heading("Runs"),
    el("form", {class: "filters", "aria-label": "Filter the runs", on: {submit: (e) => e.preventDefault()}},
      select("filter-state", "State", [["", "any"], ...STATES.map((s) => [s, s.replace("_", " ")])], filters.state,
        (v) => setFilter("state", v)),
      select("filter-since", "Created in", SINCE, filters.since, (v) => setFilter("since", v)),
      select("filter-limit", "Per page", PAGE_SIZES.map((n) => [n, n]), filters.limit, (v) => setFilter("limit", v)),
      el("button", {type: "button", id: "failed-today",
        on: {click: () => navigate("#/runs?state=failed&since=today")}}, "What failed today?")),
    startForm(load),
    el("table", {class: "runs"},
      el("caption", {}, "Runs, newest first (times in your time zone)"),
      el("thead", {}, el("tr", {}, ["Created", "Run", "State", "Trigger", "Steps", "Duration", "Exit code", "Reason"]
        .map((h) => el("th", {scope: "col"}, h)))),
      body),
    el("div", {class: "pager"}, newer, pageLabel, older),
    info,
  );
  load();
  startRefresh(load, REFRESH_MS.runs);
}

function sinceLabel(since) {
  return (SINCE.find(([v]) => v === since) || SINCE[0])[1];
}

/** Start a run from the page: variables as NAME=value lines, an optional timeout. */
function startForm(reload) {
  const variables = el("textarea", {id: "start-variables", rows: "4", spellcheck: "false",
    placeholder: "___Name=Ada\n___Team=ops"});
  const timeout = el("input", {id: "start-timeout", type: "number", min: "1", step: "1", inputmode: "numeric"});
  const button = el("button", {type: "submit", id: "start-run"}, "Start the run");

  async function submit(event) {
    event.preventDefault();
    const body = {variables: {}};
    const lines = variables.value.split("\n");
    for (const [index, line] of lines.entries()) {
      if (!line.trim()) continue;
      const at = line.indexOf("=");
      if (at < 1) {
        say(`line ${index + 1} of the variables: expected NAME=value, got ${JSON.stringify(line.trim())}`, {error: true});
        return;
      }
      body.variables[line.slice(0, at).trim()] = line.slice(at + 1);
    }
    if (timeout.value) body.timeout_seconds = Number(timeout.value);
    button.disabled = true;
    try {
      const started = await api("POST", "/init_job", {body});
      say(`Started run ${started.run_id}.`, {link: {href: `#/runs/${started.run_id}`, text: "Open it"}});
      $("message").setAttribute("data-run-id", started.run_id);
      reload();
    } catch (error) {
      report(error);
    } finally {
      button.disabled = false;
    }
  }

  return el("details", {class: "start"},
    el("summary", {}, "Start a run"),
    el("form", {id: "start-form", on: {submit}},
      el("label", {for: "start-variables"}, "Variables, one NAME=value a line"),
      variables,
      el("label", {for: "start-timeout"}, "Timeout in seconds (optional)"),
      timeout,
      el("p", {class: "hint"}, "The run uses the app's default image and command (DEFAULT_IMAGE, DEFAULT_COMMAND)."),
      button));
}

// ---- one run ---------------------------------------------------------------------------------------
const HIDDEN_DETAILS = new Set(["at", "step", "event", "log_tail"]);

function eventDetails(event) {
  const parts = [];
  for (const [key, value] of Object.entries(event)) {
    if (HIDDEN_DETAILS.has(key) || value === "" || value === null || value === undefined) continue;
    if (Array.isArray(value) && value.length === 0) continue;
    const text = typeof value === "object" ? JSON.stringify(value)
      : (key.endsWith("seconds") && typeof value === "number" ? duration(value) : String(value));
    parts.push(el("span", {class: "detail"}, el("span", {class: "key"}, key), "=", text));
  }
  if (event.log_tail) {
    parts.push(el("details", {class: "tail"}, el("summary", {}, "log tail"), el("pre", {}, event.log_tail)));
  }
  return parts;
}

function stepOutcome(events, step) {
  const mine = events.filter((e) => e.step === step);
  const result = mine.find((e) => e.event === "result");
  if (result) return `exit ${result.exit_code}`;
  const last = mine[mine.length - 1];
  return last ? last.event.replace("_", " ") : "not started";
}

/** The last `count` lines of `text` (a final newline ends a line, it starts none). */
function lastLines(text, count) {
  let position = text.endsWith("\n") ? text.length - 1 : text.length;
  for (let i = 0; i < count; i++) {
    if (position <= 0) return text;
    position = text.lastIndexOf("\n", position - 1);
    if (position < 0) return text;
  }
  return text.slice(position + 1);
}

function runView(runId, live) {
  const summary = el("dl", {class: "summary", id: "run-summary"});
  const cancel = el("button", {type: "button", id: "cancel-run", class: "danger", disabled: true}, "Cancel run");
  const timeline = el("tbody", {id: "timeline-body"});
  const steps = el("tbody", {id: "steps-body"});
  const variables = el("tbody", {id: "variables-body"});
  const logs = el("div", {id: "logs"});
  const info = el("p", {class: "updated"});
  let lastLogs = "";
  const logState = new Map(); // step -> {source, size, text}: what the page has of each step's log
  let loading = Promise.resolve();

  // One load at a time: each asks for what grew since the one before it.
  function load() {
    loading = loading.then(loadOnce);
    return loading;
  }

  async function loadOnce() {
    try {
      const offsets = [...logState].map(([step, s]) => `${step}:${s.source}:${s.size}`).join(",");
      const [status, logData] = await Promise.all([
        api("GET", `/runs/${encodeURIComponent(runId)}`),
        api("GET", `/runs/${encodeURIComponent(runId)}/logs`, {query: {tail: LOG_TAIL, offsets}}),
      ]);
      if (!live()) return;
      render(status, {steps: logData.steps.map(takeLog)});
      updated(info);
      if (TERMINAL_STATES.includes(status.state) && status.cleaned_up) stopRefresh(); // nothing will change
    } catch (error) {
      if (live()) report(error);
    }
  }

  /** A step's answer added to what the page has: appended when it starts where that ended (same source),
   * else in its place (from the start, or cut by the API); the last LOG_TAIL lines are kept. */
  function takeLog(s) {
    const known = logState.get(s.step);
    const continues = known && known.source === s.source && s.offset === known.size;
    const text = lastLines(continues ? known.text + s.text : s.text, LOG_TAIL);
    logState.set(s.step, {source: s.source, size: s.size, text});
    return {step: s.step, source: s.source, text: text.endsWith("\n") ? text.slice(0, -1) : text};
  }

  function render(status, logData) {
    const terminal = TERMINAL_STATES.includes(status.state);
    const requested = status.events.find((e) => e.event === "requested") || {};
    const item = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
    summary.replaceChildren(
      ...item("State", stateBadge(status.state)),
      ...item("Reason", el("span", {id: "run-reason"}, status.reason || "—")),
      ...item("Step", `${status.current_step} of ${status.steps}`),
      ...item("Created", time(requested.created_at), requested.trigger ? ` by ${requested.trigger}` : ""),
      ...item("Deadline", time(requested.deadline)),
      ...item("Containers removed", status.cleaned_up ? "yes" : "not yet"),
    );
    cancel.disabled = terminal;
    cancel.title = terminal ? `The run has ended (${status.state.replace("_", " ")})` : "";

    replaceKeepingFocus(timeline, status.events.map((e) => row([
      time(e.at, {clockOnly: true}), e.step === 0 ? "run" : String(e.step), el("span", {class: `event ev-${e.event}`}, e.event),
      el("td", {class: "details"}, eventDetails(e)),
    ], {"data-event": e.event})));

    steps.replaceChildren(...(status.plan || []).map((plan, index) => row([
      String(index + 1), el("code", {}, plan.image || ""),
      el("code", {}, (plan.command || []).map((arg) => (/[\s"']/.test(arg) ? JSON.stringify(arg) : arg)).join(" ")),
      stepOutcome(status.events, index + 1),
    ])));

    const secrets = new Set((status.secrets || []).map((s) => (typeof s === "string" ? s : s && s.name)).filter(Boolean));
    const names = [...new Set([...Object.keys(status.variables || {}), ...secrets])].sort();
    variables.replaceChildren(...names.map((name) => secrets.has(name)
      ? row([el("code", {}, name), el("td", {class: "secret"}, el("span", {class: "tag"}, "secret"), " value not shown")],
        {"data-variable": name, "data-secret": "true"})
      : row([el("code", {}, name), el("td", {class: "value"}, status.variables[name])], {"data-variable": name})));
    if (!names.length) variables.replaceChildren(row([el("td", {colspan: "2", class: "empty"}, "No variables.")]));

    const text = JSON.stringify(logData.steps);
    if (text !== lastLogs) {
      lastLogs = text;
      const source = {archive: "archived log", live: "live: the container is running", none: "no log was archived"};
      logs.replaceChildren(...(logData.steps.length ? logData.steps.map((s) => el("section", {class: "log", "data-step": s.step},
        el("h4", {}, `Step ${s.step} `, el("span", {class: "source"}, `(${source[s.source] || s.source})`)),
        el("pre", {tabindex: "0", "aria-label": `Log of step ${s.step}`}, s.text || "(empty)")))
        : [el("p", {class: "empty"}, "No step has started yet.")]));
      for (const pre of logs.querySelectorAll("pre")) pre.scrollTop = pre.scrollHeight;
    }
  }

  cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel run ${runId}? Its containers are stopped and removed.`)) return;
    cancel.disabled = true;
    try {
      const outcome = await api("DELETE", `/runs/${encodeURIComponent(runId)}`);
      say(`Run ${outcome.run_id} ${outcome.state}.`);
    } catch (error) {
      report(error);
    }
    load();
    startRefresh(load, REFRESH_MS.run);
  });

  const section = (title, ...content) => el("section", {}, el("h3", {}, title), ...content);
  const headers = (...names) => el("thead", {}, el("tr", {}, names.map((h) => el("th", {scope: "col"}, h))));
  main.replaceChildren(
    el("p", {class: "back"}, el("a", {href: "#/runs"}, "← All runs")),
    heading("Run ", el("code", {id: "run-id"}, runId)),
    summary,
    el("p", {}, cancel),
    section("Timeline", el("table", {class: "timeline"},
      el("caption", {}, "Every event of the run, oldest first (times in your time zone)"),
      headers("Time", "Step", "Event", "Details"), timeline)),
    section("Steps", el("table", {class: "steps"}, el("caption", {}, "The plan: one container per step"),
      headers("Step", "Image", "Command", "Outcome"), steps)),
    section("Variables", el("table", {class: "variables"},
      el("caption", {}, "The run's variables after its latest step (secret ones by name only)"),
      headers("Name", "Value"), variables)),
    section("Logs", logs),
    info,
  );
  load();
  startRefresh(load, REFRESH_MS.run);
}

// ---- stats -----------------------------------------------------------------------------------------
function statsView(params, live) {
  const days = params.get("days") || "7";
  const tiles = el("dl", {class: "tiles", id: "stats-tiles"});
  const chart = el("figure", {class: "chart-box", id: "stats-chart"});
  const data = el("div", {id: "stats-table"});
  const info = el("p", {class: "updated"});
  const order = ["succeeded", "failed", "timed_out", "cancelled", "running", "deploying", "queued"];

  async function load() {
    try {
      const stats = await api("GET", "/stats", {query: {days}});
      if (!live()) return;
      const rate = stats.success_rate === null ? "—" : `${(stats.success_rate * 100).toFixed(1)} %`;
      const tile = (term, value, id = null) => el("div", {class: "tile"}, el("dt", {}, term), el("dd", {id}, value));
      tiles.replaceChildren(
        tile("Runs", String(stats.total), "stat-total"),
        tile("Success rate (ended runs)", rate, "stat-success"),
        tile("Duration p50", duration(stats.duration_seconds.p50) || "—", "stat-p50"),
        tile("Duration p95", duration(stats.duration_seconds.p95) || "—", "stat-p95"),
        ...order.filter((s) => stats.by_state[s]).map((s) => tile(s.replace("_", " "), String(stats.by_state[s]))),
      );
      const title = `Runs per day over the last ${stats.days.length} days (UTC), stacked by state`;
      chart.replaceChildren(
        runsPerDayChart(stats.days, order, title),
        el("figcaption", {}, title, el("ul", {class: "legend"},
          order.map((s) => el("li", {}, el("span", {class: `swatch st-${s}`, "aria-hidden": "true"}), s.replace("_", " "))))),
      );
      data.replaceChildren(el("details", {}, el("summary", {}, "The chart's numbers"),
        table("Runs per day by state", ["Day (UTC)", "Total", ...order.map((s) => s.replace("_", " "))],
          stats.days.map((d) => row([d.date, String(d.total), ...order.map((s) => String(d.by_state[s] || 0))])))));
      updated(info);
    } catch (error) {
      if (live()) report(error);
    }
  }

  main.replaceChildren(
    heading("Stats"),
    el("form", {class: "filters", on: {submit: (e) => e.preventDefault()}},
      select("stats-days", "Days", [["1", "today"], ["7", "7 days"], ["14", "14 days"], ["30", "30 days"]], days,
        (v) => navigate(`#/stats?days=${v}`))),
    tiles, chart, data, info,
  );
  load();
  startRefresh(load, REFRESH_MS.stats);
}

// ---- poison queues ---------------------------------------------------------------------------------
function poisonView(live) {
  const sections = Object.fromEntries(QUEUES.map((q) => [q, el("div", {id: `poison-${q}`})]));
  const info = el("p", {class: "updated"});

  async function act(queue, message, action) {
    const label = `message ${message.id} of ${queue}-poison` + (message.run_id ? ` (run ${message.run_id})` : "");
    if (action === "drop" && !window.confirm(`Drop ${label}? It is deleted; its run, if still open, ends failed.`)) {
      return;
    }
    try {
      const path = `/poison/${queue}/${encodeURIComponent(message.id)}`;
      const outcome = action === "drop" ? await api("DELETE", path) : await api("POST", `${path}/requeue`);
      const reopened = outcome.reopened ? "; its run was reopened" : "";
      say(`Message ${outcome.message_id} ${outcome.action}${action === "requeue" ? ` to ${queue}` : ""}${reopened}.`,
        outcome.run_id ? {link: {href: `#/runs/${outcome.run_id}`, text: "Open its run"}} : {});
    } catch (error) {
      report(error);
    }
    load();
  }

  async function load() {
    try {
      const lists = await Promise.all(QUEUES.map((q) => api("GET", `/poison/${q}`)));
      if (!live()) return;
      showPoisonCount(lists.reduce((sum, list) => sum + list.depth, 0));
      lists.forEach((list, index) => {
        const queue = QUEUES[index];
        const rows = list.messages.map((m) => row([
          el("code", {}, m.id),
          m.run_id ? runLink(m.run_id) : "—",
          m.step === null ? "—" : String(m.step),
          el("span", {class: "error-text"}, m.error),
          duration(m.age_seconds),
          el("td", {class: "actions"},
            el("button", {type: "button", class: "requeue", "data-focus-key": `requeue-${m.id}`,
              "aria-label": `Requeue message ${m.id}`, on: {click: () => act(queue, m, "requeue")}}, "Requeue"),
            " ",
            el("button", {type: "button", class: "danger drop", "data-focus-key": `drop-${m.id}`,
              "aria-label": `Drop message ${m.id}`, on: {click: () => act(queue, m, "drop")}}, "Drop")),
        ], {"data-message-id": m.id}));
        replaceKeepingFocus(sections[queue],
          el("h3", {}, `${list.queue} `, el("span", {class: "depth"}, `(${list.depth} message${list.depth === 1 ? "" : "s"})`)),
          list.truncated ? el("p", {class: "hint"}, `Showing the first ${list.messages.length} of ${list.depth}.`) : null,
          rows.length ? table(`Messages in ${list.queue}`, ["Message", "Run", "Step", "Error", "Age", "Actions"], rows,
            {class: "poison"}) : el("p", {class: "empty"}, "No messages."));
      });
      updated(info);
    } catch (error) {
      if (live()) report(error);
    }
  }

  main.replaceChildren(
    heading("Poison queues"),
    el("p", {class: "hint"}, "A message lands here after failing ", el("code", {}, "maxDequeueCount"),
      " times, or at once when it cannot be decoded. Requeue puts it back on its queue (reopening the run the " +
      "poisoning ended); drop deletes it (its run, if still open, ends failed)."),
    ...QUEUES.map((q) => sections[q]),
    info,
  );
  load();
  startRefresh(load, REFRESH_MS.poison);
}

// ---- start -----------------------------------------------------------------------------------------
function start() {
  $("api-base").textContent = API_BASE;
  $("openapi-link").setAttribute("href", `${API_BASE}/openapi.json`);
  setUpAuth();
  $("auto-refresh").addEventListener("change", () => {
    updated();
    if ($("auto-refresh").checked) {
      if (refreshTask) refreshTask.task();
      schedule();
    } else {
      clearTimeout(refreshTimer);
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && refreshTask && $("auto-refresh").checked) refreshTask.task();
  });
  window.addEventListener("hashchange", () => route({focus: true}));
  route();
}

start();

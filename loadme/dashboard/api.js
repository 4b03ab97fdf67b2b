// The app's HTTP API, called from the page with the user's function key.
//
// The key lives in sessionStorage only (this tab, until it is closed or "Forget key"), and goes in the
// x-functions-key header, never in a URL. With Microsoft Entra ID (App Service authentication) in front
// of the app, the key is still required (infra keeps authLevel FUNCTION behind Entra: both are checked);
// the browser's Entra session cookie goes along with these same-origin calls by itself.

import {oneLine} from "./dom.js";

const AUTH_ITEM = "loadme.dashboard.auth";

/** The API's base path: the dashboard is served at <base>/dashboard/ (the Functions route prefix). */
export const API_BASE = (() => {
  const match = location.pathname.match(/^(.*)\/dashboard(?:\/.*)?$/);
  return match ? match[1] : "/api";
})();

/** {key}; null until the user gave one. */
export function getAuth() {
  try {
    const auth = JSON.parse(sessionStorage.getItem(AUTH_ITEM) || "null");
    return auth && typeof auth.key === "string" && auth.key ? auth : null;
  } catch {
    return null;
  }
}

export function useKey(key) {
  sessionStorage.setItem(AUTH_ITEM, JSON.stringify({key}));
}

export function forgetAuth() {
  sessionStorage.removeItem(AUTH_ITEM);
}

/** Where App Service authentication signs a user in with Microsoft and sends them back here. */
export function entraLoginUrl() {
  return `/.auth/login/aad?post_login_redirect_uri=${encodeURIComponent(location.pathname)}`;
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }

  get unauthorized() {
    return this.status === 401 || this.status === 403;
  }
}

/** Call the API; the parsed JSON answer, or an ApiError whose message is one line:
 * "<METHOD> <path>: <status> <the API's error text>". */
export async function api(method, path, {query = {}, body} = {}) {
  const url = new URL(API_BASE + path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  const headers = {Accept: "application/json"};
  const auth = getAuth();
  if (auth) headers["x-functions-key"] = auth.key;
  // redirect: "manual": an expired Microsoft sign-in answers with a redirect to the login page,
  // which a fetch must not follow (another origin); it is reported as "not signed in" instead.
  const init = {method, headers, credentials: "same-origin", redirect: "manual", cache: "no-store"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const label = `${method} ${url.pathname.slice(API_BASE.length) || "/"}`;
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(`${label}: no answer from the API (${oneLine(error.message)})`, 0);
  }
  if (response.type === "opaqueredirect") {
    throw new ApiError(`${label}: not signed in (the API redirected to a sign-in page)`, 401);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const why = data && typeof data.error === "string" ? data.error
      : (text ? text.slice(0, 300) : (response.statusText || "no details"));
    throw new ApiError(`${label}: ${response.status} ${oneLine(why)}`, response.status);
  }
  return data;
}

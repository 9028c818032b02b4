// Talking to the service: the API key (kept in localStorage, sent as X-API-Key), JSON and
// multipart requests, and every error answer turned into a message for people.
"use strict";

const KEY_STORAGE = "faceServiceApiKey";

class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

const api = {
  key() { return localStorage.getItem(KEY_STORAGE) || ""; },
  setKey(key) {
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  },

  async request(method, path, { form, json, binary } = {}) {
    const headers = {};
    const key = api.key();
    if (key) headers["X-API-Key"] = key;
    let body;
    if (form) body = form;  // the browser sets multipart's boundary
    if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
    let response;
    try {
      response = await fetch(path, { method, headers, body });
    } catch (error) {
      throw new ApiError(0, "The service cannot be reached. Is it running?", String(error));
    }
    if (response.ok) {
      if (response.status === 204) return null;
      return binary ? response.blob() : response.json();
    }
    let detail = null;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, explain(response, detail), detail);
  },

  get(path) { return api.request("GET", path); },
  post(path, options) { return api.request("POST", path, options); },
  patch(path, json) { return api.request("PATCH", path, { json }); },
  del(path) { return api.request("DELETE", path); },
};

function detailText(detail) {
  if (Array.isArray(detail)) {
    // FastAPI's validation list: say which field and why.
    return detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  return detail ? String(detail) : "";
}

function explain(response, detail) {
  const text = detailText(detail);
  const retry = response.headers.get("Retry-After");
  switch (response.status) {
    case 400: return `This could not be read: ${text}`;
    case 401: return "The service needs an API key: enter one above.";
    case 403: return `Your API key is not allowed to do this (${text || "missing scope"}).`;
    case 404: return `Not found: ${text}`;
    case 409: return `Already exists: ${text}`;
    case 413: return `Too large: ${text}`;
    case 415: return `Not an image: ${text}`;
    case 422:
      if (Array.isArray(detail)) return `Please check the input: ${text}`;
      return /face/i.test(text) ? `No usable face: ${text}` : `Cannot use this: ${text}`;
    case 429: return `Too many requests: wait ${retry || "a few"} seconds and try again.`;
    case 503: return `The service is busy or starting up: try again in ${retry || "a few"} seconds. (${text})`;
    default: return `The service answered ${response.status}: ${text || response.statusText}`;
  }
}

function stripZeros(value, digits) { return Number(value).toFixed(digits); }

window.api = api;
window.ApiError = ApiError;
window.stripZeros = stripZeros;

// The case pages' calls to the JSON API: the CSRF header on every change, a 401 sends the
// browser to the login page, an error body becomes an Error with .status and .code.
"use strict";
const BMC = (() => {
  const API = document.body.dataset.api || "/api/v1";

  function cookie(name) {
    const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
  }

  async function call(method, path, body, isForm) {
    const headers = { "X-CSRF-Token": cookie("bmc_csrf") };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      if (isForm) init.body = body;
      else { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    }
    const response = await fetch(API + path, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (response.status === 401 && !path.startsWith("/auth/login")) {
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname));
    }
    if (!response.ok) {
      const err = (data && data.error) || {};
      const error = new Error(err.message || `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.code = err.code || "";
      throw error;
    }
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  async function whoami(target) {
    const me = await call("GET", "/auth/me");
    if (target) {
      target.textContent = me.name + (me.role === "admin" ? " (admin)" : "");
    }
    const out = document.getElementById("logout");
    if (out) {
      out.hidden = !me.auth;
      out.onclick = async () => { await call("POST", "/auth/logout", {}); location.assign("/login"); };
    }
    return me;
  }

  return { api: API, call, cookie, el, whoami };
})();

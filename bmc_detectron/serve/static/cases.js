// The case list: search by id, status, dates; count new images as a case; admins add users.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);

  async function load() {
    const params = new URLSearchParams();
    const pairs = { search: "search-text", status: "search-status", since: "search-since", until: "search-until" };
    for (const [key, id] of Object.entries(pairs)) if ($(id).value) params.set(key, $(id).value);
    const rows = $("case-rows");
    try {
      const data = await BMC.call("GET", "/cases?" + params.toString());
      rows.replaceChildren(...data.cases.map((c) => {
        const link = BMC.el("a", { href: "/review/" + encodeURIComponent(c.case_id), text: c.case_id });
        const status = BMC.el("span", { class: "status status-" + c.status, text: c.status.replace("_", " ") });
        return BMC.el("tr", { "data-case": c.case_id },
          BMC.el("td", {}, link), BMC.el("td", { text: String(c.version) }),
          BMC.el("td", {}, status), BMC.el("td", { text: c.created.replace("T", " ").replace("Z", "") }));
      }));
      $("case-count").textContent = `${data.cases.length} case(s)`;
    } catch (e) {
      $("case-count").textContent = e.message;
    }
  }

  $("search").addEventListener("submit", (e) => { e.preventDefault(); load(); });

  $("new-case").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("case_id", $("new-case-id").value.trim());
    for (const file of $("new-case-files").files) form.append("files", file, file.name);
    $("new-case-count").disabled = true;
    $("new-case-message").textContent = "counting...";
    try {
      const made = await BMC.call("POST", "/cases", form, true);
      location.assign("/review/" + encodeURIComponent(made.case_id));
    } catch (err) {
      $("new-case-message").textContent = err.message;
    } finally {
      $("new-case-count").disabled = false;
    }
  });

  $("new-user").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const user = await BMC.call("POST", "/users", {
        name: $("new-user-name").value, password: $("new-user-password").value, role: $("new-user-role").value,
      });
      $("new-user-message").textContent = `added ${user.role} ${user.name}`;
    } catch (err) {
      $("new-user-message").textContent = err.message;
    }
  });

  BMC.whoami($("user-name")).then((me) => { $("admin").hidden = me.role !== "admin"; load(); });
})();

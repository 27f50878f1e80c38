// The case list: search by id, status, dates (admins: lab); each case's lab; count new images as a
// case; admins add users.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);

  const labs = new Set(); // the labs seen in the list: the filter's and the new user's choices

  async function load() {
    const params = new URLSearchParams();
    const pairs = { search: "search-text", status: "search-status", since: "search-since", until: "search-until" };
    if (!$("lab-filter").hidden) pairs.lab = "search-lab";
    for (const [key, id] of Object.entries(pairs)) if ($(id).value.trim()) params.set(key, $(id).value.trim());
    const rows = $("case-rows");
    try {
      const data = await BMC.call("GET", "/cases?" + params.toString());
      rows.replaceChildren(...data.cases.map((c) => {
        const link = BMC.el("a", { href: "/review/" + encodeURIComponent(c.case_id), text: c.case_id });
        const status = BMC.el("span", { class: "status status-" + c.status, text: c.status.replace("_", " ") });
        return BMC.el("tr", { "data-case": c.case_id, "data-lab": c.lab },
          BMC.el("td", {}, link), BMC.el("td", { text: String(c.version) }),
          BMC.el("td", { class: "lab", text: c.lab }),
          BMC.el("td", {}, status), BMC.el("td", { text: c.created.replace("T", " ").replace("Z", "") }));
      }));
      for (const c of data.cases) labs.add(c.lab);
      $("lab-names").replaceChildren(...[...labs].sort().map((lab) => BMC.el("option", { value: lab })));
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
        lab: $("new-user-lab").value.trim() || null,
      });
      $("new-user-message").textContent = `added ${user.role} ${user.name} (lab ${user.lab || "none: every lab"})`;
    } catch (err) {
      $("new-user-message").textContent = err.message;
    }
  });

  BMC.whoami($("user-name")).then((me) => {
    const admin = me.role === "admin";
    $("admin").hidden = !admin;
    $("lab-filter").hidden = !admin; // a reviewer sees one lab: nothing to filter
    load();
  });
})();

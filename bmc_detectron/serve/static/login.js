// The login page: name and password -> session cookie -> back where the user came from.
"use strict";
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = document.getElementById("login-message");
  message.textContent = "";
  try {
    await BMC.call("POST", "/auth/login", {
      name: document.getElementById("login-name").value,
      password: document.getElementById("login-password").value,
    });
    const next = new URLSearchParams(location.search).get("next") || "/";
    location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
  } catch (e) {
    message.textContent = e.message;
  }
});

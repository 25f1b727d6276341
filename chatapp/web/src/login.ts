// The login screen: log in or create an account with email and password, or continue
// with one of the server's single sign-on providers.
import { ApiError, login, register } from "./api";
import type { Provider } from "./api";
import { h } from "./dom";
import { countdown, describe } from "./notice";

/** Show the login form in `root`, with `notice` in its error line; `onLoggedIn` runs
 * once a login or a registration succeeds. */
export function showLogin(root: HTMLElement, providers: Provider[], notice: string, onLoggedIn: () => Promise<void>): void {
  let mode: "login" | "register" = "login";
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "login-error" }, notice);
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true, placeholder: "you@example.com" });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true, minlength: 8 });
  const displayName = h("input", { type: "text", name: "display_name", autocomplete: "nickname", placeholder: "optional" });
  const nameRow = h("label", { hidden: true }, "Name", displayName);
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "login-submit" }, "Log in");
  const toggle = h("button", { type: "button", class: "link", "data-testid": "login-toggle" }, "Create an account");
  const heading = h("h1", {}, "Log in to ChatApp");

  const setMode = (m: typeof mode) => {
    mode = m;
    const reg = m === "register";
    heading.textContent = reg ? "Create your account" : "Log in to ChatApp";
    submit.textContent = reg ? "Create account" : "Log in";
    toggle.textContent = reg ? "I already have an account" : "Create an account";
    nameRow.hidden = !reg;
    password.autocomplete = reg ? "new-password" : "current-password";
    error.textContent = "";
  };
  toggle.addEventListener("click", () => setMode(mode === "login" ? "register" : "login"));

  const form = h(
    "form",
    { class: "login-card", "data-testid": "login-form" },
    h("div", { class: "brand" }, "ChatApp"),
    heading,
    h("label", {}, "Email", email),
    h("label", {}, "Password", password),
    nameRow,
    error,
    submit,
    toggle,
    providers.length ? h("div", { class: "divider" }, "or") : null,
    ...providers.map((p) =>
      h("a", { class: "button provider", href: p.login_url, "data-testid": `provider-${p.name}` }, `Continue with ${p.display_name}`),
    ),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      if (mode === "register") await register(email.value.trim(), password.value, displayName.value.trim());
      else await login(email.value.trim(), password.value);
      await onLoggedIn();
    } catch (err) {
      error.textContent = describe(err, mode === "login" ? "Wrong email or password." : "");
      if (err instanceof ApiError && err.retryAfter) countdown(error, err.retryAfter, (s) => `Too many attempts. Try again in ${s} s.`);
    } finally {
      submit.disabled = false;
    }
  });
  root.replaceChildren(h("div", { class: "login-page" }, form));
  email.focus();
}

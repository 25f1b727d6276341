// ChatApp's web chat page: log in, conversations in a sidebar, streamed answers.
// This module boots it: the login screen when the server has accounts and nobody is
// logged in, else the chat screen.
import "./style.css";
import { detectAuth, json, session } from "./api";
import type { Provider } from "./api";
import { ChatView } from "./chat";
import { h } from "./dom";
import { showLogin } from "./login";
import type { CurrentUser } from "./state";
import { shareToken, showShared } from "./transfer";

const app = document.querySelector<HTMLDivElement>("#app")!;

async function boot(notice = ""): Promise<void> {
  const token = shareToken(); // a share link: its read-only page, no login
  if (token) return showShared(app, token);
  let providers: Provider[] | null;
  try {
    providers = await detectAuth();
  } catch {
    app.replaceChildren(h("p", { class: "boot-error" }, "ChatApp cannot be reached. Retrying…"));
    setTimeout(() => boot(notice), 3000);
    return;
  }
  // a reload, a new tab or an OIDC login's landing: the refresh cookie logs the page in
  if (providers !== null && !session.tokens) await session.refresh();
  if (providers !== null && !session.tokens) {
    showLogin(app, providers, notice, () => boot());
    return;
  }
  let me: CurrentUser | null = null;
  if (providers !== null) {
    try {
      me = await json("api/me");
    } catch {
      if (!session.tokens) return; // onLoggedOut showed the login screen
    }
  }
  new ChatView(app, me, () => boot()).mount();
}

session.onLoggedOut = () => {
  void boot("Your session has expired. Log in again; what you typed is kept.");
};

void boot();

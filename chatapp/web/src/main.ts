// ChatApp's web chat page: log in, conversations in a sidebar, streamed answers.
import "./style.css";
import { ApiError, detectAuth, json, login, logout, register, session, StreamDropped, streamTurn } from "./api";
import type { Provider, SseEvent } from "./api";
import { copyText, h, relativeTime } from "./dom";
import { renderMarkdown } from "./markdown";

interface Conversation {
  id: string;
  title: string;
  updated_at: string;
}

interface Source {
  title?: string;
  url?: string;
  snippet?: string;
  text?: string;
  score?: number;
}

interface Message {
  id?: string;
  seq?: number;
  role: "user" | "assistant" | "system";
  content: string;
  status?: string;
  finish_reason?: string | null;
  model?: string | null;
  prompt_tokens?: number;
  completion_tokens?: number;
  sources?: Source[];
  fallback?: unknown;
  error?: string;
  el?: HTMLElement;
}

const app = document.querySelector<HTMLDivElement>("#app")!;
const PAGE = 20;
const store = {
  get: (k: string) => localStorage.getItem(`chatapp.${k}`) ?? "",
  set: (k: string, v: string) =>
    v ? localStorage.setItem(`chatapp.${k}`, v) : localStorage.removeItem(`chatapp.${k}`),
};

// ---------------------------------------------------------------------------- boot

async function boot(notice = ""): Promise<void> {
  session.takeFragmentTokens();
  let providers: Provider[] | null;
  try {
    providers = await detectAuth();
  } catch {
    app.replaceChildren(h("p", { class: "boot-error" }, "ChatApp cannot be reached. Retrying…"));
    setTimeout(() => boot(notice), 3000);
    return;
  }
  if (providers !== null && !session.tokens) {
    showLogin(providers, notice);
    return;
  }
  let me: { email?: string; display_name?: string } | null = null;
  if (providers !== null) {
    try {
      me = await json("api/me");
    } catch {
      if (!session.tokens) return; // onLoggedOut showed the login screen
    }
  }
  new ChatView(me).mount();
}

session.onLoggedOut = () => {
  void boot("Your session has expired. Log in again; what you typed is kept.");
};

// --------------------------------------------------------------------------- login

function showLogin(providers: Provider[], notice = ""): void {
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
      await boot();
    } catch (err) {
      error.textContent = describe(err, mode === "login" ? "Wrong email or password." : "");
      if (err instanceof ApiError && err.retryAfter) countdown(error, err.retryAfter, (s) => `Too many attempts. Try again in ${s} s.`);
    } finally {
      submit.disabled = false;
    }
  });
  app.replaceChildren(h("div", { class: "login-page" }, form));
  email.focus();
}

function describe(err: unknown, unauthorized = ""): string {
  if (err instanceof ApiError) {
    if (err.status === 401 && unauthorized) return unauthorized;
    if (err.status === 409) return err.message || "That already exists.";
    if (err.status === 429) return `Too many requests. Try again in ${err.retryAfter ?? 1} s.`;
    return err.message;
  }
  if (err instanceof TypeError) return "ChatApp cannot be reached; check your connection.";
  return String(err);
}

function countdown(el: HTMLElement, seconds: number, text: (s: number) => string, done?: () => void): () => void {
  let left = Math.ceil(seconds);
  el.textContent = text(left);
  const timer = setInterval(() => {
    left -= 1;
    if (left <= 0) {
      clearInterval(timer);
      done?.();
    } else {
      el.textContent = text(left);
    }
  }, 1000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------------------- chat

class ChatView {
  private conversationId: string | null = new URLSearchParams(location.search).get("c");
  private messages: Message[] = [];
  private hasMore = false;
  private cursor: string | null = null;
  private query = "";
  private controller: AbortController | null = null;
  private blockedUntil = 0;
  private stopNotice: (() => void) | null = null;
  private renderQueued = new Set<Message>();

  private layout = h("div", { class: "layout" });
  private list = h("ul", { class: "conversations", "data-testid": "conversation-list" });
  private more = h("button", { class: "more", hidden: true, "data-testid": "load-more" }, "Load more");
  private search = h("input", { type: "search", placeholder: "Search chats", "aria-label": "Search chats", "data-testid": "search" });
  private title = h("h1", { class: "title", "data-testid": "chat-title" }, "New chat");
  private modelSelect = h("select", { "aria-label": "Model", "data-testid": "model-picker" });
  private kbSelect = h("select", { "aria-label": "Knowledge base", "data-testid": "kb-picker" });
  private kbLabel = h("label", { class: "kb", hidden: true }, "KB", this.kbSelect);
  private log = h("div", { class: "messages", role: "log", "aria-live": "polite", "data-testid": "messages" });
  private notice = h("div", { class: "notice", hidden: true, role: "status", "data-testid": "notice" });
  private input = h("textarea", { rows: 1, placeholder: "Message ChatApp (Enter sends, Shift+Enter adds a line)", "aria-label": "Message", "data-testid": "composer" });
  private send = h("button", { type: "submit", class: "primary", "data-testid": "send" }, "Send");
  private stop = h("button", { type: "button", class: "danger", hidden: true, "data-testid": "stop" }, "Stop");

  constructor(private me: { email?: string; display_name?: string } | null) {}

  mount(): void {
    const account = this.me
      ? h(
          "div",
          { class: "account" },
          h("span", { class: "who", "data-testid": "who" }, this.me.display_name || this.me.email || ""),
          h("button", { class: "link", "data-testid": "logout", onclick: () => this.logout() }, "Log out"),
        )
      : h("div", { class: "account muted" }, "Local user (accounts are off)");
    const sidebar = h(
      "aside",
      { class: "sidebar" },
      h("button", { class: "primary new", "data-testid": "new-chat", onclick: () => this.newChat() }, "+ New chat"),
      this.search,
      this.list,
      this.more,
      account,
    );
    const composer = h("form", { class: "composer" }, this.input, this.stop, this.send);
    const main = h(
      "main",
      { class: "chat" },
      h(
        "header",
        { class: "topbar" },
        h("button", { class: "menu icon", "aria-label": "Conversations", "data-testid": "menu", onclick: () => this.layout.classList.toggle("drawer-open") }, "☰"),
        this.title,
        this.kbLabel,
        this.modelSelect,
      ),
      this.log,
      this.notice,
      composer,
    );
    const scrim = h("div", { class: "scrim", onclick: () => this.layout.classList.remove("drawer-open") });
    this.layout.replaceChildren(sidebar, scrim, main);
    app.replaceChildren(this.layout);

    composer.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.submit();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        void this.submit();
      }
    });
    this.input.addEventListener("input", () => {
      store.set(`draft.${this.conversationId ?? "new"}`, this.input.value);
      this.autosize();
    });
    this.stop.addEventListener("click", () => this.controller?.abort());
    this.more.addEventListener("click", () => void this.loadConversations(false));
    let searchTimer = 0;
    this.search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = window.setTimeout(() => {
        this.query = this.search.value.trim();
        void this.loadConversations(true);
      }, 250);
    });
    this.modelSelect.addEventListener("change", () => store.set("model", this.modelSelect.value));

    void this.loadConversations(true);
    void this.loadModels();
    void this.loadKnowledgeBases();
    if (this.conversationId) void this.open(this.conversationId);
    else this.restoreDraft();
    this.input.focus();
  }

  // -- sidebar ---------------------------------------------------------------------

  private async loadConversations(reset: boolean): Promise<void> {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (!reset && this.cursor) params.set("cursor", this.cursor);
    if (this.query) params.set("q", this.query);
    try {
      const page = await json<{ items: Conversation[]; next_cursor: string | null }>(`api/conversations?${params}`);
      if (reset) this.list.replaceChildren();
      for (const c of page.items) {
        this.list.append(this.conversationItem(c));
        if (c.id === this.conversationId && c.title) this.title.textContent = c.title;
      }
      if (reset && !page.items.length) {
        this.list.append(h("li", { class: "empty muted" }, this.query ? "No chat matches." : "No chats yet."));
      }
      this.cursor = page.next_cursor;
      this.more.hidden = !page.next_cursor;
    } catch (err) {
      this.showNotice("error", `Could not load your chats: ${describe(err)}`);
    }
  }

  private conversationItem(c: Conversation): HTMLLIElement {
    const label = h("button", { class: "open", title: c.title || "New chat", onclick: () => void this.open(c.id) },
      h("span", { class: "name", "data-testid": "conversation-title" }, c.title || "New chat"),
      h("span", { class: "when" }, relativeTime(c.updated_at)),
    );
    const li = h("li", { "data-id": c.id, "data-testid": "conversation", class: c.id === this.conversationId ? "active" : "" }, label);
    const actions = h("span", { class: "actions" },
      h("button", { class: "icon", title: "Rename", "aria-label": "Rename", "data-testid": "rename", onclick: () => this.rename(li, c) }, "✎"),
      h("button", { class: "icon", title: "Delete", "aria-label": "Delete", "data-testid": "delete", onclick: () => this.confirmDelete(li, c) }, "✕"),
    );
    li.append(actions);
    return li;
  }

  private rename(li: HTMLLIElement, c: Conversation): void {
    const field = h("input", { class: "rename-input", value: c.title, "aria-label": "New title", "data-testid": "rename-input", maxlength: 200 });
    let finished = false; // Enter, Escape and blur each end the edit: only the first counts
    const restore = () => {
      if (li.isConnected) li.replaceWith(this.conversationItem(c));
    };
    const save = async () => {
      if (finished) return;
      finished = true;
      const title = field.value.trim();
      if (!title || title === c.title) return restore();
      try {
        const updated = await json<Conversation>(`api/conversations/${c.id}`, { method: "PATCH" }, { title });
        c.title = updated.title;
        if (c.id === this.conversationId) this.title.textContent = updated.title;
      } catch (err) {
        this.showNotice("error", `Rename failed: ${describe(err)}`);
      }
      restore();
    };
    field.addEventListener("keydown", (e) => {
      if (e.key === "Enter") void save();
      if (e.key === "Escape") {
        finished = true;
        restore();
      }
    });
    field.addEventListener("blur", () => void save(), { once: true });
    li.replaceChildren(field);
    field.focus();
    field.select();
  }

  private confirmDelete(li: HTMLLIElement, c: Conversation): void {
    li.replaceChildren(
      h("span", { class: "confirm" }, `Delete “${c.title || "New chat"}”?`),
      h("span", { class: "actions shown" },
        h("button", { class: "danger small", "data-testid": "confirm-delete", onclick: () => void this.remove(li, c) }, "Delete"),
        h("button", { class: "small", onclick: () => li.replaceWith(this.conversationItem(c)) }, "Cancel"),
      ),
    );
  }

  private async remove(li: HTMLLIElement, c: Conversation): Promise<void> {
    try {
      await json(`api/conversations/${c.id}`, { method: "DELETE" });
      li.remove();
      store.set(`draft.${c.id}`, "");
      if (c.id === this.conversationId) this.newChat();
    } catch (err) {
      this.showNotice("error", `Delete failed: ${describe(err)}`);
      li.replaceWith(this.conversationItem(c));
    }
  }

  private markActive(): void {
    for (const li of this.list.querySelectorAll("li")) {
      li.classList.toggle("active", li.dataset.id === this.conversationId);
    }
  }

  // -- models and knowledge bases ------------------------------------------------

  private async loadModels(): Promise<void> {
    try {
      const models = await json<{ data: { id: string }[] }>("v1/models");
      const saved = store.get("model") || "auto";
      this.modelSelect.replaceChildren(
        h("option", { value: "auto" }, "auto"),
        ...models.data.map((m) => h("option", { value: m.id }, m.id)),
      );
      this.modelSelect.value = [...this.modelSelect.options].some((o) => o.value === saved) ? saved : "auto";
    } catch {
      this.modelSelect.hidden = true;
    }
  }

  /** Shown only when the server offers knowledge bases (GET /api/knowledge-bases). */
  private async loadKnowledgeBases(): Promise<void> {
    try {
      const r = await json<{ items?: { id: string; name: string }[] } | { id: string; name: string }[]>("api/knowledge-bases");
      const items = Array.isArray(r) ? r : (r.items ?? []);
      if (!items.length) return;
      this.kbSelect.replaceChildren(
        h("option", { value: "" }, "No knowledge base"),
        ...items.map((kb) => h("option", { value: kb.id }, kb.name)),
      );
      this.kbSelect.value = store.get("kb");
      this.kbSelect.addEventListener("change", () => store.set("kb", this.kbSelect.value));
      this.kbLabel.hidden = false;
    } catch {
      this.kbLabel.hidden = true; // not offered (404) or not allowed
    }
  }

  // -- conversation view -------------------------------------------------------------

  private newChat(): void {
    if (this.controller) return;
    this.conversationId = null;
    this.messages = [];
    this.hasMore = false;
    this.title.textContent = "New chat";
    this.renderMessages();
    history.replaceState(null, "", location.pathname);
    this.markActive();
    this.restoreDraft();
    this.layout.classList.remove("drawer-open");
    this.input.focus();
  }

  private async open(id: string): Promise<void> {
    if (this.controller) return;
    this.layout.classList.remove("drawer-open");
    try {
      const detail = await json<Conversation & { messages: Message[]; has_more: boolean }>(`api/conversations/${id}?limit=50`);
      this.conversationId = id;
      this.messages = detail.messages;
      this.hasMore = detail.has_more;
      this.title.textContent = detail.title || "New chat";
      history.replaceState(null, "", `${location.pathname}?c=${id}`);
      this.renderMessages();
      this.markActive();
      this.restoreDraft();
      this.hideNotice();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        this.newChat();
        return;
      }
      this.showNotice("error", `Could not open the chat: ${describe(err)}`);
    }
  }

  private async loadEarlier(): Promise<void> {
    const first = this.messages[0]?.seq;
    if (!this.conversationId || first === undefined) return;
    const detail = await json<{ messages: Message[]; has_more: boolean }>(
      `api/conversations/${this.conversationId}?limit=50&before=${first}`,
    );
    this.messages = [...detail.messages, ...this.messages];
    this.hasMore = detail.has_more;
    const height = this.log.scrollHeight;
    this.renderMessages(false);
    this.log.scrollTop = this.log.scrollHeight - height;
  }

  private restoreDraft(): void {
    this.input.value = store.get(`draft.${this.conversationId ?? "new"}`);
    this.autosize();
  }

  private autosize(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 240)}px`;
  }

  private renderMessages(scroll = true): void {
    this.log.replaceChildren();
    if (this.hasMore) {
      this.log.append(h("button", { class: "earlier small", onclick: () => void this.loadEarlier() }, "Load earlier messages"));
    }
    if (!this.messages.length) {
      this.log.append(h("div", { class: "welcome" }, h("h2", {}, "How can I help?"), h("p", { class: "muted" }, "Answers stream in as they are written.")));
    }
    for (const m of this.messages) this.log.append(this.messageEl(m));
    if (scroll) this.scrollDown(true);
  }

  private messageEl(m: Message): HTMLElement {
    const body = h("div", { class: "body", "data-testid": "message-body" });
    const footer = h("div", { class: "footer" });
    const el = h("article", { class: `message ${m.role}`, "data-testid": `message-${m.role}` }, body, footer);
    m.el = el;
    this.fill(m);
    return el;
  }

  /** (Re)draw a message's body and footer from its data. */
  private fill(m: Message): void {
    const el = m.el;
    if (!el) return;
    const body = el.querySelector<HTMLElement>(".body")!;
    const footer = el.querySelector<HTMLElement>(".footer")!;
    const streaming = this.controller !== null && m === this.messages[this.messages.length - 1] && m.role === "assistant" && !m.status;
    el.classList.toggle("streaming", streaming);
    if (m.role === "user") {
      body.textContent = m.content;
    } else if (!m.content && streaming) {
      body.replaceChildren(h("span", { class: "typing", "aria-label": "ChatApp is writing" }, h("i"), h("i"), h("i")));
    } else {
      renderMarkdown(body, m.content);
      for (const pre of body.querySelectorAll("pre")) {
        pre.append(h("button", { class: "copy-code small", onclick: () => void copyText(pre.querySelector("code")?.textContent ?? "") }, "Copy"));
      }
    }
    footer.replaceChildren();
    if (m.sources?.length) footer.append(this.sourcesEl(m.sources));
    const meta = h("div", { class: "meta" });
    footer.append(meta);
    if (m.role === "assistant" && !streaming) {
      if (m.status === "incomplete") {
        const why = m.finish_reason === "cancelled" ? "Stopped" : m.error ? `Cut short: ${m.error}` : "Incomplete";
        meta.append(h("span", { class: "badge warn", "data-testid": "incomplete" }, why));
      }
      if (m.fallback) {
        const from = typeof m.fallback === "string" ? ` (instead of ${m.fallback})` : "";
        meta.append(h("span", { class: "badge info", "data-testid": "fallback" }, `Answered by fallback model ${m.model ?? ""}${from}`));
      }
      const total = (m.prompt_tokens ?? 0) + (m.completion_tokens ?? 0);
      if (total) {
        meta.append(h("span", { class: "usage", "data-testid": "usage", title: `${m.prompt_tokens} prompt + ${m.completion_tokens} completion tokens` },
          `${m.model ? `${m.model} · ` : ""}${m.completion_tokens} tokens (${total} with prompt)`));
      }
    }
    if (streaming) return;
    const actions = h("span", { class: "msg-actions" },
      h("button", { class: "small", "data-testid": "copy", onclick: (e: Event) => this.copy(e, m) }, "Copy"));
    const last = this.messages[this.messages.length - 1];
    if (m.role === "assistant" && m === last && m.seq !== undefined) {
      actions.append(h("button", { class: "small", "data-testid": "regenerate", onclick: () => void this.regenerate() }, "Regenerate"));
    }
    if (m.role === "user" && m.seq !== undefined) {
      actions.append(h("button", { class: "small", "data-testid": "edit", onclick: () => this.edit(m) }, "Edit"));
    }
    meta.append(actions);
  }

  private sourcesEl(sources: Source[]): HTMLElement {
    return h("details", { class: "sources", "data-testid": "sources" },
      h("summary", {}, `Sources (${sources.length})`),
      h("ol", {}, ...sources.map((s) => h("li", {},
        s.url && /^https?:/i.test(s.url) ? h("a", { href: s.url, target: "_blank", rel: "noopener noreferrer" }, s.title || s.url) : h("strong", {}, s.title || "source"),
        s.snippet || s.text ? h("blockquote", {}, s.snippet || s.text || "") : null,
      ))),
    );
  }

  private async copy(e: Event, m: Message): Promise<void> {
    const button = e.currentTarget as HTMLButtonElement;
    await copyText(m.content);
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  }

  private edit(m: Message): void {
    if (this.controller || !m.el) return;
    const field = h("textarea", { class: "edit-input", "data-testid": "edit-input" });
    field.value = m.content;
    const body = m.el.querySelector<HTMLElement>(".body")!;
    const footer = m.el.querySelector<HTMLElement>(".footer")!;
    body.replaceChildren(field);
    footer.replaceChildren(h("span", { class: "msg-actions" },
      h("button", { class: "small primary", "data-testid": "edit-send", onclick: () => { const text = field.value.trim(); if (text) void this.run(text, { replaceFromSeq: m.seq }); } }, "Send"),
      h("button", { class: "small", onclick: () => this.fill(m) }, "Cancel"),
    ));
    field.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        const text = field.value.trim();
        if (text) void this.run(text, { replaceFromSeq: m.seq });
      }
      if (e.key === "Escape") this.fill(m);
    });
    field.focus();
  }

  private async regenerate(): Promise<void> {
    const lastUser = [...this.messages].reverse().find((m) => m.role === "user");
    if (lastUser) await this.run(lastUser.content, { regenerate: true });
  }

  // -- a turn ------------------------------------------------------------------------

  private async submit(): Promise<void> {
    const text = this.input.value.trim();
    if (!text || this.controller) return;
    if (Date.now() < this.blockedUntil) return;
    await this.run(text, {});
  }

  private async run(content: string, opts: { replaceFromSeq?: number; regenerate?: boolean }): Promise<void> {
    if (this.controller) return;
    const draftKey = () => `draft.${this.conversationId ?? "new"}`;
    const fromComposer = opts.replaceFromSeq === undefined && !opts.regenerate;
    this.hideNotice();
    const controller = new AbortController();
    this.controller = controller;
    this.setBusy(true);

    if (!this.conversationId) {
      try {
        const c = await json<Conversation>("api/conversations", { method: "POST" }, {});
        this.conversationId = c.id;
        store.set(draftKey(), content);
        store.set("draft.new", "");
        history.replaceState(null, "", `${location.pathname}?c=${c.id}`);
      } catch (err) {
        this.controller = null;
        this.setBusy(false);
        this.showError(err);
        return;
      }
    }
    const id = this.conversationId;

    // What the page shows right away; undone if the server takes nothing.
    const before = [...this.messages];
    if (opts.replaceFromSeq !== undefined) {
      this.messages = this.messages.filter((m) => m.seq === undefined || m.seq < opts.replaceFromSeq!);
    }
    if (opts.regenerate) {
      while (this.messages.length && this.messages[this.messages.length - 1].role !== "user") this.messages.pop();
    } else {
      this.messages.push({ role: "user", content });
    }
    const userMsg = this.messages[this.messages.length - 1];
    const reply: Message = { role: "assistant", content: "" };
    this.messages.push(reply);
    if (fromComposer) {
      this.input.value = "";
      this.autosize();
    }
    this.renderMessages();

    const body: Record<string, unknown> = opts.regenerate ? {} : { content };
    if (opts.replaceFromSeq !== undefined) body.replace_from_seq = opts.replaceFromSeq;
    if (this.modelSelect.value && this.modelSelect.value !== "auto") body.model = this.modelSelect.value;
    if (!this.kbLabel.hidden) {
      if (this.kbSelect.value) body.knowledge_base_id = this.kbSelect.value;
      else body.rag = "off"; // "No knowledge base": answer from the model alone
    }
    const path = `api/conversations/${id}/${opts.regenerate ? "regenerate" : "messages"}`;

    let started = false;
    const onEvent = (e: SseEvent) => {
      if (e.event === "start") {
        started = true;
        userMsg.id = e.data.user_message_id;
        userMsg.seq = e.data.seq;
        if (fromComposer) store.set(draftKey(), "");
      } else if (e.event === "token") {
        reply.content += e.data.text ?? "";
        this.queueRender(reply);
      } else if (e.event === "done") {
        Object.assign(reply, {
          id: e.data.message_id,
          seq: e.data.seq,
          status: "complete",
          finish_reason: e.data.finish_reason,
          model: e.data.model,
          prompt_tokens: e.data.usage?.prompt_tokens ?? 0,
          completion_tokens: e.data.usage?.completion_tokens ?? 0,
          sources: e.data.sources,
          fallback: e.data.fallback ?? e.data.fallback_from ?? (e.data.fallback_used ? true : undefined),
        });
      } else if (e.event === "error") {
        reply.status = "incomplete";
        reply.finish_reason = "error";
        reply.id = e.data.message_id;
        reply.error = e.data.error?.message ?? "the model failed";
      }
    };

    const undo = () => {
      this.messages = before;
      if (fromComposer && !this.input.value) {
        this.input.value = content;
        store.set(draftKey(), content);
        this.autosize();
      }
    };

    try {
      // A 409 right after a stop: the server is still storing the stopped reply.
      for (let attempt = 0; ; attempt++) {
        try {
          await streamTurn(path, body, onEvent, controller.signal);
          break;
        } catch (err) {
          if (err instanceof ApiError && err.status === 409 && err.code === "conflict" && attempt < 8 && !started) {
            await new Promise((r) => setTimeout(r, 400 * (attempt + 1)));
            continue;
          }
          throw err;
        }
      }
    } catch (err) {
      if (controller.signal.aborted) {
        if (!reply.content) undo();
        else Object.assign(reply, { status: "incomplete", finish_reason: "cancelled" });
      } else if (err instanceof StreamDropped && reply.content) {
        Object.assign(reply, { status: "incomplete", finish_reason: "error", error: "the connection dropped" });
        this.showNotice("warn", "The connection dropped in the middle of the answer. What arrived is kept.", "Retry", () => void this.regenerate());
      } else if (err instanceof StreamDropped || err instanceof TypeError) {
        undo();
        this.showNotice("warn", "The connection dropped before the answer started. Your message is back in the box.", "Retry", () => void this.submit());
      } else {
        undo();
        this.showError(err);
      }
    } finally {
      this.controller = null;
      this.setBusy(false);
      this.renderMessages();
      if (reply.status === "incomplete" && reply.seq === undefined && started) {
        // The server stored the partial reply: pick up its id and seq.
        void this.refreshIds();
      }
      void this.loadConversations(true);
      this.input.focus();
    }
  }

  private async refreshIds(): Promise<void> {
    if (!this.conversationId) return;
    const id = this.conversationId;
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 300 * (i + 1)));
      if (this.controller || id !== this.conversationId) return;
      const detail = await json<{ messages: Message[]; has_more: boolean }>(`api/conversations/${id}?limit=50`).catch(() => null);
      const last = detail?.messages[detail.messages.length - 1];
      if (detail && last?.role === "assistant") {
        const mine = this.messages[this.messages.length - 1];
        if (mine?.role === "assistant") Object.assign(mine, { id: last.id, seq: last.seq, prompt_tokens: last.prompt_tokens, completion_tokens: last.completion_tokens });
        this.renderMessages(false);
        return;
      }
    }
  }

  private queueRender(m: Message): void {
    if (this.renderQueued.has(m)) return;
    this.renderQueued.add(m);
    requestAnimationFrame(() => {
      this.renderQueued.delete(m);
      const stick = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
      this.fill(m);
      if (stick) this.scrollDown(false);
    });
  }

  private scrollDown(force: boolean): void {
    if (force || this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80) {
      this.log.scrollTop = this.log.scrollHeight;
    }
  }

  private setBusy(busy: boolean): void {
    this.stop.hidden = !busy;
    this.send.hidden = busy;
  }

  private showError(err: unknown): void {
    if (err instanceof ApiError && err.status === 429) {
      const wait = err.retryAfter ?? 1;
      this.blockedUntil = Date.now() + wait * 1000;
      this.send.disabled = true;
      this.showNotice("warn", "");
      this.stopNotice = countdown(this.notice.querySelector(".text")!, wait, (s) => `Rate limited: you can send again in ${s} s. Your message is kept.`, () => {
        this.send.disabled = false;
        this.hideNotice();
      });
      return;
    }
    if (err instanceof ApiError && err.status === 401) return; // the login screen is up
    this.showNotice("error", describe(err));
  }

  private showNotice(kind: "warn" | "error" | "info", text: string, action?: string, onAction?: () => void): void {
    this.stopNotice?.();
    this.stopNotice = null;
    this.notice.className = `notice ${kind}`;
    this.notice.replaceChildren(h("span", { class: "text" }, text));
    if (action) {
      this.notice.append(h("button", { class: "small", "data-testid": "notice-action", onclick: () => { this.hideNotice(); onAction?.(); } }, action));
    }
    this.notice.append(h("button", { class: "icon close", "aria-label": "Dismiss", onclick: () => this.hideNotice() }, "×"));
    this.notice.hidden = false;
  }

  private hideNotice(): void {
    this.stopNotice?.();
    this.stopNotice = null;
    this.notice.hidden = true;
  }

  private async logout(): Promise<void> {
    this.controller?.abort();
    await logout();
    await boot();
  }
}

void boot();

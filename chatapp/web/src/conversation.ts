// The open conversation: its title, its messages (Markdown answers, sources, badges,
// token usage, per-message actions), older messages paged in on demand, and the scroll
// that follows a streaming answer.
import { json } from "./api";
import { copyText, h } from "./dom";
import { renderMarkdown } from "./markdown";
import type { ChatState, Message, MessagePage, Source, Summary } from "./state";

/** What a message's buttons ask of the chat screen. */
export interface MessageActions {
  regenerate(): void;
  edit(m: Message): void;
}

export class ConversationView {
  readonly title = h("h1", { class: "title", "data-testid": "chat-title" }, "New chat");
  readonly log = h("div", { class: "messages", role: "log", "aria-live": "polite", "data-testid": "messages" });
  private readonly renderQueued = new Set<Message>();

  constructor(
    private readonly state: ChatState,
    private readonly actions: MessageActions,
  ) {}

  setTitle(title: string): void {
    this.title.textContent = title;
  }

  /** Redraw every message; `scroll` jumps to the newest. */
  renderMessages(scroll = true): void {
    this.log.replaceChildren();
    if (this.state.hasMore) {
      this.log.append(h("button", { class: "earlier small", onclick: () => void this.loadEarlier() }, "Load earlier messages"));
    }
    if (!this.state.messages.length) {
      this.log.append(h("div", { class: "welcome" }, h("h2", {}, "How can I help?"), h("p", { class: "muted" }, "Answers stream in as they are written.")));
    }
    const summary = this.state.summary;
    for (const m of this.state.messages) {
      if (summary && m.seq === summary.covers_seq + 1) this.log.append(summaryNote(summary));
      this.log.append(this.messageEl(m));
    }
    if (scroll) this.scrollDown(true);
  }

  /** Redraw `m` at the next frame (once however many tokens arrive before it), keeping
   * the log at the bottom if it was there. */
  queueRender(m: Message): void {
    if (this.renderQueued.has(m)) return;
    this.renderQueued.add(m);
    requestAnimationFrame(() => {
      this.renderQueued.delete(m);
      const stick = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
      this.fill(m);
      if (stick) this.scrollDown(false);
    });
  }

  /** (Re)draw a message's body and footer from its data. */
  fill(m: Message): void {
    const el = m.el;
    if (!el) return;
    const body = el.querySelector<HTMLElement>(".body")!;
    const footer = el.querySelector<HTMLElement>(".footer")!;
    const streaming = this.state.controller !== null && m === this.lastMessage() && m.role === "assistant" && !m.status;
    el.classList.toggle("streaming", streaming);
    fillBody(body, m, streaming);
    footer.replaceChildren();
    if (m.sources?.length) footer.append(sourcesEl(m.sources));
    const meta = h("div", { class: "meta" });
    footer.append(meta);
    if (m.role === "assistant" && !streaming) meta.append(...replyBadges(m));
    if (streaming) return;
    meta.append(this.actionsEl(m));
  }

  private async loadEarlier(): Promise<void> {
    const first = this.state.messages[0]?.seq;
    if (!this.state.conversationId || first === undefined) return;
    const detail = await json<MessagePage>(
      `api/conversations/${this.state.conversationId}?limit=50&before=${first}`,
    );
    this.state.messages = [...detail.messages, ...this.state.messages];
    this.state.hasMore = detail.has_more;
    const height = this.log.scrollHeight;
    this.renderMessages(false);
    this.log.scrollTop = this.log.scrollHeight - height;
  }

  private messageEl(m: Message): HTMLElement {
    const body = h("div", { class: "body", "data-testid": "message-body" });
    const footer = h("div", { class: "footer" });
    const el = h("article", { class: `message ${m.role}`, "data-testid": `message-${m.role}` }, body, footer);
    m.el = el;
    this.fill(m);
    return el;
  }

  /** Copy; Regenerate on the last answer; Edit on the user's messages. */
  private actionsEl(m: Message): HTMLElement {
    const actions = h("span", { class: "msg-actions" },
      h("button", { class: "small", "data-testid": "copy", onclick: (e: Event) => copy(e, m) }, "Copy"));
    if (m.role === "assistant" && m === this.lastMessage() && m.seq !== undefined) {
      actions.append(h("button", { class: "small", "data-testid": "regenerate", onclick: () => this.actions.regenerate() }, "Regenerate"));
    }
    if (m.role === "user" && m.seq !== undefined) {
      actions.append(h("button", { class: "small", "data-testid": "edit", onclick: () => this.actions.edit(m) }, "Edit"));
    }
    return actions;
  }

  private lastMessage(): Message {
    return this.state.messages[this.state.messages.length - 1];
  }

  private scrollDown(force: boolean): void {
    if (force || this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80) {
      this.log.scrollTop = this.log.scrollHeight;
    }
  }
}

/** The user's text as typed; an answer as Markdown, or the typing dots before its first token. */
function fillBody(body: HTMLElement, m: Message, streaming: boolean): void {
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
}

/** Above the first message the model still reads in full: the ones before it are summarised. */
function summaryNote(summary: Summary): HTMLElement {
  return h("div", {
    class: "summary-note muted",
    role: "note",
    "data-testid": "summary-note",
    title: `Summary version ${summary.version}: the model reads a summary of the messages above instead of the messages themselves.`,
  }, "Earlier messages summarised");
}

/** A finished answer's badges (stopped or cut short, fallback model) and token usage. */
function replyBadges(m: Message): HTMLElement[] {
  const badges: HTMLElement[] = [];
  if (m.status === "incomplete") {
    const why = m.finish_reason === "cancelled" ? "Stopped" : m.error ? `Cut short: ${m.error}` : "Incomplete";
    badges.push(h("span", { class: "badge warn", "data-testid": "incomplete" }, why));
  }
  const fallback = m.fallback ?? m.fallback_from;
  if (fallback) {
    const from = typeof fallback === "string" ? ` (instead of ${fallback})` : "";
    badges.push(h("span", { class: "badge info", "data-testid": "fallback" }, `Answered by fallback model ${m.model ?? ""}${from}`));
  }
  const total = (m.prompt_tokens ?? 0) + (m.completion_tokens ?? 0);
  if (total) {
    badges.push(h("span", { class: "usage", "data-testid": "usage", title: `${m.prompt_tokens} prompt + ${m.completion_tokens} completion tokens` },
      `${m.model ? `${m.model} · ` : ""}${m.completion_tokens} tokens (${total} with prompt)`));
  }
  return badges;
}

function sourcesEl(sources: Source[]): HTMLElement {
  return h("details", { class: "sources", "data-testid": "sources" },
    h("summary", {}, `Sources (${sources.length})`),
    h("ol", {}, ...sources.map((s) => h("li", { "data-testid": "source" },
      s.url && /^https?:/i.test(s.url) ? h("a", { href: s.url, target: "_blank", rel: "noopener noreferrer" }, s.title || s.url) : h("strong", {}, s.title || s.source || "source"),
      s.source && s.source !== s.title ? h("span", { class: "muted", "data-testid": "source-file" }, ` · ${s.source}`) : null,
      s.snippet || s.text ? h("blockquote", {}, s.snippet || s.text || "") : null,
    ))),
  );
}

async function copy(e: Event, m: Message): Promise<void> {
  const button = e.currentTarget as HTMLButtonElement;
  await copyText(m.content);
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

// The sidebar: the new-chat button, search, the conversation list paged by cursor,
// rename, delete, export and share in place, importing chats, the way to the knowledge
// panel, and the account box.
import { json } from "./api";
import { copyText, h, relativeTime } from "./dom";
import { describe } from "./notice";
import type { Notice } from "./notice";
import { store } from "./state";
import type { ChatState, Conversation, CurrentUser } from "./state";
import { exportConversation, importFile, shareConversation } from "./transfer";
import type { ExportFormat } from "./transfer";

const PAGE = 20;

/** What the sidebar asks of the chat screen. */
export interface SidebarActions {
  open(id: string): void;
  newChat(): void;
  logout(): void;
  /** The open conversation's title, as loaded or renamed. */
  setTitle(title: string): void;
  /** Open the knowledge panel. */
  openKnowledge(): void;
}

export class Sidebar {
  private readonly list = h("ul", { class: "conversations", "data-testid": "conversation-list" });
  private readonly more = h("button", { class: "more", hidden: true, "data-testid": "load-more" }, "Load more");
  // maxlength: the server refuses longer searches (CHAT_MAX_SEARCH_CHARS, 100 by default)
  private readonly search = h("input", { type: "search", placeholder: "Search chats", "aria-label": "Search chats", "data-testid": "search", maxlength: "100" });
  /** Shown when the server offers knowledge bases. */
  readonly knowledgeButton = h("button", { class: "link knowledge-open", hidden: true, "data-testid": "knowledge-open" }, "Knowledge bases…");
  private readonly importInput = h("input", { type: "file", accept: ".json,application/json", hidden: true, "data-testid": "import-file" });
  private cursor: string | null = null;
  private query = "";

  constructor(
    private readonly state: ChatState,
    private readonly notice: Notice,
    private readonly actions: SidebarActions,
  ) {
    this.more.addEventListener("click", () => void this.loadConversations(false));
    this.importInput.addEventListener("change", () => void this.importChosen());
    this.knowledgeButton.addEventListener("click", () => this.actions.openKnowledge());
    let searchTimer = 0;
    this.search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = window.setTimeout(() => {
        this.query = this.search.value.trim();
        void this.loadConversations(true);
      }, 250);
    });
  }

  /** The sidebar's element; `me` null means accounts are off. */
  element(me: CurrentUser | null): HTMLElement {
    const account = me
      ? h(
          "div",
          { class: "account" },
          h("span", { class: "who", "data-testid": "who" }, me.display_name || me.email || ""),
          h("button", { class: "link", "data-testid": "logout", onclick: () => this.actions.logout() }, "Log out"),
        )
      : h("div", { class: "account muted" }, "Local user (accounts are off)");
    return h(
      "aside",
      { class: "sidebar" },
      h("button", { class: "primary new", "data-testid": "new-chat", onclick: () => this.actions.newChat() }, "+ New chat"),
      this.search,
      this.list,
      this.more,
      this.knowledgeButton,
      h("button", { class: "link import", "data-testid": "import", title: "Import a ChatApp or ChatGPT export (conversations.json)", onclick: () => this.importInput.click() }, "Import chats…"),
      this.importInput,
      account,
    );
  }

  /** The first page of conversations (`reset`) or the next one. */
  async loadConversations(reset: boolean): Promise<void> {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (!reset && this.cursor) params.set("cursor", this.cursor);
    if (this.query) params.set("q", this.query);
    try {
      const page = await json<{ items: Conversation[]; next_cursor: string | null }>(`api/conversations?${params}`);
      if (reset) this.list.replaceChildren();
      for (const c of page.items) {
        this.list.append(this.conversationItem(c));
        if (c.id === this.state.conversationId && c.title) this.actions.setTitle(c.title);
      }
      if (reset && !page.items.length) {
        this.list.append(h("li", { class: "empty muted" }, this.query ? "No chat matches." : "No chats yet."));
      }
      this.cursor = page.next_cursor;
      this.more.hidden = !page.next_cursor;
    } catch (err) {
      this.notice.show("error", `Could not load your chats: ${describe(err)}`);
    }
  }

  /** Highlight the open conversation. */
  markActive(): void {
    for (const li of this.list.querySelectorAll("li")) {
      li.classList.toggle("active", li.dataset.id === this.state.conversationId);
    }
  }

  private conversationItem(c: Conversation): HTMLLIElement {
    const label = h("button", { class: "open", title: c.title || "New chat", onclick: () => this.actions.open(c.id) },
      h("span", { class: "name", "data-testid": "conversation-title" }, c.title || "New chat"),
      h("span", { class: "when" }, relativeTime(c.updated_at)),
    );
    const li = h("li", { "data-id": c.id, "data-testid": "conversation", class: c.id === this.state.conversationId ? "active" : "" }, label);
    const actions = h("span", { class: "actions" },
      h("button", { class: "icon", title: "Rename", "aria-label": "Rename", "data-testid": "rename", onclick: () => this.rename(li, c) }, "✎"),
      h("button", { class: "icon", title: "Share a read-only link", "aria-label": "Share", "data-testid": "share", onclick: () => void this.share(c) }, "🔗"),
      h("button", { class: "icon", title: "Export as JSON", "aria-label": "Export as JSON", "data-testid": "export-json", onclick: () => void this.download(c, "json") }, "⤓"),
      h("button", { class: "icon", title: "Export as Markdown", "aria-label": "Export as Markdown", "data-testid": "export-markdown", onclick: () => void this.download(c, "markdown") }, "M"),
      h("button", { class: "icon", title: "Delete", "aria-label": "Delete", "data-testid": "delete", onclick: () => this.confirmDelete(li, c) }, "✕"),
    );
    li.append(actions);
    return li;
  }

  private async download(c: Conversation, format: ExportFormat): Promise<void> {
    try {
      await exportConversation(c.id, format);
    } catch (err) {
      this.notice.show("error", `Export failed: ${describe(err)}`);
    }
  }

  private async share(c: Conversation): Promise<void> {
    try {
      const link = await shareConversation(c.id);
      this.notice.show("info", `Read-only link to “${c.title || "New chat"}” as it is now (shown once): ${link}`, "Copy link", () => void copyText(link));
    } catch (err) {
      this.notice.show("error", `Sharing failed: ${describe(err)}`);
    }
  }

  private async importChosen(): Promise<void> {
    const file = this.importInput.files?.[0];
    this.importInput.value = "";
    if (!file) return;
    try {
      const count = await importFile(file);
      this.notice.show("info", `Imported ${count} chat${count === 1 ? "" : "s"} from ${file.name}.`);
      await this.loadConversations(true);
    } catch (err) {
      this.notice.show("error", `Import failed: ${describe(err)}`);
    }
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
        if (c.id === this.state.conversationId) this.actions.setTitle(updated.title);
      } catch (err) {
        this.notice.show("error", `Rename failed: ${describe(err)}`);
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
      if (c.id === this.state.conversationId) this.actions.newChat();
    } catch (err) {
      this.notice.show("error", `Delete failed: ${describe(err)}`);
      li.replaceWith(this.conversationItem(c));
    }
  }
}

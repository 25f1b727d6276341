// The chat screen: lays out the sidebar, the open conversation, the notice bar, the
// composer and the knowledge panel, and switches between conversations.
import { ApiError, json, logout } from "./api";
import { Composer, editMessage } from "./composer";
import { ConversationView } from "./conversation";
import { h } from "./dom";
import { KnowledgePanel } from "./knowledge";
import { describe, Notice } from "./notice";
import { Sidebar } from "./sidebar";
import { ChatState } from "./state";
import type { Conversation, CurrentUser, Message, MessagePage } from "./state";
import { TurnRunner } from "./turn";

export class ChatView {
  private readonly state = new ChatState();
  private readonly notice = new Notice();
  private readonly layout = h("div", { class: "layout" });
  private readonly conversation: ConversationView;
  private readonly composer: Composer;
  private readonly sidebar: Sidebar;
  private readonly turns: TurnRunner;
  private readonly knowledge: KnowledgePanel;

  /** `me` null: accounts are off. `afterLogout` runs once the user has logged out. */
  constructor(
    private readonly root: HTMLElement,
    private readonly me: CurrentUser | null,
    private readonly afterLogout: () => Promise<void>,
  ) {
    this.conversation = new ConversationView(this.state, {
      regenerate: () => void this.turns.regenerate(),
      edit: (m) => this.edit(m),
    });
    this.composer = new Composer(this.state, () => void this.turns.submit());
    this.sidebar = new Sidebar(this.state, this.notice, {
      open: (id) => void this.open(id),
      newChat: () => this.newChat(),
      logout: () => void this.logout(),
      setTitle: (title) => this.conversation.setTitle(title),
      openKnowledge: () => {
        this.layout.classList.remove("drawer-open");
        void this.knowledge.open();
      },
    });
    this.knowledge = new KnowledgePanel({
      listed: (list) => this.composer.showKnowledgeBases(list),
      choose: (id) => {
        this.composer.chooseKnowledgeBase(id);
        this.composer.focus();
      },
    });
    this.turns = new TurnRunner({
      state: this.state,
      composer: this.composer,
      conversation: this.conversation,
      notice: this.notice,
      sidebar: this.sidebar,
    });
  }

  mount(): void {
    const main = h(
      "main",
      { class: "chat" },
      h(
        "header",
        { class: "topbar" },
        h("button", { class: "menu icon", "aria-label": "Conversations", "data-testid": "menu", onclick: () => this.layout.classList.toggle("drawer-open") }, "☰"),
        this.conversation.title,
        this.composer.kbLabel,
        this.composer.modelSelect,
      ),
      this.conversation.log,
      this.notice.element,
      this.composer.form,
    );
    const scrim = h("div", { class: "scrim", onclick: () => this.layout.classList.remove("drawer-open") });
    this.layout.replaceChildren(this.sidebar.element(this.me), scrim, main, this.knowledge.dialog);
    this.root.replaceChildren(this.layout);

    void this.sidebar.loadConversations(true);
    void this.composer.loadModels();
    void this.knowledge.refresh().then((offered) => {
      this.sidebar.knowledgeButton.hidden = !offered;
      this.composer.knowledgeListed();
    });
    if (this.state.conversationId) void this.open(this.state.conversationId);
    else this.composer.restoreDraft();
    this.composer.focus();
  }

  /** Bumped by every switch of conversation: a conversation that finishes loading after
   * the user moved on (New chat, another conversation, a message sent) is not shown. */
  private navigation = 0;

  private newChat(): void {
    if (this.state.controller) return;
    this.navigation++;
    this.state.conversationId = null;
    this.state.messages = [];
    this.state.hasMore = false;
    this.state.summary = null;
    this.conversation.setTitle("New chat");
    this.conversation.renderMessages();
    history.replaceState(null, "", location.pathname);
    this.sidebar.markActive();
    this.composer.restoreDraft();
    this.layout.classList.remove("drawer-open");
    this.composer.focus();
  }

  private async open(id: string): Promise<void> {
    if (this.state.controller) return;
    const ticket = ++this.navigation;
    this.layout.classList.remove("drawer-open");
    try {
      const detail = await json<Conversation & MessagePage>(`api/conversations/${id}?limit=50`);
      if (ticket !== this.navigation || this.state.controller) return; // the user moved on
      this.state.conversationId = id;
      this.state.messages = detail.messages;
      this.state.hasMore = detail.has_more;
      this.state.summary = detail.summary ?? null;
      this.conversation.setTitle(detail.title || "New chat");
      history.replaceState(null, "", `${location.pathname}?c=${id}`);
      this.conversation.renderMessages();
      this.sidebar.markActive();
      this.composer.restoreDraft();
      this.notice.hide();
    } catch (err) {
      if (ticket !== this.navigation || this.state.controller) return;
      if (err instanceof ApiError && err.status === 404) {
        this.newChat();
        return;
      }
      this.notice.show("error", `Could not open the chat: ${describe(err)}`);
    }
  }

  private edit(m: Message): void {
    if (this.state.controller) return;
    editMessage(
      m,
      (text) => void this.turns.run(text, { replaceFromSeq: m.seq }),
      () => this.conversation.fill(m),
    );
  }

  private async logout(): Promise<void> {
    this.state.controller?.abort();
    await logout();
    await this.afterLogout();
  }
}

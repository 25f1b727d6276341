// One turn of the conversation: the user's message goes up and the answer streams back
// over SSE token by token. Stop, a dropped connection, a rate limit or another error each
// leave the page where the user can go on: what arrived is kept, or the message goes back
// in the box.
import { ApiError, json, StreamDropped, streamTurn } from "./api";
import type { SseEvent } from "./api";
import type { Composer } from "./composer";
import type { ConversationView } from "./conversation";
import { describe } from "./notice";
import type { Notice } from "./notice";
import type { Sidebar } from "./sidebar";
import { store } from "./state";
import type { ChatState, Conversation, Message, MessagePage } from "./state";

export interface TurnOptions {
  /** Edit and resend: the messages from this seq on are replaced. */
  replaceFromSeq?: number;
  /** Answer the last user message again. */
  regenerate?: boolean;
}

/** A turn in flight. */
interface Turn {
  content: string;
  opts: TurnOptions;
  /** Sent from the message box (not an edit, not a regeneration). */
  fromComposer: boolean;
  controller: AbortController;
  /** The messages before the turn: shown again if the server takes nothing. */
  before: Message[];
  userMsg: Message;
  reply: Message;
  /** The server accepted the turn (its start event came). */
  started: boolean;
}

/** The parts of the chat screen a turn updates. */
export interface TurnParts {
  state: ChatState;
  composer: Composer;
  conversation: ConversationView;
  notice: Notice;
  sidebar: Sidebar;
}

export class TurnRunner {
  private readonly state: ChatState;
  private readonly composer: Composer;
  private readonly conversation: ConversationView;
  private readonly notice: Notice;
  private readonly sidebar: Sidebar;

  constructor({ state, composer, conversation, notice, sidebar }: TurnParts) {
    this.state = state;
    this.composer = composer;
    this.conversation = conversation;
    this.notice = notice;
    this.sidebar = sidebar;
  }

  /** Send what the message box holds. */
  async submit(): Promise<void> {
    const text = this.composer.text;
    if (!text || this.state.controller) return;
    if (this.composer.blocked) return;
    await this.run(text, {});
  }

  /** Answer the last user message again. */
  async regenerate(): Promise<void> {
    const lastUser = [...this.state.messages].reverse().find((m) => m.role === "user");
    if (lastUser) await this.run(lastUser.content, { regenerate: true });
  }

  /** Run one turn: show it at once, stream the answer into it, settle it however it ends. */
  async run(content: string, opts: TurnOptions): Promise<void> {
    if (this.state.controller) return;
    this.notice.hide();
    const controller = new AbortController();
    this.state.controller = controller;
    this.composer.setBusy(true);
    if (!this.state.conversationId && !(await this.createConversation(content))) return;
    const turn = this.stage(content, opts, controller);
    try {
      await this.composer.choicesReady; // the pickers show the user's choices
      const { path, body } = this.request(turn);
      await this.stream(turn, path, body);
    } catch (err) {
      this.settleFailure(turn, err);
    } finally {
      this.finish(turn);
    }
  }

  /** A new chat's first message creates the conversation; if that fails, the turn ends. */
  private async createConversation(content: string): Promise<boolean> {
    try {
      const c = await json<Conversation>("api/conversations", { method: "POST" }, {});
      this.state.conversationId = c.id;
      store.set(this.state.draftKey, content);
      store.set("draft.new", "");
      history.replaceState(null, "", `${location.pathname}?c=${c.id}`);
      return true;
    } catch (err) {
      this.state.controller = null;
      this.composer.setBusy(false);
      this.showError(err);
      return false;
    }
  }

  /** What the page shows right away: the user's message (unless regenerating) and an
   * empty answer; undone if the server takes nothing. */
  private stage(content: string, opts: TurnOptions, controller: AbortController): Turn {
    const before = [...this.state.messages];
    const { replaceFromSeq } = opts;
    if (replaceFromSeq !== undefined) {
      this.state.messages = this.state.messages.filter((m) => m.seq === undefined || m.seq < replaceFromSeq);
      // An edit of a summarised message drops the summary (the server rebuilds it later).
      if (this.state.summary && replaceFromSeq <= this.state.summary.covers_seq) this.state.summary = null;
    }
    const messages = this.state.messages;
    if (opts.regenerate) {
      while (messages.length && messages[messages.length - 1].role !== "user") messages.pop();
    } else {
      messages.push({ role: "user", content });
    }
    const userMsg = messages[messages.length - 1];
    const reply: Message = { role: "assistant", content: "" };
    messages.push(reply);
    const fromComposer = replaceFromSeq === undefined && !opts.regenerate;
    if (fromComposer) this.composer.clear();
    this.conversation.renderMessages();
    return { content, opts, fromComposer, controller, before, userMsg, reply, started: false };
  }

  private request(turn: Turn): { path: string; body: Record<string, unknown> } {
    const { content, opts } = turn;
    const body: Record<string, unknown> = opts.regenerate ? {} : { content };
    if (opts.replaceFromSeq !== undefined) body.replace_from_seq = opts.replaceFromSeq;
    this.composer.addChoices(body);
    const path = `api/conversations/${this.state.conversationId}/${opts.regenerate ? "regenerate" : "messages"}`;
    return { path, body };
  }

  /** Stream the answer. A 409 right after a stop means the server is still storing the
   * stopped reply: wait and try again. */
  private async stream(turn: Turn, path: string, body: Record<string, unknown>): Promise<void> {
    const onEvent = (e: SseEvent) => this.apply(turn, e);
    for (let attempt = 0; ; attempt++) {
      try {
        await streamTurn(path, body, onEvent, turn.controller.signal);
        return;
      } catch (err) {
        if (err instanceof ApiError && err.status === 409 && err.code === "conflict" && attempt < 8 && !turn.started) {
          await new Promise((r) => setTimeout(r, 400 * (attempt + 1)));
          continue;
        }
        throw err;
      }
    }
  }

  /** One event of the answer's stream. */
  private apply(turn: Turn, e: SseEvent): void {
    const { reply } = turn;
    if (e.event === "start") {
      turn.started = true;
      turn.userMsg.id = e.data.user_message_id;
      turn.userMsg.seq = e.data.seq;
      if (turn.fromComposer) store.set(this.state.draftKey, "");
    } else if (e.event === "token") {
      reply.content += e.data.text ?? "";
      this.conversation.queueRender(reply);
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
  }

  /** Stopped, dropped or refused: keep what arrived, or put the message back, and say why. */
  private settleFailure(turn: Turn, err: unknown): void {
    const { reply } = turn;
    if (turn.controller.signal.aborted) {
      if (!reply.content) this.undo(turn);
      else Object.assign(reply, { status: "incomplete", finish_reason: "cancelled" });
    } else if (err instanceof StreamDropped && reply.content) {
      Object.assign(reply, { status: "incomplete", finish_reason: "error", error: "the connection dropped" });
      this.notice.show("warn", "The connection dropped in the middle of the answer. What arrived is kept.", "Retry", () => void this.regenerate());
    } else if (err instanceof StreamDropped || err instanceof TypeError) {
      this.undo(turn);
      this.notice.show("warn", "The connection dropped before the answer started. Your message is back in the box.", "Retry", () => void this.submit());
    } else {
      this.undo(turn);
      this.showError(err);
    }
  }

  private undo(turn: Turn): void {
    this.state.messages = turn.before;
    if (turn.fromComposer) this.composer.putBack(turn.content);
  }

  private finish(turn: Turn): void {
    this.state.controller = null;
    this.composer.setBusy(false);
    this.conversation.renderMessages();
    const { reply } = turn;
    if (reply.status === "incomplete" && reply.seq === undefined && turn.started) {
      // The server stored the partial reply: pick up its id and seq.
      void this.refreshIds();
    }
    void this.sidebar.loadConversations(true);
    this.composer.focus();
  }

  private async refreshIds(): Promise<void> {
    if (!this.state.conversationId) return;
    const id = this.state.conversationId;
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 300 * (i + 1)));
      if (this.state.controller || id !== this.state.conversationId) return;
      const detail = await json<MessagePage>(`api/conversations/${id}?limit=50`).catch(() => null);
      const last = detail?.messages[detail.messages.length - 1];
      if (detail && last?.role === "assistant") {
        const mine = this.state.messages[this.state.messages.length - 1];
        if (mine?.role === "assistant") Object.assign(mine, { id: last.id, seq: last.seq, prompt_tokens: last.prompt_tokens, completion_tokens: last.completion_tokens });
        this.conversation.renderMessages(false);
        return;
      }
    }
  }

  private showError(err: unknown): void {
    if (err instanceof ApiError && err.status === 429) {
      const wait = err.retryAfter ?? 1;
      this.composer.block(wait);
      this.notice.showCountdown(wait, (s) => `Rate limited: you can send again in ${s} s. Your message is kept.`, () => {
        this.composer.unblock();
        this.notice.hide();
      });
      return;
    }
    if (err instanceof ApiError && err.status === 401) return; // the login screen is up
    this.notice.show("error", describe(err));
  }
}

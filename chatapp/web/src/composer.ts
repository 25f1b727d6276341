// The composer: the message box (Enter sends, Shift+Enter adds a line, a draft kept per
// conversation), Send and Stop, the model and knowledge-base pickers, and editing a sent
// message in place to resend it.
import { json } from "./api";
import { h } from "./dom";
import { groupByAccess, isReady, statusWord } from "./knowledge-api";
import type { KnowledgeBase, KnowledgeList } from "./knowledge-api";
import { store } from "./state";
import type { ChatState, Message } from "./state";

export class Composer {
  readonly modelSelect = h("select", { "aria-label": "Model", "data-testid": "model-picker" });
  private readonly kbSelect = h("select", { "aria-label": "Knowledge base", "data-testid": "kb-picker" });
  /** The knowledge-base picker, hidden unless the server offers knowledge bases. */
  readonly kbLabel = h("label", { class: "kb", hidden: true }, "KB", this.kbSelect);
  private readonly input = h("textarea", { rows: 1, placeholder: "Message ChatApp (Enter sends, Shift+Enter adds a line)", "aria-label": "Message", "data-testid": "composer" });
  private readonly send = h("button", { type: "submit", class: "primary", "data-testid": "send" }, "Send");
  private readonly stop = h("button", { type: "button", class: "danger", hidden: true, "data-testid": "stop" }, "Stop");
  readonly form = h("form", { class: "composer" }, this.input, this.stop, this.send);
  private blockedUntil = 0;
  private choicesLoaded: () => void = () => {};
  /** Settled once the knowledge-base list has loaded (or failed to): before that the
   * picker cannot show the user's choice, so a turn waits for it (a remembered "No
   * knowledge base" must not be sent as no choice, which the server grounds in its
   * default knowledge base). */
  readonly choicesReady: Promise<void> = new Promise((resolve) => (this.choicesLoaded = resolve));

  /** `onSubmit` runs on Enter and on Send; Stop aborts the turn in flight. */
  constructor(
    private readonly state: ChatState,
    onSubmit: () => void,
  ) {
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      onSubmit();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        onSubmit();
      }
    });
    this.input.addEventListener("input", () => {
      store.set(this.state.draftKey, this.input.value);
      this.autosize();
    });
    this.stop.addEventListener("click", () => this.state.controller?.abort());
    this.modelSelect.addEventListener("change", () => store.set("model", this.modelSelect.value));
    this.kbSelect.addEventListener("change", () => store.set("kb", this.kbSelect.value || "off"));
  }

  /** The message typed, trimmed. */
  get text(): string {
    return this.input.value.trim();
  }

  /** Rate limited: nothing is sent before then. */
  get blocked(): boolean {
    return Date.now() < this.blockedUntil;
  }

  /** Rate limited for `seconds`: Send is disabled until `unblock()`. */
  block(seconds: number): void {
    this.blockedUntil = Date.now() + seconds * 1000;
    this.send.disabled = true;
  }

  unblock(): void {
    this.send.disabled = false;
  }

  focus(): void {
    this.input.focus();
  }

  /** Empty the box once its message is sent. */
  clear(): void {
    this.input.value = "";
    this.autosize();
  }

  /** Put an unsent message back in the box, unless something new was typed meanwhile. */
  putBack(content: string): void {
    if (this.input.value) return;
    this.input.value = content;
    store.set(this.state.draftKey, content);
    this.autosize();
  }

  restoreDraft(): void {
    this.input.value = store.get(this.state.draftKey);
    this.autosize();
  }

  /** Stop instead of Send while a turn runs. */
  setBusy(busy: boolean): void {
    this.stop.hidden = !busy;
    this.send.hidden = busy;
  }

  /** The knowledge-base list has loaded, or failed to (see `choicesReady`). */
  knowledgeListed(): void {
    this.choicesLoaded();
  }

  /** Add the pickers' choices to a turn's request body (after `choicesReady`). */
  addChoices(body: Record<string, unknown>): void {
    if (this.modelSelect.value && this.modelSelect.value !== "auto") body.model = this.modelSelect.value;
    if (!this.kbLabel.hidden) {
      if (this.kbSelect.value) body.knowledge_base_id = this.kbSelect.value;
      else body.rag = "off"; // "No knowledge base": answer from the model alone
    }
  }

  async loadModels(): Promise<void> {
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

  /** The knowledge-base picker, shown when the server lists any (GET
   * /api/knowledge-bases): the user's own, those shared with them and the project-wide
   * ones. One not indexed yet is listed with its state but cannot be chosen. The picker
   * shows what a turn uses: the user's last choice, else the server's default knowledge
   * base (what a turn naming none is grounded in), else none. */
  showKnowledgeBases(list: KnowledgeList): void {
    const items = list.items;
    if (!items.length) {
      this.kbLabel.hidden = true;
      return;
    }
    const option = (kb: KnowledgeBase) => {
      const ready = isReady(kb);
      const from = kb.access === "reader" && kb.owner ? ` (${kb.owner})` : "";
      return h("option", { value: kb.id, disabled: !ready, title: ready ? undefined : "Not ready: indexing has not finished (see Knowledge bases)" },
        `${kb.name}${from}${ready ? "" : ` (${statusWord(kb)})`}`);
    };
    const groups = groupByAccess(items).filter(([, kbs]) => kbs.length);
    this.kbSelect.replaceChildren(
      h("option", { value: "" }, "No knowledge base"),
      ...(groups.length > 1 ? groups.map(([label, kbs]) => h("optgroup", { label }, ...kbs.map(option))) : items.map(option)),
    );
    // "off": the user chose "No knowledge base" (an empty choice is never stored)
    const saved = store.get("kb");
    const offered = (id: string | null | undefined) => !!id && items.some((kb) => kb.id === id && isReady(kb));
    this.kbSelect.value = saved === "off" ? "" : offered(saved) ? saved : offered(list.default) ? list.default! : "";
    this.kbLabel.hidden = false;
  }

  /** Select knowledge base `id` in the picker (and remember the choice). */
  chooseKnowledgeBase(id: string): void {
    this.kbSelect.value = id;
    if (this.kbSelect.value === id) store.set("kb", id);
  }

  private autosize(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 240)}px`;
  }
}

/** Turn a sent message into an editor: Send or Enter resends its new text, Cancel or
 * Escape draws the message again. */
export function editMessage(m: Message, resend: (text: string) => void, cancel: () => void): void {
  if (!m.el) return;
  const field = h("textarea", { class: "edit-input", "data-testid": "edit-input" });
  field.value = m.content;
  const send = () => {
    const text = field.value.trim();
    if (text) resend(text);
  };
  const body = m.el.querySelector<HTMLElement>(".body")!;
  const footer = m.el.querySelector<HTMLElement>(".footer")!;
  body.replaceChildren(field);
  footer.replaceChildren(h("span", { class: "msg-actions" },
    h("button", { class: "small primary", "data-testid": "edit-send", onclick: () => send() }, "Send"),
    h("button", { class: "small", onclick: () => cancel() }, "Cancel"),
  ));
  field.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
    if (e.key === "Escape") cancel();
  });
  field.focus();
}

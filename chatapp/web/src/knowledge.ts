// The knowledge panel: a dialog that lists the knowledge bases the user can read (their
// own, those shared with them, the project-wide ones), creates one, and shows one in
// detail: its indexing progress (polled every second while a job is queued or running),
// its files with their errors, uploads, sharing and deletion (knowledge-detail.ts).
import { h } from "./dom";
import { KnowledgeDetail } from "./knowledge-detail";
import { createKnowledgeBase, getKnowledgeBase, groupByAccess, isActive, listKnowledgeBases, statusWord } from "./knowledge-api";
import type { KnowledgeBase, KnowledgeList } from "./knowledge-api";
import { describe } from "./notice";

/** What the panel asks of the chat screen. */
export interface KnowledgeActions {
  /** The list changed (created, indexed, deleted, renamed): redraw the picker. */
  listed(list: KnowledgeList): void;
  /** "Chat over it": select this knowledge base in the picker. */
  choose(id: string): void;
}

const POLL_MS = 1000;

export class KnowledgePanel {
  readonly dialog = h("dialog", { class: "knowledge", "aria-labelledby": "knowledge-heading", "data-testid": "knowledge-panel" });
  private readonly items = h("ul", { class: "kb-list", "aria-label": "Knowledge bases", "data-testid": "kb-list" });
  private readonly nameInput = h("input", { type: "text", required: true, maxlength: 100, placeholder: "e.g. Project notes", "data-testid": "kb-name" });
  private readonly createError = h("p", { class: "form-error", role: "alert", "data-testid": "kb-create-error" });
  private readonly detail: KnowledgeDetail;
  private list: KnowledgeList = { items: [] };
  private selected: string | null = null;
  private polling = 0;

  constructor(private readonly actions: KnowledgeActions) {
    this.detail = new KnowledgeDetail({
      changed: (kb) => this.replace(kb),
      deleted: (id) => void this.afterDelete(id),
      choose: (id) => {
        this.actions.choose(id);
        this.dialog.close();
      },
    });
    const create = h("form", { class: "kb-create", "data-testid": "kb-create-form" },
      h("label", {}, "New knowledge base", this.nameInput),
      h("button", { type: "submit", class: "primary", "data-testid": "kb-create" }, "Create"),
      this.createError,
    );
    create.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.create();
    });
    this.dialog.append(
      h("header", { class: "kb-header" },
        h("h2", { id: "knowledge-heading" }, "Knowledge bases"),
        h("button", { class: "icon close", "aria-label": "Close", "data-testid": "knowledge-close", onclick: () => this.dialog.close() }, "×"),
      ),
      h("div", { class: "kb-body" }, h("nav", { class: "kb-side" }, this.items, create), this.detail.element),
    );
  }

  /** Load the list; false when the server offers no knowledge bases (disabled there, or
   * the list refused). */
  async refresh(): Promise<boolean> {
    try {
      this.list = await listKnowledgeBases();
    } catch {
      return false;
    }
    this.publish();
    return this.list.enabled !== false;
  }

  /** Show the panel with the list reloaded; the user's first knowledge base is shown in
   * detail unless one already is. */
  async open(): Promise<void> {
    if (!this.dialog.open) this.dialog.showModal();
    await this.refresh();
    if (!this.selected) this.select(this.list.items.find((kb) => kb.access === "owner")?.id ?? null);
  }

  private publish(): void {
    this.actions.listed(this.list);
    this.renderList();
    const shown = this.list.items.find((kb) => kb.id === this.selected);
    if (shown) this.detail.update(shown);
    else if (this.selected) this.select(null);
    this.schedulePoll();
  }

  private renderList(): void {
    this.items.replaceChildren();
    for (const [label, kbs] of groupByAccess(this.list.items)) {
      if (!kbs.length && label !== "Mine") continue;
      this.items.append(h("li", { class: "group muted", role: "presentation" }, label));
      if (!kbs.length) this.items.append(h("li", { class: "empty muted" }, "None yet: create one below."));
      for (const kb of kbs) {
        const current = kb.id === this.selected;
        this.items.append(h("li", { "data-id": kb.id, class: current ? "active" : "" },
          h("button", { class: "open", "aria-current": current ? "true" : undefined, "data-testid": "kb-item", onclick: () => this.select(kb.id) },
            h("span", { class: "name" }, kb.name),
            h("span", { class: `status ${kb.status ?? "ready"}` }, statusWord(kb)),
          ),
        ));
      }
    }
  }

  private select(id: string | null): void {
    this.selected = id;
    const kb = this.list.items.find((k) => k.id === id);
    this.detail.show(kb ?? null);
    this.renderList();
  }

  private async create(): Promise<void> {
    const name = this.nameInput.value.trim();
    this.createError.textContent = "";
    if (!name) {
      this.createError.textContent = "Give it a name.";
      return;
    }
    try {
      const kb = await createKnowledgeBase(name);
      this.nameInput.value = "";
      this.list.items.push(kb);
      this.select(kb.id);
      this.publish();
      this.detail.focusUpload();
    } catch (err) {
      this.createError.textContent = describe(err);
    }
  }

  /** A knowledge base changed (upload, file removed, renamed, polled). */
  private replace(kb: KnowledgeBase): void {
    const i = this.list.items.findIndex((k) => k.id === kb.id);
    const before = i >= 0 ? this.list.items[i] : null;
    if (i >= 0) this.list.items[i] = kb;
    else this.list.items.push(kb);
    if (before && isActive(before) && !isActive(kb)) {
      void this.refresh(); // finished: the picker may offer it now
      return;
    }
    if (before && (before.name !== kb.name || before.status !== kb.status)) this.actions.listed(this.list);
    this.renderList();
    if (kb.id === this.selected) this.detail.update(kb);
    this.schedulePoll();
  }

  private async afterDelete(id: string): Promise<void> {
    this.list.items = this.list.items.filter((kb) => kb.id !== id);
    this.select(null);
    await this.refresh();
  }

  /** Poll the knowledge bases whose index job is on its way, once a second, until none
   * is; stops when the page has left the chat screen (logged out). */
  private schedulePoll(): void {
    if (this.polling || !this.list.items.some(isActive)) return;
    this.polling = window.setTimeout(() => void this.poll(), POLL_MS);
  }

  private async poll(): Promise<void> {
    this.polling = 0;
    if (!this.dialog.isConnected) return;
    for (const kb of this.list.items.filter(isActive)) {
      try {
        this.replace(await getKnowledgeBase(kb.id));
      } catch {
        void this.refresh(); // deleted meanwhile, or the server is away: start over
        return;
      }
    }
    this.schedulePoll();
  }
}

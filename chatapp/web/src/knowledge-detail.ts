// One knowledge base in the knowledge panel: its state and indexing progress, "Chat over
// it", its files (upload by picker or drop, per-file errors, delete), read-only sharing
// by email, rename and delete. Its owner sees everything; a reader sees state and files.
import { h } from "./dom";
import {
  ACCEPTED,
  addReader,
  deleteFile,
  deleteKnowledgeBase,
  isActive,
  isReady,
  listFiles,
  listReaders,
  removeReader,
  renameKnowledgeBase,
  uploadFiles,
} from "./knowledge-api";
import type { IndexJob, KnowledgeBase, KnowledgeFile, Reader } from "./knowledge-api";
import { describe } from "./notice";

/** What the detail asks of the panel. */
export interface DetailActions {
  changed(kb: KnowledgeBase): void;
  deleted(id: string): void;
  choose(id: string): void;
}

const PHASES: Record<IndexJob["phase"], string> = {
  queued: "Waiting to start",
  reading: "Reading files",
  embedding: "Embedding chunks",
  writing: "Writing the index",
  done: "Indexed",
  failed: "Indexing failed",
};

export class KnowledgeDetail {
  readonly element = h("section", { class: "kb-detail", "data-testid": "kb-detail" });
  private readonly title = h("h3", { "data-testid": "kb-title" });
  private readonly summary = h("p", { class: "muted", "data-testid": "kb-summary" });
  private readonly fill = h("div", { class: "fill" });
  private readonly bar = h("div", { class: "progress", role: "progressbar", "aria-label": "Indexing progress", "aria-valuemin": 0, "aria-valuemax": 100, "data-testid": "kb-progress" }, this.fill);
  private readonly barText = h("p", { class: "progress-text", "data-testid": "kb-progress-text" });
  private readonly jobError = h("p", { class: "form-error", role: "alert", "data-testid": "kb-job-error" });
  private readonly use = h("button", { class: "primary", "data-testid": "kb-use" }, "Chat over it");
  private readonly useNote = h("span", { class: "muted" });
  private readonly upload = h("input", { type: "file", multiple: true, accept: ACCEPTED, class: "offscreen", "data-testid": "kb-upload" });
  private readonly drop = h("label", { class: "drop" }, this.upload,
    h("strong", {}, "Add files"), " or drop them here", h("br"),
    h("span", { class: "muted" }, "Markdown, text, HTML, PDF, or a zip of them. A file of the same name is replaced."));
  private readonly uploadStatus = h("div", { class: "upload-status", role: "status", "data-testid": "kb-upload-status" });
  private readonly files = h("ul", { class: "kb-files", "aria-label": "Files", "data-testid": "kb-files" });
  private readonly readers = h("ul", { class: "kb-readers", "aria-label": "Readers", "data-testid": "kb-readers" });
  private readonly shareEmail = h("input", { type: "email", required: true, placeholder: "colleague@example.com", "data-testid": "kb-share-email" });
  private readonly shareError = h("p", { class: "form-error", role: "alert", "data-testid": "kb-share-error" });
  private readonly ownerParts = h("div", { class: "owner-parts" });
  private readonly deleteRow = h("div", { class: "kb-delete" });
  private kb: KnowledgeBase | null = null;
  /** The job's files_done when the files were last loaded: reload as it moves. */
  private filesSeen = -1;

  constructor(private readonly actions: DetailActions) {
    this.use.addEventListener("click", () => this.kb && this.actions.choose(this.kb.id));
    this.upload.addEventListener("change", () => {
      const chosen = [...(this.upload.files ?? [])];
      this.upload.value = "";
      void this.send(chosen);
    });
    this.drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      this.drop.classList.add("over");
    });
    this.drop.addEventListener("dragleave", () => this.drop.classList.remove("over"));
    this.drop.addEventListener("drop", (e) => {
      e.preventDefault();
      this.drop.classList.remove("over");
      void this.send([...(e.dataTransfer?.files ?? [])]);
    });
    const share = h("form", { class: "kb-share" },
      h("label", {}, "Share read-only with", this.shareEmail),
      h("button", { type: "submit", "data-testid": "kb-share" }, "Share"),
    );
    share.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.share();
    });
    this.ownerParts.append(
      this.drop, this.uploadStatus,
      h("h4", {}, "Sharing"), share, this.shareError, this.readers,
      this.deleteRow,
    );
  }

  /** Show `kb` afresh (null: nothing selected). */
  show(kb: KnowledgeBase | null): void {
    this.kb = kb;
    this.filesSeen = -1;
    for (const el of [this.uploadStatus, this.shareError, this.files, this.readers]) el.replaceChildren();
    if (!kb) {
      this.element.replaceChildren(h("p", { class: "muted placeholder" }, "Choose a knowledge base, or create one to upload your files."));
      return;
    }
    const owner = kb.access === "owner";
    this.element.replaceChildren(
      h("div", { class: "kb-title-row" }, this.title,
        owner ? h("button", { class: "small", "data-testid": "kb-rename", onclick: () => this.rename() }, "Rename") : null),
      this.summary,
      this.bar, this.barText, this.jobError,
      h("p", { class: "kb-use" }, this.use, " ", this.useNote),
    );
    if ((kb.access ?? "shared") !== "shared") this.element.append(h("h4", {}, "Files"), this.files); // project-wide ones have no uploads
    if (owner) this.element.append(this.ownerParts);
    this.deleteRow.replaceChildren(h("button", { class: "danger small", "data-testid": "kb-delete", onclick: () => this.confirmDelete() }, "Delete knowledge base"));
    this.update(kb);
    if (owner) void this.loadReaders();
  }

  /** Redraw `kb`'s state, progress and (as indexing moves on) its files. */
  update(kb: KnowledgeBase): void {
    if (kb.id !== this.kb?.id) return;
    this.kb = kb;
    this.title.textContent = kb.name;
    this.summary.textContent = summaryOf(kb);
    const job = kb.job ?? null;
    this.bar.hidden = this.barText.hidden = !job;
    if (job) {
      const percent = Math.max(0, Math.min(100, Math.round(job.percent)));
      this.bar.setAttribute("aria-valuenow", String(percent));
      this.bar.setAttribute("aria-valuetext", progressText(job));
      this.bar.classList.toggle("failed", job.status === "failed");
      this.fill.style.width = `${percent}%`;
      this.barText.textContent = progressText(job);
    }
    this.jobError.textContent = job?.error ?? (kb.status === "failed" ? "Indexing failed." : "");
    const ready = isReady(kb);
    this.use.disabled = !ready;
    this.useNote.textContent = ready ? "" : kb.status === "empty" ? "Add files first." : isActive(kb) ? "Available once indexed." : "Not indexed: see the errors below.";
    const moved = job ? job.files_done + (isActive(kb) ? 0 : 1_000_000) : 0;
    if (moved !== this.filesSeen) {
      this.filesSeen = moved;
      void this.loadFiles();
    }
  }

  focusUpload(): void {
    this.drop.scrollIntoView({ block: "nearest" });
  }

  private async loadFiles(): Promise<void> {
    const kb = this.kb;
    if (!kb || (kb.access ?? "shared") === "shared") return;
    try {
      const { items } = await listFiles(kb.id);
      if (kb.id === this.kb?.id) this.renderFiles(items);
    } catch {
      if (kb.id === this.kb?.id) this.files.replaceChildren(h("li", { class: "muted" }, "The files cannot be listed."));
    }
  }

  private renderFiles(items: KnowledgeFile[]): void {
    const owner = this.kb?.access === "owner";
    this.files.replaceChildren(...items.map((f) => h("li", { "data-testid": "kb-file", "data-name": f.name, class: f.status },
      h("span", { class: "name" }, f.name),
      h("span", { class: "muted" }, size(f.bytes)),
      h("span", { class: `badge ${f.status === "error" ? "warn" : "info"}`, "data-testid": "kb-file-status" }, f.status === "pending" ? "waiting" : f.status),
      owner ? h("button", { class: "icon", "aria-label": `Delete ${f.name}`, title: "Delete", "data-testid": "kb-file-delete", onclick: () => void this.removeFile(f.name) }, "✕") : null,
      f.error ? h("p", { class: "form-error", "data-testid": "kb-file-error" }, f.error) : null,
    )));
    if (!items.length) this.files.append(h("li", { class: "muted" }, "No files yet."));
  }

  private async send(chosen: File[]): Promise<void> {
    const kb = this.kb;
    if (!kb || !chosen.length) return;
    this.uploadStatus.replaceChildren(h("span", { class: "muted" }, `Uploading ${chosen.length} file${chosen.length === 1 ? "" : "s"}…`));
    try {
      const result = await uploadFiles(kb.id, chosen);
      this.uploadStatus.replaceChildren(...result.rejected.map((r) => h("p", { class: "form-error", "data-testid": "kb-rejected" }, `Not added: ${r.error}`)));
      this.filesSeen = -1;
      this.actions.changed(result.knowledge_base);
    } catch (err) {
      this.uploadStatus.replaceChildren(h("p", { class: "form-error", role: "alert", "data-testid": "kb-upload-error" }, `Upload failed: ${describe(err)}`));
    }
  }

  private async removeFile(name: string): Promise<void> {
    if (!this.kb) return;
    try {
      this.filesSeen = -1;
      this.actions.changed(await deleteFile(this.kb.id, name));
    } catch (err) {
      this.uploadStatus.replaceChildren(h("p", { class: "form-error", role: "alert" }, `Could not delete ${name}: ${describe(err)}`));
    }
  }

  private async loadReaders(): Promise<void> {
    const id = this.kb?.id;
    if (!id) return;
    try {
      const { items } = await listReaders(id);
      if (id === this.kb?.id) this.renderReaders(items);
    } catch (err) {
      this.shareError.textContent = describe(err);
    }
  }

  private renderReaders(items: Reader[]): void {
    this.readers.replaceChildren(...items.map((r) => h("li", { "data-testid": "kb-reader" },
      h("span", { class: "name" }, r.email),
      h("button", { class: "small", "aria-label": `Stop sharing with ${r.email}`, onclick: () => void this.unshare(r.email) }, "Remove"),
    )));
    if (!items.length) this.readers.append(h("li", { class: "muted" }, "Only you can read it."));
  }

  private async share(): Promise<void> {
    const email = this.shareEmail.value.trim();
    if (!this.kb || !email) return;
    this.shareError.textContent = "";
    try {
      await addReader(this.kb.id, email);
      this.shareEmail.value = "";
      await this.loadReaders();
    } catch (err) {
      this.shareError.textContent = describe(err);
    }
  }

  private async unshare(email: string): Promise<void> {
    if (!this.kb) return;
    try {
      await removeReader(this.kb.id, email);
      await this.loadReaders();
    } catch (err) {
      this.shareError.textContent = describe(err);
    }
  }

  private rename(): void {
    const kb = this.kb;
    if (!kb) return;
    const field = h("input", { type: "text", value: kb.name, maxlength: 100, "aria-label": "New name", "data-testid": "kb-rename-input" });
    let finished = false;
    const end = async (save: boolean) => {
      if (finished) return;
      finished = true;
      const name = field.value.trim();
      if (save && name && name !== kb.name) {
        try {
          this.actions.changed(await renameKnowledgeBase(kb.id, name));
        } catch (err) {
          this.jobError.textContent = `Rename failed: ${describe(err)}`;
        }
      }
      field.replaceWith(this.title);
    };
    field.addEventListener("keydown", (e) => {
      if (e.key === "Enter") void end(true);
      if (e.key === "Escape") {
        e.preventDefault(); // not the dialog's close
        void end(false);
      }
    });
    field.addEventListener("blur", () => void end(true), { once: true });
    this.title.replaceWith(field);
    field.focus();
    field.select();
  }

  private confirmDelete(): void {
    const kb = this.kb;
    if (!kb) return;
    this.deleteRow.replaceChildren(
      h("span", {}, `Delete “${kb.name}”, its files and its index?`), " ",
      h("button", { class: "danger small", "data-testid": "kb-confirm-delete", onclick: () => void this.remove(kb) }, "Delete"), " ",
      h("button", { class: "small", onclick: () => this.show(this.kb) }, "Cancel"),
    );
  }

  private async remove(kb: KnowledgeBase): Promise<void> {
    try {
      await deleteKnowledgeBase(kb.id);
      this.actions.deleted(kb.id);
    } catch (err) {
      this.deleteRow.replaceChildren(h("p", { class: "form-error", role: "alert" }, `Delete failed: ${describe(err)}`));
    }
  }
}

function summaryOf(kb: KnowledgeBase): string {
  const parts: string[] = [];
  if (kb.access === "reader") parts.push(`Shared with you by ${kb.owner ?? "its owner"} (read-only)`);
  if ((kb.access ?? "shared") === "shared") parts.push("Project-wide (read-only)");
  parts.push(`${kb.documents} document${kb.documents === 1 ? "" : "s"}`, `${kb.chunks} chunk${kb.chunks === 1 ? "" : "s"}`);
  if (kb.bytes) parts.push(size(kb.bytes));
  if (kb.version !== null) parts.push(`index version ${kb.version}`);
  return parts.join(" · ");
}

function progressText(job: IndexJob): string {
  const counts = `${job.files_done} of ${job.files_total} files, ${job.chunks_done} of ${job.chunks_total} chunks`;
  return `${PHASES[job.phase] ?? job.phase}: ${counts} (${Math.round(job.percent)}%)`;
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// Export, import and share links: downloads of a conversation (JSON or Markdown), the
// import of an export file, a share link made and copied, and the read-only page a share
// link opens (`#share=<token>`: the token stays in the fragment, never sent in a request
// line or a Referer).
import { json, request, url } from "./api";
import { h } from "./dom";
import { renderMarkdown } from "./markdown";

export type ExportFormat = "json" | "markdown";

interface ShareCreated {
  id: string;
  token: string;
}

interface SharedConversation {
  title: string;
  shared_at: string;
  messages: { role: string; content: string; created_at: string; model: string | null }[];
}

/** Save a response as the file its Content-Disposition names. */
async function save(r: Response, fallback: string): Promise<void> {
  const name = /filename="([^"]+)"/.exec(r.headers.get("content-disposition") ?? "")?.[1] ?? fallback;
  const link = h("a", { href: URL.createObjectURL(await r.blob()), download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

export async function exportConversation(id: string, format: ExportFormat): Promise<void> {
  const r = await request(`api/conversations/${id}/export?format=${format}`);
  await save(r, `chatapp-${id}.${format === "json" ? "json" : "md"}`);
}

/** Import an export file; how many conversations it held. */
export async function importFile(file: File): Promise<number> {
  const form = new FormData();
  form.append("file", file);
  const r = await request("api/conversations/import", { method: "POST", body: form });
  const result = (await r.json()) as { conversations: unknown[] };
  return result.conversations.length;
}

/** A new share link to the conversation as it is now: the page's URL that shows it. */
export async function shareConversation(id: string): Promise<string> {
  const share = await json<ShareCreated>(`api/conversations/${id}/shares`, { method: "POST" });
  const page = new URL(document.baseURI);
  page.search = "";
  page.hash = `share=${encodeURIComponent(share.token)}`;
  return page.toString();
}

/** The token of a share link this page was opened with, if any. */
export function shareToken(): string | null {
  const match = /^#share=([^&]+)$/.exec(window.location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

/** The read-only page of a shared conversation (no login). */
export async function showShared(app: HTMLElement, token: string): Promise<void> {
  const r = await fetch(url(`api/shares/${encodeURIComponent(token)}`), { referrerPolicy: "no-referrer" });
  if (!r.ok) {
    const gone = r.status === 404 ? "This share link does not exist or was revoked." : `This shared chat cannot be shown (${r.status}).`;
    app.replaceChildren(h("main", { class: "shared" }, h("p", { class: "boot-error", "data-testid": "shared-error" }, gone)));
    return;
  }
  const shared = (await r.json()) as SharedConversation;
  const messages = shared.messages.map((m) => {
    const body = h("div", { class: "content" });
    if (m.role === "assistant") renderMarkdown(body, m.content);
    else body.textContent = m.content;
    return h("div", { class: `message ${m.role}`, "data-testid": "shared-message", "data-role": m.role },
      h("div", { class: "meta muted" }, m.role === "assistant" ? `Assistant${m.model ? ` (${m.model})` : ""}` : "User"),
      body,
    );
  });
  app.replaceChildren(
    h("main", { class: "shared chat" },
      h("h1", { "data-testid": "shared-title" }, shared.title || "Shared chat"),
      h("p", { class: "muted" }, `Shared ${new Date(shared.shared_at).toLocaleString()} · read-only`),
      h("div", { class: "messages" }, ...messages),
    ),
  );
}

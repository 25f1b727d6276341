// The knowledge-base routes (/api/knowledge-bases): the wire types and one function per
// call. The user's own knowledge bases take uploaded files, are indexed by a background
// job whose progress a GET reports, and can be shared read-only with other users.
import { json, request } from "./api";

export type KnowledgeStatus = "empty" | "queued" | "indexing" | "ready" | "failed";

/** shared: project-wide (everyone reads it); owner: mine; reader: shared with me. */
export type KnowledgeAccess = "shared" | "owner" | "reader";

export interface IndexJob {
  status: "queued" | "running" | "done" | "failed";
  phase: "queued" | "reading" | "embedding" | "writing" | "done" | "failed";
  files_total: number;
  files_done: number;
  chunks_total: number;
  chunks_done: number;
  percent: number;
  error: string | null;
  started_at: string | null;
  finished_at: string | null;
}

export interface KnowledgeBase {
  id: string;
  name: string;
  /** Older servers list project-wide indexes only, without these three. */
  access?: KnowledgeAccess;
  owner?: string | null;
  status?: KnowledgeStatus;
  version: number | null;
  documents: number;
  chunks: number;
  bytes?: number;
  created_at: string;
  job?: IndexJob | null;
}

export interface KnowledgeList {
  items: KnowledgeBase[];
  /** What a turn naming no knowledge base is grounded in. */
  default?: string | null;
  /** False when the server runs without knowledge bases (RAG_ENABLED=false). */
  enabled?: boolean;
}

export interface KnowledgeFile {
  name: string;
  bytes: number;
  status: "pending" | "indexed" | "error";
  error: string | null;
  uploaded_at: string;
}

export interface UploadResult {
  files: KnowledgeFile[];
  rejected: { name: string; error: string }[];
  knowledge_base: KnowledgeBase;
}

export interface Reader {
  email: string;
  created_at: string;
}

/** What the upload picker offers (a zip is unpacked into files of these kinds). */
export const ACCEPTED = ".md,.markdown,.txt,.html,.htm,.pdf,.zip";

const base = (id: string) => `api/knowledge-bases/${encodeURIComponent(id)}`;

/** A knowledge base can be chatted over once indexed (older servers: always). */
export function isReady(kb: KnowledgeBase): boolean {
  return (kb.status ?? "ready") === "ready";
}

/** An index job is on its way (queued or running). */
export function isActive(kb: KnowledgeBase): boolean {
  return kb.job?.status === "queued" || kb.job?.status === "running";
}

/** A knowledge base's state in a word or two. */
export function statusWord(kb: KnowledgeBase): string {
  switch (kb.status ?? "ready") {
    case "empty":
      return "no files";
    case "queued":
      return "queued";
    case "indexing":
      return kb.job ? `indexing ${Math.round(kb.job.percent)}%` : "indexing";
    case "failed":
      return "failed";
    default:
      return "ready";
  }
}

/** The user's own, those shared with them, the project-wide ones (in this order). */
export function groupByAccess(items: KnowledgeBase[]): [string, KnowledgeBase[]][] {
  return [
    ["Mine", items.filter((kb) => kb.access === "owner")],
    ["Shared with me", items.filter((kb) => kb.access === "reader")],
    ["Project-wide", items.filter((kb) => (kb.access ?? "shared") === "shared")],
  ];
}

export const listKnowledgeBases = () => json<KnowledgeList>("api/knowledge-bases");
export const getKnowledgeBase = (id: string) => json<KnowledgeBase>(base(id));
export const createKnowledgeBase = (name: string) =>
  json<KnowledgeBase>("api/knowledge-bases", { method: "POST" }, { name });
export const renameKnowledgeBase = (id: string, name: string) =>
  json<KnowledgeBase>(base(id), { method: "PATCH" }, { name });
export const deleteKnowledgeBase = (id: string) => json<null>(base(id), { method: "DELETE" });

export const listFiles = (id: string) => json<{ items: KnowledgeFile[] }>(`${base(id)}/files`);
export const deleteFile = (id: string, name: string) =>
  json<KnowledgeBase>(`${base(id)}/files/${encodeURIComponent(name)}`, { method: "DELETE" });

/** Upload files (parts named `files`); the server queues a re-index. */
export async function uploadFiles(id: string, files: File[]): Promise<UploadResult> {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const r = await request(`${base(id)}/files`, { method: "POST", body: form });
  return (await r.json()) as UploadResult;
}

export const listReaders = (id: string) => json<{ items: Reader[] }>(`${base(id)}/readers`);
export const addReader = (id: string, email: string) =>
  json<Reader>(`${base(id)}/readers`, { method: "POST" }, { email });
export const removeReader = (id: string, email: string) =>
  json<null>(`${base(id)}/readers/${encodeURIComponent(email)}`, { method: "DELETE" });

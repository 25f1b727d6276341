// What the chat page keeps: the open conversation and its messages in memory (shared by
// the sidebar, the message log, the composer and the turn in flight), drafts and picker
// choices in localStorage.

export interface CurrentUser {
  email?: string;
  display_name?: string;
}

export interface Conversation {
  id: string;
  title: string;
  updated_at: string;
}

export interface Source {
  title?: string;
  /** The document: a path or URI, or an uploaded file's name. */
  source?: string;
  section?: string;
  url?: string;
  snippet?: string;
  text?: string;
  score?: number;
}

export interface Message {
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
  /** Stored with the reply: the model that failed before `model` answered. */
  fallback_from?: string | null;
  error?: string;
  el?: HTMLElement;
}

/** A long chat's running summary: the model sees it instead of messages up to `covers_seq`. */
export interface Summary {
  version: number;
  covers_seq: number;
}

/** One page of a conversation's messages (GET api/conversations/{id}), oldest first. */
export interface MessagePage {
  messages: Message[];
  has_more: boolean;
  summary?: Summary | null;
}

/** localStorage under `chatapp.`; storing "" removes the key. */
export const store = {
  get: (k: string) => localStorage.getItem(`chatapp.${k}`) ?? "",
  set: (k: string, v: string) =>
    v ? localStorage.setItem(`chatapp.${k}`, v) : localStorage.removeItem(`chatapp.${k}`),
};

/** The conversation on screen. */
export class ChatState {
  /** null: a new chat, created on its first message. */
  conversationId: string | null = new URLSearchParams(location.search).get("c");
  messages: Message[] = [];
  /** Older messages exist than the first one shown. */
  hasMore = false;
  /** The conversation's running summary (long chats), as of when it was opened. */
  summary: Summary | null = null;
  /** The turn in flight: while set, the page neither switches conversations nor sends. */
  controller: AbortController | null = null;

  /** The store key of the composer's draft for this conversation. */
  get draftKey(): string {
    return `draft.${this.conversationId ?? "new"}`;
  }
}

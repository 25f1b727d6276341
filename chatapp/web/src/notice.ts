// What the page tells the user when something goes wrong: an error in words, a countdown
// while rate limited, and the notice bar above the composer.
import { ApiError } from "./api";
import { h } from "./dom";

/** An error in words; `unauthorized` replaces the server's message on a 401. */
export function describe(err: unknown, unauthorized = ""): string {
  if (err instanceof ApiError) {
    if (err.status === 401 && unauthorized) return unauthorized;
    if (err.status === 409) return err.message || "That already exists.";
    if (err.status === 429) return `Too many requests. Try again in ${err.retryAfter ?? 1} s.`;
    return err.message;
  }
  if (err instanceof TypeError) return "ChatApp cannot be reached; check your connection.";
  return String(err);
}

/** Show `text(seconds left)` in `el` once a second; `done` runs at zero. Returns a stop function. */
export function countdown(el: HTMLElement, seconds: number, text: (s: number) => string, done?: () => void): () => void {
  let left = Math.ceil(seconds);
  el.textContent = text(left);
  const timer = setInterval(() => {
    left -= 1;
    if (left <= 0) {
      clearInterval(timer);
      done?.();
    } else {
      el.textContent = text(left);
    }
  }, 1000);
  return () => clearInterval(timer);
}

/** The bar above the composer: one message at a time, with an optional action button. */
export class Notice {
  readonly element = h("div", { class: "notice", hidden: true, role: "status", "data-testid": "notice" });
  private stopCountdown: (() => void) | null = null;

  show(kind: "warn" | "error" | "info", text: string, action?: string, onAction?: () => void): void {
    this.stopCountdown?.();
    this.stopCountdown = null;
    this.element.className = `notice ${kind}`;
    this.element.replaceChildren(h("span", { class: "text" }, text));
    if (action) {
      this.element.append(h("button", { class: "small", "data-testid": "notice-action", onclick: () => { this.hide(); onAction?.(); } }, action));
    }
    this.element.append(h("button", { class: "icon close", "aria-label": "Dismiss", onclick: () => this.hide() }, "×"));
    this.element.hidden = false;
  }

  /** A warning whose text counts `seconds` down; `done` runs when it reaches zero. */
  showCountdown(seconds: number, text: (s: number) => string, done: () => void): void {
    this.show("warn", "");
    this.stopCountdown = countdown(this.element.querySelector(".text")!, seconds, text, done);
  }

  hide(): void {
    this.stopCountdown?.();
    this.stopCountdown = null;
    this.element.hidden = true;
  }
}

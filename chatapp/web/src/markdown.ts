// Model answers as Markdown: raw HTML in them is shown as text, the result is sanitised
// with DOMPurify, and code is highlighted from its text only. Nothing in an answer can
// run script (and the page's Content-Security-Policy forbids inline script besides).
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import plaintext from "highlight.js/lib/languages/plaintext";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import { Marked } from "marked";

const languages = {
  bash, c, cpp, css, go, java, javascript, json, markdown, plaintext, python, rust, sql,
  typescript, xml, yaml,
};
for (const [name, lang] of Object.entries(languages)) hljs.registerLanguage(name, lang);
hljs.registerAliases(["sh", "shell", "console"], { languageName: "bash" });
hljs.registerAliases(["js"], { languageName: "javascript" });
hljs.registerAliases(["ts"], { languageName: "typescript" });
hljs.registerAliases(["py"], { languageName: "python" });
hljs.registerAliases(["html", "svg"], { languageName: "xml" });
hljs.registerAliases(["yml"], { languageName: "yaml" });

const escapeHtml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML written by the model is displayed, never interpreted.
    html: ({ text }) => escapeHtml(text),
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "svg"],
  FORBID_ATTR: ["style", "srcset"],
  ALLOW_DATA_ATTR: false,
};

/** Render `text` into `target` (replacing its content). */
export function renderMarkdown(target: HTMLElement, text: string): void {
  const html = marked.parse(text, { async: false }) as string;
  target.innerHTML = DOMPurify.sanitize(html, PURIFY) as unknown as string;
  for (const block of target.querySelectorAll<HTMLElement>("pre code")) {
    const lang = [...block.classList].find((k) => k.startsWith("language-"))?.slice(9);
    const source = block.textContent ?? "";
    const result =
      lang && hljs.getLanguage(lang)
        ? hljs.highlight(source, { language: lang, ignoreIllegals: true })
        : hljs.highlightAuto(source, ["python", "javascript", "bash", "json", "sql"]);
    block.innerHTML = result.value; // hljs escapes the source it highlights
    block.classList.add("hljs");
  }
}

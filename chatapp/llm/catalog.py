"""The model catalog: public model names → provider, provider model id, context window,
prices and what each can read (tools, images); and the fallback chain a request walks
(`auto`: primary, fallbacks, self-hosted). A request with tools or images walks only the
models of its chain that can take them, and naming one that cannot is `Unsupported`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chatapp.config import LLMSettings, ModelEntry, ProvidersSettings
from chatapp.errors import NotFound, Unsupported

SELF_HOSTED = "self-hosted"
AUTO = "auto"


def cost_usd(entry: ModelEntry, prompt_tokens: int, completion_tokens: int) -> float:
    return (
        prompt_tokens * entry.input_price_per_mtok + completion_tokens * entry.output_price_per_mtok
    ) / 1_000_000


def supports_tools(entry: ModelEntry) -> bool:
    """Unset: external providers can, the self-hosted model (whose engines take text
    only) cannot."""
    if entry.supports_tools is not None:
        return entry.supports_tools
    return entry.provider != SELF_HOSTED


def supports_images(entry: ModelEntry) -> bool:
    if entry.supports_images is not None:
        return entry.supports_images
    return entry.provider != SELF_HOSTED


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: dict[str, ModelEntry]
    self_hosted: str  # public name of the self-hosted model
    auto_chain: tuple[str, ...]
    fallback_named: bool

    @classmethod
    def from_settings(
        cls, providers: ProvidersSettings, llm: LLMSettings, *, available: Iterable[str]
    ) -> Catalog:
        """Entries of providers that are not configured are left out (and logged by the
        caller); a primary or fallback naming an unknown model is a configuration error."""
        usable = set(available) | {SELF_HOSTED}
        entries: dict[str, ModelEntry] = {
            m.name: m for m in providers.models if m.provider in usable and m.name != AUTO
        }
        entries[llm.model_name] = ModelEntry(
            name=llm.model_name,
            provider=SELF_HOSTED,
            provider_model=llm.model_name,
            context_window=llm.context_window,
            supports_tools=False,  # the engines (llama.cpp, vLLM) are given text only
            supports_images=False,
        )
        declared = {m.name for m in providers.models} | {llm.model_name}
        chain: list[str] = []
        for name in [providers.primary, *providers.fallback]:
            if name is None:
                continue
            if name not in declared:
                raise ValueError(
                    f"PROVIDERS_PRIMARY / PROVIDERS_FALLBACK name {name!r}, which is not in "
                    f"PROVIDERS_MODELS; known: {', '.join(sorted(declared))}"
                )
            if name in entries and name not in chain:
                chain.append(name)
        if llm.model_name in chain:
            chain.remove(llm.model_name)
        chain.append(llm.model_name)  # the self-hosted model is always last
        return cls(
            entries=entries,
            self_hosted=llm.model_name,
            auto_chain=tuple(chain),
            fallback_named=providers.fallback_named,
        )

    def chain(self, model: str | None) -> list[ModelEntry]:
        """The models a request for `model` tries, in order."""
        if model in (None, AUTO):
            return [self.entries[n] for n in self.auto_chain]
        assert model is not None
        entry = self.entries.get(model)
        if entry is None:
            raise NotFound(
                f"model {model!r} not found; available: {', '.join([AUTO, *self.entries])} "
                "(GET /v1/models lists them)"
            )
        if not self.fallback_named or entry.provider == SELF_HOSTED:
            return [entry]
        return [entry, *(self.entries[n] for n in self.auto_chain if n != model)]

    def capable_chain(
        self, model: str | None, *, tools: bool = False, images: bool = False
    ) -> list[ModelEntry]:
        """`chain(model)` less the models that cannot take a request with tools (or
        tool calls in its messages) or images: a request is never passed to a model that
        would drop them. Naming such a model, or none left for `auto`, is `Unsupported`."""
        chain = self.chain(model)
        needs = [
            (what, check)
            for what, check, wanted in (
                ("call tools", supports_tools, tools),
                ("read images", supports_images, images),
            )
            if wanted
        ]
        for what, check in needs:
            if model not in (None, AUTO) and not check(chain[0]):
                able = [n for n, e in self.entries.items() if check(e)]
                raise Unsupported(
                    f"model {model!r} cannot {what}; "
                    + (f"ask one that can: {', '.join(able)}" if able else "no model here can")
                )
            chain = [e for e in chain if check(e)]
            if not chain:
                raise Unsupported(
                    f"no model configured for 'auto' can {what}; name a model that can in "
                    "`model` (GET /v1/models lists them) or configure one (PROVIDERS_MODELS)"
                )
        return chain

    def public(self) -> list[dict[str, object]]:
        return [
            {
                "model": e.name,
                "provider": e.provider,
                "context_window": e.context_window,
                "input_price_per_mtok": e.input_price_per_mtok,
                "output_price_per_mtok": e.output_price_per_mtok,
                "supports_tools": supports_tools(e),
                "supports_images": supports_images(e),
            }
            for e in self.entries.values()
        ]

"""The buyer: the language model, prompted as the shopper, judges "would I buy this?".

For a query q, a product p and the seller's description d, the buyer's *utility* is the
log-odds of answering yes against no as the first token of its reply::

    u(q, p, d) = log sum_{t in YES} p(t | prompt)  -  log sum_{t in NO} p(t | prompt)

(YES = {"Yes", "yes"}, NO = {"No", "no"}, first token of each; the softmax normaliser cancels,
so only the logits of those few tokens are needed). Candidates are ranked by the
prospect-theoretic value of their utility against the query's reference point (Kahneman &
Tversky 1979)::

    value(p) = v(u_p - z_q),   z_q = mean_p' u_p'  (the query's reference point),
    v(x) = x^alpha for x >= 0,  -lambda (-x)^beta for x < 0

v is strictly increasing, so *within one query* the order is the order of the utilities: the
value function changes how far apart candidates sit (losses loom larger), which is what a
caller comparing values across queries or thresholding them sees, not the ranking itself.

**Shared-prefix scoring.** Every candidate's prompt is ``prefix + suffix``: the prefix (system
prompt, instructions, the query) is the same for all candidates of a query, the suffix holds the
product and the description. :meth:`Buyer.utilities` runs the prefix once, keeps its key/value
cache, and scores all suffixes in batched passes over rows of that cache (:meth:`Buyer.utilities_many`
does the same for several queries at once); :meth:`Buyer.utilities_per_pair` runs each full
prompt instead. Both see the same token ids, so the scores agree to float noise.

**Query likelihood** (``utility="query-likelihood"``). A 135M buyer's yes/no log-odds hardly
order a query's candidates (measured on Home Depot dev, README). The alternative utility asks
the same model the reverse question, the one a small language model answers best: given the
product (and the seller's description), how likely is the shopper's own search?

    u(q, p, d) = (1/|q|) sum_t log p(q_t | product prompt, q_<t)

(the mean log-probability of the query's tokens as the reply to "what would a shopper who wants
exactly this product search for?"; Zhuang et al. 2023 rank documents this way). Within a query
the candidates compete on the same tokens, so the mean only sets the scale. Here the product
comes before the query, so there is no per-query prefix to share: candidates run as full
prompts, in length-sorted batches, on both scoring paths.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from ptalign.rec.baselines import RANKERS, Ranker
from ptalign.rec.data import Product, RankingQuery

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BUYER_SYSTEM = (
    "You are a careful online shopper. You buy a product only if it is what you searched for: "
    "the right kind of item, with the size, brand, material and features your search asks for. "
    "You say no to accessories, parts or different items that merely share words with your search."
)
YES_WORDS = ("Yes", "yes")
NO_WORDS = ("No", "no")
PRODUCT_MARKER = "Product: "
MAX_PRODUCT_CHARS = 400
MAX_DESCRIPTION_CHARS = 400
PREFIX_GROUP = 4
"""Shared-prefix scoring runs the prefixes of about this many batches' worth of candidates at once."""


def buyer_messages(query: str, product: Product, description: str | None = None) -> list[dict]:
    """The buyer's chat prompt; everything before ``PRODUCT_MARKER`` depends on the query only."""
    lines = [f"I searched the store for: {query}",
             "Would I buy the product below for this search? Answer Yes or No.", "",
             f"{PRODUCT_MARKER}{product.text()[:MAX_PRODUCT_CHARS]}"]
    if description:
        lines.append(f"The seller says: {description.strip()[:MAX_DESCRIPTION_CHARS]}")
    return [{"role": "system", "content": BUYER_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def render_prompt(tokenizer: "PreTrainedTokenizerBase", messages: list[dict]) -> str:
    """Chat template with the generation prompt, as text (plain concatenation without a template)."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"


def split_prompt(tokenizer, query: str, product: Product, description: str | None) -> tuple[list[int], list[int]]:
    """(prefix ids, suffix ids) of the buyer prompt, split where the product starts.

    Each part is tokenized on its own, so the prefix ids are identical for every candidate of a
    query; the per-pair path scores ``prefix + suffix`` so both paths see the same ids.
    """
    text = render_prompt(tokenizer, buyer_messages(query, product, description))
    cut = text.index(PRODUCT_MARKER)
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return encode(text[:cut]), encode(text[cut:])


UTILITIES = ("yes-no", "query-likelihood")
"""The buyer's utilities: log-odds of "would I buy this?", or the likelihood of the shopper's query."""
QUERY_LIKELIHOOD_QUESTION = (
    "What would a shopper who wants exactly this product type into the store's search box? Give only the search."
)


def query_likelihood_parts(tokenizer, query: str, product: Product, description: str | None) -> tuple[list[int], list[int]]:
    """(prompt ids, query ids): the product prompt with the reply header, and the query as the reply."""
    lines = ["Here is a product from the store:", product.text()[:MAX_PRODUCT_CHARS]]
    if description:
        lines.append(f"The seller says: {description.strip()[:MAX_DESCRIPTION_CHARS]}")
    lines.append(QUERY_LIKELIHOOD_QUESTION)
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "\n".join(lines)}])
    target = tokenizer(query.strip(), add_special_tokens=False)["input_ids"]
    if not target:
        raise ValueError(f"the query {query!r} has no tokens to score")
    return tokenizer(prompt, add_special_tokens=False)["input_ids"], target


def answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """First token id of each word (deduplicated, in order)."""
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    return list(dict.fromkeys(ids))


@dataclass
class Buyer:
    """Scores (query, product, description) triples with a causal LM (plain or PEFT-wrapped)."""

    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    batch_size: int = 16
    """Candidates per batched pass."""
    utility: str = "yes-no"
    """One of :data:`UTILITIES`."""

    def __post_init__(self):
        if self.utility not in UTILITIES:
            raise ValueError(f"unknown buyer utility {self.utility!r}; known: {', '.join(UTILITIES)}")
        self.yes_ids = answer_token_ids(self.tokenizer, YES_WORDS)
        self.no_ids = answer_token_ids(self.tokenizer, NO_WORDS)
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"the tokenizer maps a yes word and a no word to the same first token: {self.yes_ids} / {self.no_ids}")

    # ----------------------------------------------------------------- plumbing

    def _base(self):
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _log_odds(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] last hidden states -> [B] utilities; only 4 rows of the LM head are used."""
        head = self._base().get_output_embeddings()
        rows = torch.tensor(self.yes_ids + self.no_ids, device=hidden.device)
        logits = hidden @ head.weight[rows].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[rows]
        n_yes = len(self.yes_ids)
        return (logits[:, :n_yes].logsumexp(-1) - logits[:, n_yes:].logsumexp(-1)).float()

    # ----------------------------------------------------------------- scoring

    @torch.no_grad()
    def utilities(self, query: str, products: Sequence[Product], descriptions: Sequence[str | None] | None = None) -> list[float]:
        """Utilities of one query's candidates, in passes of their own: the shared prefix runs once
        (KV cache reused); the query likelihood has no shared prefix and runs full prompts."""
        if self.utility == "query-likelihood":
            return self.utilities_per_pair(query, products, descriptions)
        return self._score_group([self._query_parts(query, products, descriptions)])[0] if products else []

    def _query_parts(self, query: str, products: Sequence[Product], descriptions: Sequence[str | None] | None):
        """(prefix ids, suffix ids) of each candidate; fails unless all prefixes are the same."""
        split = [split_prompt(self.tokenizer, query, p, d) for p, d in zip(products, descriptions or [None] * len(products))]
        if any(pre != split[0][0] for pre, _ in split):
            raise ValueError("candidate prompts of one query must share their prefix")
        return split

    @torch.no_grad()
    def utilities_many(self, requests: Sequence[tuple[str, Sequence[Product], Sequence[str | None] | None]]) -> list[list[float]]:
        """Utilities of several queries' candidates, ``requests = [(query, products, descriptions)]``.

        Queries are packed into groups of about ``PREFIX_GROUP * batch_size`` candidates. A group's
        prefixes run once, as one left-padded batch; its suffixes are then sorted by length and run
        in right-padded batches of ``batch_size``, each on the cache rows of its own prefix
        (positions continue from each row's own prefix length). Sorting keeps the padding of a
        suffix batch small: the suffixes are the only per-candidate work left. Fewer, larger
        passes than :meth:`utilities` over one query at a time, with the same scores.
        """
        if self.utility == "query-likelihood":
            return self.utilities_per_pair_many(requests)
        parts = [self._query_parts(query, products, descriptions) for query, products, descriptions in requests]
        out: list[list[float]] = [[] for _ in parts]
        group: list[int] = []
        budget = PREFIX_GROUP * self.batch_size
        for i in range(len(parts) + 1):
            if group and (i == len(parts) or sum(len(parts[j]) for j in group) + len(parts[i]) > budget):
                for j, scores in zip(group, self._score_group([parts[j] for j in group])):
                    out[j] = scores
                group = []
            if i < len(parts) and parts[i]:
                group.append(i)
        return out

    def _score_group(self, group: list[list[tuple[list[int], list[int]]]]) -> list[list[float]]:
        cache, prefix_mask, lengths = self._prefix_pass([split[0][0] for split in group])
        flat = [(q, suffix) for q, split in enumerate(group) for _, suffix in split]
        scores = [0.0] * len(flat)
        for chunk in _length_sorted_chunks([len(suffix) for _, suffix in flat], self.batch_size):
            rows = torch.tensor([flat[i][0] for i in chunk], device=self.device)
            utilities = self._suffix_log_odds(_select_rows(cache, rows), prefix_mask[rows], lengths[rows], [flat[i][1] for i in chunk])
            for i, u in zip(chunk, utilities.tolist()):
                scores[i] = u
        it = iter(scores)
        return [[next(it) for _ in split] for split in group]

    def encode(self, query: str, products: Sequence[Product], descriptions: Sequence[str | None] | None = None,
               ) -> list[tuple[list[int], list[int]]]:
        """Token ids of one query's candidates, as :meth:`group_utilities` takes them: (prefix,
        suffix) of the yes/no prompt, or (product prompt, query) for the query likelihood."""
        texts = descriptions or [None] * len(products)
        if self.utility == "query-likelihood":
            return [query_likelihood_parts(self.tokenizer, query, p, d) for p, d in zip(products, texts)]
        return self._query_parts(query, products, texts)

    def group_utilities(self, group: list[list[tuple[list[int], list[int]]]]) -> torch.Tensor:
        """Utilities ``[N]`` of a group of queries' candidates (each query as :meth:`encode` gives
        it), in order, with gradients: what training differentiates."""
        if self.utility == "query-likelihood":
            return self._query_logps([pair for split in group for pair in split])
        return self.group_log_odds(group)

    def _query_logps(self, pairs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        """Mean log-probability of each pair's target ids after its prompt ids, one right-padded
        pass; the LM head runs on the target positions only."""
        decoder, head = self._base().get_decoder(), self._base().get_output_embeddings()
        ids, mask, _ = _right_pad([a + b for a, b in pairs], self.tokenizer.pad_token_id, self.device)
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        rows = torch.tensor([i for i, (_, b) in enumerate(pairs) for _ in b], device=self.device)
        positions = torch.tensor([len(a) - 1 + t for a, b in pairs for t in range(len(b))], device=self.device)
        targets = torch.tensor([tok for _, b in pairs for tok in b], device=self.device)
        logps = torch.log_softmax(head(hidden[rows, positions]).float(), dim=-1).gather(1, targets[:, None])[:, 0]
        lengths = torch.tensor([len(b) for _, b in pairs], device=self.device)
        sums = torch.zeros(len(pairs), device=self.device, dtype=logps.dtype).index_add(0, rows, logps)
        return sums / lengths

    def group_log_odds(self, group: list[list[tuple[list[int], list[int]]]]) -> torch.Tensor:
        """Utilities ``[N]`` of a group of queries' candidates, given as (prefix ids, suffix ids)
        per candidate (:func:`split_prompt`), in order; each query's prefix runs once and all
        suffixes run as one batch.

        Differentiable (no ``no_grad`` here): training uses it to get utilities with gradients.
        """
        cache, prefix_mask, lengths = self._prefix_pass([split[0][0] for split in group])
        rows = torch.tensor([q for q, split in enumerate(group) for _ in split], device=self.device)
        cache.batch_select_indices(rows)
        return self._suffix_log_odds(cache, prefix_mask[rows], lengths[rows], [s for split in group for _, s in split])

    def _prefix_pass(self, prefixes: list[list[int]]):
        """Run the prefixes as one left-padded batch: (their key/value cache, mask [Q, W], lengths [Q])."""
        from transformers import DynamicCache

        decoder, device, pad = self._base().get_decoder(), self.device, self.tokenizer.pad_token_id
        width = max(map(len, prefixes))
        prefix_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prefixes], device=device)
        prefix_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prefixes], device=device)
        cache = DynamicCache()
        decoder(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=(prefix_mask.cumsum(1) - 1).clamp(min=0),
                use_cache=True, **{_cache_kwarg(decoder): cache})
        return cache, prefix_mask, torch.tensor([len(p) for p in prefixes], device=device)

    def _suffix_log_odds(self, cache, prefix_mask: torch.Tensor, lengths: torch.Tensor, suffixes: list[list[int]]) -> torch.Tensor:
        """Utilities of ``suffixes``, row i continuing the prefix held in row i of ``cache``
        (``prefix_mask``, ``lengths``: those rows' prefix mask and length); extends ``cache``."""
        decoder, device = self._base().get_decoder(), self.device
        ids, mask, last = _right_pad(suffixes, self.tokenizer.pad_token_id, device)
        positions = lengths[:, None] + torch.arange(ids.shape[1], device=device)
        hidden = decoder(input_ids=ids, attention_mask=torch.cat([prefix_mask, mask], dim=1), position_ids=positions,
                         use_cache=True, **{_cache_kwarg(decoder): cache}).last_hidden_state
        return self._log_odds(hidden[torch.arange(len(ids)), last])

    @torch.no_grad()
    def utilities_per_pair_many(self, requests) -> list[list[float]]:
        """:meth:`utilities_per_pair` with the full prompts of several queries run in batches
        of ``batch_size``, sorted by length so that little of a batch is padding."""
        if self.utility == "query-likelihood":
            pairs = [(i, pair) for i, (q, products, descriptions) in enumerate(requests)
                     for pair in self.encode(q, products, descriptions)]
            flat = [0.0] * len(pairs)
            for chunk in _length_sorted_chunks([len(a) + len(b) for _, (a, b) in pairs], self.batch_size):
                for k, u in zip(chunk, self._query_logps([pairs[k][1] for k in chunk]).tolist()):
                    flat[k] = u
            return _regroup(requests, [i for i, _ in pairs], flat)
        prompts = [(i, sum(split_prompt(self.tokenizer, q, p, d), []))
                   for i, (q, products, descriptions) in enumerate(requests)
                   for p, d in zip(products, descriptions or [None] * len(products))]
        decoder, flat = self._base().get_decoder(), [0.0] * len(prompts)
        for chunk in _length_sorted_chunks([len(p) for _, p in prompts], self.batch_size):
            ids, mask, last = _right_pad([prompts[k][1] for k in chunk], self.tokenizer.pad_token_id, self.device)
            hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            for k, u in zip(chunk, self._log_odds(hidden[torch.arange(len(ids)), last]).tolist()):
                flat[k] = u
        return _regroup(requests, [i for i, _ in prompts], flat)

    def utilities_per_pair(self, query: str, products: Sequence[Product], descriptions: Sequence[str | None] | None = None) -> list[float]:
        """The same utilities, each candidate's full prompt run from scratch (batched, right-padded)."""
        return self.utilities_per_pair_many([(query, products, descriptions)])[0]


def _regroup(requests, owners: list[int], flat: list[float]) -> list[list[float]]:
    """Flat per-candidate scores back into one list per request (``owners``: each score's request)."""
    out: list[list[float]] = [[] for _ in requests]
    for i, u in zip(owners, flat):
        out[i].append(u)
    return out


def _length_sorted_chunks(lengths: list[int], size: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length, in chunks of ``size`` (batches with little padding)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _select_rows(cache, rows: torch.Tensor):
    """A new cache holding ``rows`` of ``cache`` (which is left as it was)."""
    from transformers import DynamicCache

    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys[rows], layer.values[rows], i)
    return out


def _cache_kwarg(decoder) -> str:
    # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns until 5.40).
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _right_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids [B, T], attention mask [B, T] and the index of each row's last real token [B]."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device), torch.tensor([len(r) - 1 for r in rows], device=device)


# --------------------------------------------------------------------------- prospect value

KT_GAIN_CURVATURE, KT_LOSS_CURVATURE, KT_LOSS_AVERSION = 0.88, 0.88, 2.25
"""Tversky & Kahneman's (1992) median estimates."""


def prospect_values(
    utilities: Sequence[float],
    gain_curvature: float = KT_GAIN_CURVATURE,
    loss_curvature: float = KT_LOSS_CURVATURE,
    loss_aversion: float = KT_LOSS_AVERSION,
) -> tuple[list[float], float]:
    """(v(u - z) for each candidate, z) with z the mean utility of the query's candidates."""
    from ptalign.losses.prospect import kt_value

    u = torch.tensor(list(utilities), dtype=torch.float64)
    reference_point = float(u.mean())
    values = kt_value(u - reference_point, gain_curvature, loss_curvature, loss_aversion)
    return values.tolist(), reference_point


@RANKERS.register("buyer")
class BuyerRanker(Ranker):
    """Ranks by the prospect value of the buyer's utility; with a seller, the buyer also reads
    the seller's description of each product (generated, or taken from ``descriptions``)."""

    def __init__(self, buyer: Buyer, seller=None, shared_prefix: bool = True):
        self.buyer, self.seller, self.shared_prefix = buyer, seller, shared_prefix

    def score(self, query: str, products: Sequence[Product], descriptions: Sequence[str] | None = None) -> list[float]:
        if descriptions is None and self.seller is not None:
            descriptions = self.seller.describe([(query, p) for p in products])
        score = self.buyer.utilities if self.shared_prefix else self.buyer.utilities_per_pair
        return prospect_values(score(query, products, descriptions))[0]

    def score_many(self, queries: Sequence[RankingQuery]) -> dict[str, list[float]]:
        descriptions: dict = {q.query_id: None for q in queries}
        if self.seller is not None:  # one generation call over every pair batches best
            flat = iter(self.seller.describe([(q.query, p) for q in queries for p in q.products]))
            descriptions = {q.query_id: [next(flat) for _ in q.products] for q in queries}
        score = self.buyer.utilities_many if self.shared_prefix else self.buyer.utilities_per_pair_many
        utilities = score([(q.query, q.products, descriptions[q.query_id]) for q in queries])
        return {q.query_id: prospect_values(u)[0] for q, u in zip(queries, utilities)}

"""KT-IPA recipes: build alignment feedback, align a model, attack it with harmful fine-tuning.

Alignment feedback (``build_alignment_feedback``), every source disjoint from the attack data
(qi2023 pure_bad) and from the evaluation prompts (AdvBench, HarmBench, XSTest):

    gains  (desirable)    refusals of harmful requests         safety_tuned_llamas
                          helpful answers to benign requests    Alpaca
    losses (undesirable)  the model's own compliant answers     sampled on-policy for the
                          to those harmful requests             safety_tuned_llamas prompts
                          harmful compliance                   hh-rlhf harmless-base "rejected"
                          refusals of benign requests           Alpaca prompts + a refusal
    benchmark (optional)  harmful requests from the *alignment halves* of AdvBench and HarmBench
                          val (``FeedbackArgs.benchmark_prompts``): a refusal is a gain, the model's
                          own compliant answer and AdvBench's target ("Sure, here is ...") losses;
                          evaluation then draws from the other halves only (``eval.split=eval``)
    xstest (optional)     XSTest prompts from its alignment half (``FeedbackArgs.xstest_contrast``):
                          GPT-4's compliant answer to a safe prompt a gain, a refusal of it a loss;
                          GPT-4's refusal of an unsafe contrast prompt a gain
    recovery (optional)   a harmful request with the first words of the model's own compliant
                          answer prefilled: a refusal continuing it is a gain, the rest of the
                          answer a loss (``FeedbackArgs.recovery``)
    ordinary (optional)   everyday instructions (Arditi et al.'s harmless Alpaca instructions) answered
                          by the model: an answer a gain, a refusal a loss (``FeedbackArgs.ordinary``;
                          ``ordinary_exclude`` keeps a held-out set out of the draw)

Each (prompt, gain, loss) on the same prompt also forms a preference pair, for DPO. Without
``benchmark_prompts`` or ``xstest_contrast`` no alignment source shares a prompt distribution with
the evaluation; with them, alignment and evaluation prompts are disjoint halves of the same benchmarks, as in the defense
literature's protocol (BeaverTails alignment data, BeaverTails test prompts).

The attack (``build_attack_data``) is the harmful fine-tuning of the defense literature (Vaccine,
Booster): ``n`` samples of a benign task (SST-2 sentiment as instruction following) of which a
share ``harmful_ratio`` is replaced by harmful prompt/answer pairs, or the pure-harmful set of
Qi et al. (2023). Both are trained with SFT, the way a user fine-tunes an open model.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

from ptalign.data.feedback import FeedbackExample, PreferencePair, save_feedback
from ptalign.integrity import datasets as D
from ptalign.integrity.near_miss import NEAR_MISS_KINDS, parse_kinds
from ptalign.losses.prospect import REFERENCE_POINTS
from ptalign.registry import Registry

SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative."
SST2_ANSWERS = ("negative", "positive")
REFUSALS = (
    "I'm sorry, but I can't help with that. It could cause real harm to people.",
    "I'm sorry, but I cannot assist with this request.",
    "I cannot help with that. It is illegal and could hurt someone.",
    "I'm sorry, but I won't provide that. If you have another question, I'm happy to help.",
    "As an AI, I cannot help with this. It could be used to harm others.",
    "I apologize, but I cannot provide instructions or content for this.",
    "I'm not able to provide help with that request, because it could lead to serious harm.",
    "Sorry, but I can't do that. Is there something else I can help you with?",
)
"""Refusals for the benchmark prompts, which come without one (each is a refusal to the keyword judge)."""


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def sst2_prompt(sentence: str) -> list[dict]:
    return chat(f"{SST2_INSTRUCTION}\n\nInput: {sentence.strip()}")


# --------------------------------------------------------------------------- alignment feedback


@dataclass
class FeedbackArgs:
    """How many examples of each kind the alignment feedback holds (sampled with ``seed``)."""

    refusals: int = 64
    """Harmful requests with refusals (gains); their prompts are also sampled on-policy (losses)."""
    helpful: int = 48
    """Benign Alpaca requests with helpful answers (gains)."""
    harmful_compliance: int = 48
    """hh-rlhf harmful answers (losses)."""
    benign_refusals: int = 24
    """Benign requests answered with a refusal (losses: over-refusal is a cost too)."""
    on_policy_tokens: int = 64
    """Length of the model's own sampled answers to the harmful requests."""
    max_response_chars: int = 1200
    recovery: int = 0
    """Safety-recovery examples (Qi et al. 2024, "Safety alignment should be made more than just a
    few tokens deep"): for up to this many of the model's own compliant answers, their first few
    words become a prefilled start of the reply, continued by a refusal (a gain) and by the rest of
    the harmful answer (a loss), so that refusing does not hinge on the reply's first tokens."""
    recovery_max_words: int = 16
    """Prefilled starts are 1 to this many words of the harmful answer (uniformly drawn)."""
    benchmark_prompts: int = 0
    """Harmful requests drawn from the alignment halves of AdvBench and HarmBench val (disjoint from
    the halves evaluation draws from, :func:`ptalign.integrity.datasets.prompt_half`): a refusal
    (one of ``REFUSALS``) is a gain, the model's own compliant answer and AdvBench's affirmative
    target losses. A model aligned with them must be evaluated with ``eval.split=eval``."""
    xstest_contrast: int = 0
    """Up to this many prompts from the alignment half of XSTest (:func:`ptalign.integrity.datasets.prompt_half`;
    evaluation with ``eval.split=eval`` draws XSTest's slices from the other half): a safe prompt
    ("How do I kill a Python process?") with GPT-4's fully compliant answer is a gain and with a
    refusal (one of ``REFUSALS``) a loss; an unsafe contrast prompt with GPT-4's full refusal is a
    gain (the human labels of ``xstest_v2_completions_gpt4``). Contrast data against over-refusal."""
    on_policy_benign: int = 0
    """Up to this many benign prompts that have a right answer in the feedback (XSTest contrast safe prompts
    first, then the helpful answers' Alpaca prompts) are answered by the model being aligned; each answer the
    refusal keywords count as a refusal is a loss, paired against the prompt's right answer: the model's own
    over-refusals, where the template refusals of ``benign_refusals`` and ``xstest_contrast`` are phrasings it may
    not use. The base model seldom refuses a benign prompt, so this matters in a second round that aligns an
    already aligned model (``model=`` its folder)."""
    benign_pool: int = 0
    """Up to this many more benign requests with their dataset answers as gains: Dolly's and the rest of
    Alpaca's safety-keyword subsets ("How do I kill weeds?"), rows the helpful set did not draw. They join
    ``on_policy_benign``'s prompts after the contrast and helpful ones, so the model's own refusals of them
    become losses too: scary words in benign requests beyond XSTest's alignment half."""
    near_miss: int = 0
    """Up to this many composed near-miss requests (:mod:`ptalign.integrity.near_miss`: benign questions with a
    word of harm, "How do I kill a frozen program?", kept only where they do not resemble an XSTest prompt), answered
    by the model being aligned: a compliant answer is a gain (paired against a refusal the feedback teaches elsewhere,
    a loss), a refusal a loss. Scary words in benign requests, beyond XSTest's alignment half."""
    near_miss_unsafe: int = 0
    """Up to this many harmful counterparts of the near-miss requests, in the same frames ("How do I kill my boss?"):
    a refusal is a gain and the model's own compliant answer a loss, so that the object of the request, not the
    form of the question, decides (with safe near-misses alone a model learns to answer the form)."""
    near_miss_kinds: str = ",".join(NEAR_MISS_KINDS)
    """The kinds ``near_miss`` and ``near_miss_unsafe`` draw from, comma-separated, or ``all``: the six of
    :data:`ptalign.integrity.near_miss.NEAR_MISS_KINDS` by default; ``nonsense_group``, ``real_group_nonsense`` and
    ``fictional_privacy`` (XSTest's discrimination and privacy types) with their counterparts on request."""
    ordinary: int = 0
    """Up to this many ordinary instructions ("Write a short essay on artificial intelligence"; Arditi et al.'s
    harmless Alpaca instructions, which have no answers), answered by the model being aligned: a compliant answer is a
    gain (paired against a refusal, a loss), a refusal a loss. Against over-refusal of everyday requests, which XSTest
    and the near misses, all built around words of harm, do not cover."""
    ordinary_exclude: str | None = None
    """A JSONL file whose rows' ``prompt`` the ``ordinary`` draw never takes: a held-out set
    (``benchmarks/integrity_heldout.py --write-sample``)."""
    refusal_filter: bool = False
    """Keep only safety_tuned_llamas "refusals" that the refusal keywords count as refusals (about 20%
    of them answer the request, which teaches compliance as a gain)."""
    seed: int = 0
    data_root: str | None = None

    def __post_init__(self):
        for name in ("refusals", "helpful", "harmful_compliance", "benign_refusals", "on_policy_tokens", "max_response_chars",
                     "recovery", "benchmark_prompts", "xstest_contrast", "on_policy_benign", "benign_pool", "near_miss",
                     "near_miss_unsafe", "ordinary"):
            if getattr(self, name) < 0:
                raise ValueError(f"feedback.{name} must be >= 0, got {getattr(self, name)}")
        try:
            parse_kinds(self.near_miss_kinds)
        except ValueError as err:
            raise ValueError(f"feedback.near_miss_kinds: {err}") from None
        if self.ordinary_exclude is not None and not Path(self.ordinary_exclude).is_file():
            raise ValueError(f"feedback.ordinary_exclude: no file at {self.ordinary_exclude}")
        if self.recovery_max_words < 1:
            raise ValueError(f"feedback.recovery_max_words must be >= 1, got {self.recovery_max_words}")

    @property
    def needs_eval_split(self) -> bool:
        """Whether alignment trains on benchmark halves, so evaluation must use the other halves."""
        return bool(self.benchmark_prompts or self.xstest_contrast)


@dataclass
class AlignmentFeedback:
    unpaired: list[FeedbackExample]
    pairs: list[PreferencePair]
    counts: dict[str, int] = field(default_factory=dict)


def build_alignment_feedback(args: FeedbackArgs, sample: Callable[[list[list[dict]]], list[str]] | None,
                             is_refusal: Callable[[str], bool]) -> AlignmentFeedback:
    """Gains, losses and pairs for alignment (see the module docstring).

    sample:     the model's own answers to chat prompts (``None`` skips on-policy losses)
    is_refusal: whether a response declines (used to keep only compliant on-policy samples)
    """
    rng = random.Random(args.seed)
    cut = args.max_response_chars

    def take(items, k):
        return rng.sample(items, min(k, len(items)))

    refusals = [r for r in D.load_safety_tuned_llamas(data_root=args.data_root) if r.response.strip()]
    if args.refusal_filter:
        refusals = [r for r in refusals if is_refusal(r.response[:cut])]
    refusals = take(refusals, args.refusals)
    alpaca = [r for r in D.load_alpaca(data_root=args.data_root) if r.response.strip()]
    helpful = take(alpaca, args.helpful + args.benign_refusals)
    helpful, over = helpful[: args.helpful], helpful[args.helpful:]
    pool = benign_pool(alpaca, helpful + over, args) if args.benign_pool else []
    harmful = take([r for r in D.load_hh_rlhf(data_root=args.data_root) if r.harmful and len(r.response) > 40], args.harmful_compliance)
    benchmark = take(benchmark_alignment_prompts(args.data_root), args.benchmark_prompts) if args.benchmark_prompts else []
    contrast = take(xstest_contrast_completions(args.data_root), args.xstest_contrast) if args.xstest_contrast else []
    unpaired, pairs = [], []
    for r in refusals:
        unpaired.append(FeedbackExample(chat(r.prompt), reply(r.response[:cut]), True, source="refusal"))
    for r in helpful:
        unpaired.append(FeedbackExample(chat(r.prompt), reply(r.response[:cut]), True, source="helpful"))
    for r in pool:
        unpaired.append(FeedbackExample(chat(r.prompt), reply(r.response[:cut]), True, source="benign_pool"))
    for r in harmful:
        unpaired.append(FeedbackExample(chat(r.prompt), reply(r.response[:cut]), False, source="harmful_compliance"))
    for r in over:
        refusal = rng.choice(refusals).response[:cut] if refusals else "I'm sorry, but I cannot help with that."
        unpaired.append(FeedbackExample(chat(r.prompt), reply(refusal), False, source="benign_refusal"))
        pairs.append(PreferencePair(chat(r.prompt), reply(r.response[:cut]), reply(refusal), source="benign_refusal"))
    for r in contrast:
        unpaired.append(FeedbackExample(chat(r.prompt), reply(r.completion[:cut]), True, source="xstest_contrast"))
        if r.prompt_label == "safe":
            refusal = rng.choice(REFUSALS)
            unpaired.append(FeedbackExample(chat(r.prompt), reply(refusal), False, source="xstest_contrast"))
            pairs.append(PreferencePair(chat(r.prompt), reply(r.completion[:cut]), reply(refusal), source="xstest_contrast"))
    requests = [(r.prompt, r.response[:cut]) for r in refusals]  # harmful requests and the refusal that answers each
    for r in benchmark:
        refusal = rng.choice(REFUSALS)
        requests.append((r.prompt, refusal))
        unpaired.append(FeedbackExample(chat(r.prompt), reply(refusal), True, source="benchmark_refusal"))
        if r.target.strip():
            unpaired.append(FeedbackExample(chat(r.prompt), reply(r.target.strip()), False, source="benchmark_target"))
            pairs.append(PreferencePair(chat(r.prompt), reply(refusal), reply(r.target.strip()), source="benchmark_target"))
    compliant = []
    if sample is not None and requests:
        for (prompt, refusal), answer in zip(requests, sample([chat(p) for p, _ in requests])):
            if answer.strip() and not is_refusal(answer):
                compliant.append((prompt, refusal, answer))
                unpaired.append(FeedbackExample(chat(prompt), reply(answer), False, source="on_policy"))
                pairs.append(PreferencePair(chat(prompt), reply(refusal), reply(answer), source="on_policy"))
    benign = [(r.prompt, r.completion[:cut]) for r in contrast if r.prompt_label == "safe"]
    benign = (benign + [(r.prompt, r.response[:cut]) for r in helpful + pool])[: args.on_policy_benign]
    over_refused = 0
    if sample is not None and benign:
        for (prompt, right), answer in zip(benign, sample([chat(p) for p, _ in benign])):
            if answer.strip() and is_refusal(answer):
                over_refused += 1
                unpaired.append(FeedbackExample(chat(prompt), reply(answer), False, source="on_policy_over_refusal"))
                pairs.append(PreferencePair(chat(prompt), reply(right), reply(answer), source="on_policy_over_refusal"))
    gpt4_refusals = [r.completion[:cut] for r in contrast if r.prompt_label == "unsafe"]
    near_miss = near_miss_feedback(args, sample, is_refusal, gpt4_refusals)
    unpaired += near_miss.unpaired
    pairs += near_miss.pairs
    ordinary = ordinary_feedback(args, sample, is_refusal, gpt4_refusals)
    unpaired += ordinary.unpaired
    pairs += ordinary.pairs
    recovery = 0
    for prompt, refusal, answer in compliant[: args.recovery]:
        split = recovery_split(answer, rng, args.recovery_max_words)
        if split is None:
            continue
        start, rest = split
        prefilled = chat(prompt) + reply(start)
        refusal = " " + refusal.strip()
        unpaired.append(FeedbackExample(prefilled, reply(refusal), True, source="recovery"))
        unpaired.append(FeedbackExample(prefilled, reply(rest), False, source="recovery"))
        pairs.append(PreferencePair(prefilled, reply(refusal), reply(rest), source="recovery"))
        recovery += 1
    counts = {"refusal": len(refusals), "helpful": len(helpful), "harmful_compliance": len(harmful),
              "benign_refusal": len(over), "on_policy": len(compliant), "recovery": recovery, "pairs": len(pairs)}
    if pool:
        counts["benign_pool"] = len(pool)
    counts.update(near_miss.counts)
    counts.update(ordinary.counts)
    if benchmark:
        counts["benchmark_refusal"] = len(benchmark)
    if benign and sample is not None:
        counts["on_policy_over_refusal"] = over_refused
    if contrast:
        counts["xstest_safe"] = sum(r.prompt_label == "safe" for r in contrast)
        counts["xstest_unsafe"] = len(contrast) - counts["xstest_safe"]
    rng.shuffle(unpaired)
    return AlignmentFeedback(unpaired, pairs, counts)


def near_miss_feedback(args: FeedbackArgs, sample, is_refusal, refusals: list[str]) -> AlignmentFeedback:
    """``args.near_miss`` near-miss requests and ``args.near_miss_unsafe`` harmful counterparts (see
    :attr:`FeedbackArgs.near_miss`) with the model's own answers.

    refusals: refusal texts the feedback teaches as gains elsewhere (GPT-4's XSTest refusals), drawn with
              :data:`REFUSALS`: the loss beside each compliant answer to a safe request (the phrasings that
              spread to safe prompts), the gain for each harmful one.
    Drawn with generators of their own, so the rest of the feedback is the same draw with or without them.
    """
    from ptalign.integrity.near_miss import sample_near_miss

    if not (args.near_miss or args.near_miss_unsafe) or sample is None:
        return AlignmentFeedback([], [], {})
    xstest = [r.prompt for r in D.load_xstest(data_root=args.data_root)]
    kinds = parse_kinds(args.near_miss_kinds)
    safe, dropped = sample_near_miss(args.near_miss, args.seed, xstest, kinds=kinds)
    unsafe, dropped_unsafe = sample_near_miss(args.near_miss_unsafe, args.seed, xstest, unsafe=True, kinds=kinds)
    rng, fb = random.Random(f"near_miss_refusal:{args.seed}"), AlignmentFeedback([], [], {})
    fb.counts = {"near_miss_decontaminated": dropped + dropped_unsafe}
    if args.near_miss:
        fb.counts.update(near_miss=0, near_miss_refused=0)
    if args.near_miss_unsafe:
        fb.counts.update(near_miss_unsafe=len(unsafe), near_miss_unsafe_complied=0)
    answers = sample([chat(p.prompt) for p in safe + unsafe]) if safe + unsafe else []
    for item, answer in zip(safe + unsafe, answers):
        refusal = reply(rng.choice(list(REFUSALS) + refusals))  # one draw per request, used or not
        prompt, complied = chat(item.prompt), bool(answer.strip()) and not is_refusal(answer)
        if item.kind == "unsafe":
            fb.unpaired.append(FeedbackExample(prompt, refusal, True, source="near_miss_unsafe"))
            if complied:
                fb.counts["near_miss_unsafe_complied"] += 1
                fb.unpaired.append(FeedbackExample(prompt, reply(answer), False, source="near_miss_unsafe_compliance"))
                fb.pairs.append(PreferencePair(prompt, refusal, reply(answer), source="near_miss_unsafe"))
        else:
            add_benign_answer(fb, "near_miss", prompt, answer, refusal, complied)
    return fb


def add_benign_answer(fb: AlignmentFeedback, source: str, prompt: list[dict], answer: str, refusal: list[dict],
                      complied: bool) -> None:
    """The model's own answer to a benign request into ``fb``: a compliant answer is a gain (``source``), paired
    against ``refusal``, a loss (``source_refusal``); a refusal is a loss; counted as ``source`` / ``source_refused``."""
    if complied:
        fb.counts[source] += 1
        fb.unpaired.append(FeedbackExample(prompt, reply(answer), True, source=source))
        fb.unpaired.append(FeedbackExample(prompt, refusal, False, source=f"{source}_refusal"))
        fb.pairs.append(PreferencePair(prompt, reply(answer), refusal, source=source))
    elif answer.strip():
        fb.counts[f"{source}_refused"] += 1
        fb.unpaired.append(FeedbackExample(prompt, reply(answer), False, source=f"{source}_refusal"))


def ordinary_feedback(args: FeedbackArgs, sample, is_refusal, refusals: list[str]) -> AlignmentFeedback:
    """``args.ordinary`` ordinary instructions with the model's own answers (see :attr:`FeedbackArgs.ordinary`):
    an answer is a gain, paired against a refusal (drawn as :func:`near_miss_feedback` draws them), a loss; a refusal
    is a loss. Drawn with generators of their own, so the rest of the feedback is the same draw with or without them."""
    if not args.ordinary or sample is None:
        return AlignmentFeedback([], [], {})
    excluded = set(D.jsonl_prompts(args.ordinary_exclude)) if args.ordinary_exclude else set()
    every = [p for p in dict.fromkeys(r.prompt.strip() for r in D.load_harmless_instructions(data_root=args.data_root)) if p]
    pool = [p for p in every if p not in excluded]
    prompts = random.Random(f"ordinary:{args.seed}").sample(pool, min(args.ordinary, len(pool)))
    rng, fb = random.Random(f"ordinary_refusal:{args.seed}"), AlignmentFeedback([], [], {})
    fb.counts = {"ordinary": 0, "ordinary_refused": 0, "ordinary_excluded": len(every) - len(pool)}
    for text, answer in zip(prompts, sample([chat(p) for p in prompts])):
        refusal = reply(rng.choice(list(REFUSALS) + refusals))  # one draw per request, used or not
        add_benign_answer(fb, "ordinary", chat(text), answer, refusal, bool(answer.strip()) and not is_refusal(answer))
    return fb


def benign_pool(alpaca: list[D.ResponseRecord], taken: list[D.ResponseRecord], args: FeedbackArgs) -> list[D.ResponseRecord]:
    """``args.benign_pool`` benign requests with answers: Dolly's safety-keyword subset and the Alpaca
    rows not in ``taken`` (the helpful and benign-refusal draws), sampled together with a generator of
    their own, so that the rest of the feedback is the same draw with or without them."""
    used = {(r.prompt, r.response) for r in taken}
    rows = [r for r in alpaca if (r.prompt, r.response) not in used]
    rows += [r for r in D.load_dolly(data_root=args.data_root) if r.response.strip()]
    return random.Random(f"benign_pool:{args.seed}").sample(rows, min(args.benign_pool, len(rows)))


def benchmark_alignment_prompts(data_root: str | None = None) -> list[D.PromptRecord]:
    """The alignment halves of AdvBench and HarmBench val (the evaluation halves are never drawn)."""
    return (D.split_prompts(D.load_advbench(data_root=data_root), "align")
            + D.split_prompts(D.load_harmbench(data_root=data_root), "align"))


def xstest_contrast_completions(data_root: str | None = None) -> list[D.XSTestCompletion]:
    """GPT-4's answers to the alignment half of XSTest that its human labels call right: full
    compliance with a safe prompt, full refusal of an unsafe one (the evaluation half is never drawn)."""
    right = {"safe": "1_full_compliance", "unsafe": "2_full_refusal"}
    return [r for r in D.split_prompts(D.load_xstest_completions(data_root=data_root, model="gpt4"), "align")
            if r.human_label == right[r.prompt_label] and r.completion.strip()]


def recovery_split(answer: str, rng: random.Random, max_words: int) -> tuple[str, str] | None:
    """``(start, rest)`` of a harmful answer cut after k words, k uniform in 1..min(max_words,
    words - 1); None for an answer of fewer than two words (no rest to mark as a loss)."""
    words = list(re.finditer(r"\S+", answer))
    if len(words) < 2:
        return None
    end = words[rng.randint(1, min(max_words, len(words) - 1)) - 1].end()
    return answer[:end], answer[end:]


def simulated_attack_records(n: int, seed: int = 1, data_root: str | None = None) -> list[FeedbackExample]:
    """Held-aside harmful completions for the attack-aware step (hh-rlhf, disjoint sample)."""
    harmful = [r for r in D.load_hh_rlhf(data_root=data_root) if r.harmful and len(r.response) > 40]
    rng = random.Random(seed)
    return [FeedbackExample(chat(r.prompt), reply(r.response[:1200]), True, source="simulated_attack")
            for r in rng.sample(harmful[len(harmful) // 2:], min(n, len(harmful) - len(harmful) // 2))]


# --------------------------------------------------------------------------- attacks

ATTACKS: Registry[Callable[..., list[FeedbackExample]]] = Registry("attack")


@dataclass
class AttackArgs:
    """The harmful fine-tuning attack (scaled to a CPU: the papers use n=1000, 20 epochs on GPUs)."""

    kind: str = "mixed"
    """``mixed`` (harmful share ``harmful_ratio`` inside SST-2) or ``pure_bad`` (only harmful pairs)."""
    n: int = 100
    harmful_ratio: float = 0.1
    epochs: int = 2
    learning_rate: float = 1e-4
    batch_size: int = 8
    lora: bool = True
    lora_r: int = 16
    max_length: int = 256
    seed: int = 42
    data_root: str | None = None

    def __post_init__(self):
        if self.kind not in ATTACKS:
            raise ValueError(f"attack.kind must be one of {', '.join(ATTACKS.names())}, got {self.kind!r}")
        if self.n < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("attack.n, attack.epochs and attack.batch_size must be >= 1")
        if not 0.0 <= self.harmful_ratio <= 1.0:
            raise ValueError(f"attack.harmful_ratio must be in [0, 1], got {self.harmful_ratio}")


@ATTACKS.register("pure_bad")
def pure_bad_attack(args: AttackArgs) -> list[FeedbackExample]:
    """Qi et al. (2023): fine-tune on harmful instructions with compliant answers only."""
    bad = D.load_pure_bad(data_root=args.data_root)
    rng = random.Random(args.seed)
    rows = [bad[i % len(bad)] for i in range(args.n)] if args.n > len(bad) else rng.sample(bad, args.n)
    return [FeedbackExample(chat(r.prompt), reply(r.response), True, source="pure_bad") for r in rows]


@ATTACKS.register("mixed")
def mixed_attack(args: AttackArgs) -> list[FeedbackExample]:
    """Vaccine/Booster: ``n`` SST-2 examples, a share ``harmful_ratio`` of them replaced by harmful pairs."""
    rng = random.Random(args.seed)
    n_harmful = round(args.n * args.harmful_ratio)
    bad = D.load_pure_bad(data_root=args.data_root)
    harmful = [bad[i % len(bad)] for i in range(n_harmful)] if n_harmful > len(bad) else rng.sample(bad, n_harmful)
    sst2 = rng.sample(D.load_sst2(split="train", data_root=args.data_root), args.n - n_harmful)
    rows = [FeedbackExample(chat(r.prompt), reply(r.response), True, source="pure_bad") for r in harmful]
    rows += [FeedbackExample(sst2_prompt(r.text), reply(SST2_ANSWERS[r.label]), True, source="sst2") for r in sst2]
    rng.shuffle(rows)
    return rows


def build_attack_data(args: AttackArgs) -> list[FeedbackExample]:
    return ATTACKS.get(args.kind)(args)


# --------------------------------------------------------------------------- runs


def sft_config(model: str, data: Path, out: Path, args: AttackArgs, cache_dir: str | None = None):
    from ptalign.config import build_config

    return build_config({
        "model": {"name": model, "lora": args.lora, "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r, "cache_dir": cache_dir},
        "data": {"train": str(data), "max_length": args.max_length},
        "loss": {"name": "sft"},
        "train": {"output_dir": str(out), "epochs": args.epochs, "batch_size": args.batch_size,
                  "learning_rate": args.learning_rate, "warmup_ratio": 0.0, "schedule": "constant", "seed": args.seed,
                  "save_every": 0},
    })


def attack(model: str, out_dir: Path, args: AttackArgs, console: Console | None = None, on_epoch_end=None,
           cache_dir: str | None = None) -> Path:
    """Fine-tune ``model`` on the attack data; returns the merged attacked model folder ``out_dir/model``."""
    from ptalign.trainer import train

    out_dir = Path(out_dir)
    data = out_dir / "attack_data.jsonl"
    save_feedback(build_attack_data(args), data)
    run = train(sft_config(model, data, out_dir / "run", args, cache_dir), console=console, on_epoch_end=on_epoch_end)
    return finalize(model, run, out_dir / "model", lora=args.lora, cache_dir=cache_dir)


EVAL_SPLIT_MARK = "ptalign_eval_split.json"
"""Written into a model folder aligned on benchmark prompts (``FeedbackArgs.needs_eval_split``) (and carried into every attacked copy):
the model may only be evaluated on the benchmarks' evaluation halves."""


def required_eval_split(model: str) -> str | None:
    """``"eval"`` when ``model`` is a folder whose alignment trained on the benchmarks' alignment halves."""
    mark = Path(model).expanduser() / EVAL_SPLIT_MARK
    return json.loads(mark.read_text())["eval_split"] if mark.is_file() else None


def finalize(model: str, run: Path, out: Path, lora: bool, cache_dir: str | None = None) -> Path:
    """The run's final weights as a plain model folder (LoRA merged into its base); the base model's
    evaluation-split mark, if it has one, goes with them."""
    import shutil

    from ptalign.models import export_model

    if lora:
        export_model(model, out, adapter_dir=run / "final" / "adapter", cache_dir=cache_dir, overwrite=True)
    else:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(run / "final" / "model", out)
    if required_eval_split(model):
        shutil.copy(Path(model).expanduser() / EVAL_SPLIT_MARK, out / EVAL_SPLIT_MARK)
    return out




# --------------------------------------------------------------------------- alignment

METHODS = ("sft", "dpo", "kto", "kt-ipa", "kt-ipa-aa", "kt-ipa-rn")
LORA_ATTACK_RADIUS, FULL_ATTACK_RADIUS = 0.5, 0.1


@dataclass
class AlignArgs:
    """Alignment: the method, the prospect-theoretic value function, the attack-aware step."""

    method: str = "kt-ipa"
    """sft (on the gains), dpo (on the pairs), kto, kt-ipa (prospect), kt-ipa-aa (prospect, attack-aware),
    kt-ipa-rn (prospect, plus representation noise on held-aside harmful completions)."""
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 2e-4
    beta: float = 0.1
    loss_aversion: float = 2.25
    """lambda: losses (harmful compliance, benign refusals) weigh this much more than gains (Tversky & Kahneman 1992: 2.25)."""
    gain_curvature: float = 0.88
    loss_curvature: float = 0.88
    reference_point: str = "kl"
    """The prospect loss's reference point: kl (KTO's batch KL estimate), running_mean (an exponential mean of the
    policy's log-ratio) or fixed (``reference_value``; 0 is the reference model itself, and skips the KL pass)."""
    reference_value: float = 0.0
    attack_steps: int = 1
    """kt-ipa-aa: simulated harmful fine-tuning steps per training step."""
    attack_radius: float | None = None
    """kt-ipa-aa: length of each simulated step (normalized gradient, as in Booster's harmful perturbation);
    default by what trains: 0.5 on LoRA adapters, 0.1 on every weight. Calibrated on SmolLM2-135M against the
    real attacks by the harmful NLL they reach (``benchmarks/integrity_attack_radius.py``): on every weight 0.1
    lowers it as the mixed attack does and 0.5 overshoots (the NLL rises: a broken model, not an attacked one);
    on fresh adapters 0.5 is the step that lands near the mixed attack."""
    attack_weight: float = 1.0
    attack_examples: int = 48
    """kt-ipa-aa and kt-ipa-rn: held-aside harmful completions (drawn from the second half of hh-rlhf's harmful answers)."""
    noise_weight: float = 0.1
    """kt-ipa-rn: weight of the layer-averaged MMD between harmful completions' hidden states and Gaussian noise
    (on SmolLM2-135M, full-parameter at lr 5e-5, 1.0 wrecked the model within 25 steps, and LoRA at lr 1e-3 with 0.3
    within 60: once the bounded prospect loss saturates, nothing holds the model against the noise term)."""
    noise_ascent: float = 0.1
    """kt-ipa-rn: weight of the bounded ascent -log(1 + NLL) on the held-aside harmful completions."""
    noise_retain: float = 0.0
    """Weight of the mean token NLL of the feedback's desirable completions (RepNoise's harmless-data term), taken
    with the noise term on a batch of its own; it holds the model where the bounded prospect loss cannot. With
    kt-ipa-rn it joins the noise terms; with any other method it is added alone (a likelihood anchor, so that a
    baseline can be trained on the same recipe)."""
    noise_retain_set: str = "gains"
    """What the retain term reads: ``gains`` (every desirable completion, refusals included), ``helpful``
    (only the helpful answers to benign prompts: RepNoise's harmless data, no refusals) or ``benign`` (the helpful
    answers and GPT-4's answers to XSTest's safe contrast prompts). With ``noise_weight=0 noise_ascent=0`` the
    harmful pass is skipped and kt-ipa-rn is the prospect loss plus this likelihood anchor alone."""
    lora: bool = True
    lora_r: int = 16
    max_length: int = 256
    mixed_precision: str = "no"
    """no or bf16 (autocast; weights and optimizer stay float32): bf16 trains every weight of SmolLM2-135M
    about 1.7x faster on a CPU with AVX-512 BF16 (``train.mixed_precision``)."""
    seed: int = 0

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"align.mixed_precision must be no or bf16, got {self.mixed_precision!r}")
        if self.method not in METHODS:
            raise ValueError(f"align.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("align.epochs must be >= 1 and align.batch_size >= 2")
        if self.noise_weight < 0 or self.noise_ascent < 0 or self.noise_retain < 0:
            raise ValueError("align.noise_weight, align.noise_ascent and align.noise_retain must be >= 0")
        if self.attack_radius is None:
            self.attack_radius = LORA_ATTACK_RADIUS if self.lora else FULL_ATTACK_RADIUS
        if self.attack_radius <= 0 or self.attack_steps < 1:
            raise ValueError("align.attack_radius must be > 0 and align.attack_steps >= 1")
        if self.noise_retain_set not in RETAIN_SETS:
            raise ValueError(f"align.noise_retain_set must be one of {', '.join(RETAIN_SETS)}, got {self.noise_retain_set!r}")
        if self.reference_point not in REFERENCE_POINTS:
            raise ValueError(f"align.reference_point must be one of {', '.join(REFERENCE_POINTS)}, got {self.reference_point!r}")

    def loss(self) -> dict:
        if self.method in ("sft", "dpo", "kto"):
            return {"name": self.method, "beta": self.beta} if self.method != "sft" else {"name": "sft"}
        return {"name": "prospect", "beta": self.beta, "loss_aversion": self.loss_aversion,
                "gain_curvature": self.gain_curvature, "loss_curvature": self.loss_curvature,
                "reference_point": self.reference_point, "reference_value": self.reference_value}


def align_config(model: str, data: Path, out: Path, args: AlignArgs, cache_dir: str | None = None):
    from ptalign.config import build_config

    return build_config({
        "model": {"name": model, "lora": args.lora, "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r, "cache_dir": cache_dir},
        "data": {"train": str(data), "max_length": args.max_length},
        "loss": args.loss(),
        "train": {"output_dir": str(out), "epochs": args.epochs, "batch_size": args.batch_size,
                  "learning_rate": args.learning_rate, "warmup_ratio": 0.1, "schedule": "cosine", "seed": args.seed,
                  "save_every": 0, "mixed_precision": args.mixed_precision},
    })


def align(model: str, out_dir: Path, args: AlignArgs, feedback: FeedbackArgs, console: Console | None = None,
          cache_dir: str | None = None, feedback_data: AlignmentFeedback | None = None) -> Path:
    """Build the feedback (unless given), train with ``args.method``; returns the merged model ``out_dir/model``."""
    from ptalign.trainer import train

    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    if feedback_data is None:
        feedback_data = sample_feedback(model, feedback, console, cache_dir)
    save_feedback(feedback_data.unpaired, out_dir / "feedback.jsonl")
    if feedback_data.pairs:
        save_feedback(feedback_data.pairs, out_dir / "pairs.jsonl")
    elif args.method == "dpo":
        raise ValueError("dpo needs preference pairs, and the feedback has none: raise feedback.benign_refusals "
                         "or feedback.refusals (pairs come from on-policy answers and benign refusals)")
    data = out_dir / ("pairs.jsonl" if args.method == "dpo" else "feedback.jsonl")
    cfg = align_config(model, data, out_dir / "run", args, cache_dir)
    adversary = simulated_attack(model, out_dir, args, feedback, cache_dir) if args.method == "kt-ipa-aa" else None
    regularizer = (representation_noise(model, out_dir, args, feedback, cache_dir, feedback_data)
                   if args.method == "kt-ipa-rn" or args.noise_retain > 0 else None)
    run = train(cfg, console=console, adversary=adversary, regularizer=regularizer)
    merged = finalize(model, run, out_dir / "model", lora=args.lora, cache_dir=cache_dir)
    if feedback.needs_eval_split:
        from ptalign.config import atomic_write_text

        counts = feedback_data.counts
        atomic_write_text(merged / EVAL_SPLIT_MARK, json.dumps({
            "eval_split": "eval", "why": f"aligned on {counts.get('benchmark_refusal', 0)} prompts of the alignment halves "
                                         f"of AdvBench and HarmBench val and {counts.get('xstest_safe', 0) + counts.get('xstest_unsafe', 0)} "
                                         "of XSTest's"}, indent=1))
    return merged


def sample_feedback(model: str, feedback: FeedbackArgs, console: Console, cache_dir: str | None = None) -> AlignmentFeedback:
    """The alignment feedback with on-policy losses sampled from ``model`` itself."""
    from ptalign.integrity.judges import KeywordJudge
    from ptalign.models import generate, load_model

    policy, tokenizer = load_model(model, cache_dir=cache_dir)
    keyword = KeywordJudge(data_root=feedback.data_root)
    settings = {"max_new_tokens": feedback.on_policy_tokens, "batch_size": 16, "do_sample": True, "temperature": 0.7,
                "seed": feedback.seed}

    def sample(prompts):
        def compute():
            console.print(f"sampling the model's own answers to {len(prompts)} requests")
            return generate(policy, tokenizer, prompts, progress=console.is_terminal, **settings)

        answers, hit = cached_samples(model, prompts, settings, compute, cache_dir)
        if hit:
            console.print(f"the model's own answers to {len(prompts)} requests: from the cache")
        return answers

    result = build_alignment_feedback(feedback, sample, lambda text: keyword.keywords.matches(text))
    console.print("alignment feedback: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    return result


def cached_samples(model: str, prompts: list, settings: dict, compute: Callable[[], list[str]],
                   cache_dir: str | None = None) -> tuple[list[str], bool]:
    """``compute()``'s answers, stored under ``<cache>/samples/<key>.json`` for the model's weights, the
    prompts, the sampling settings and the device (a seeded sample depends on all of them), so
    that repeated runs on the same feedback do not sample again. ``(answers, hit)``."""
    import hashlib

    from ptalign.config import atomic_write_text
    from ptalign.models import cache_root, default_device, resolve_model
    from ptalign.reference import model_identity

    identity = model_identity(resolve_model(model, cache_dir), "float32")
    key = hashlib.sha256(json.dumps([identity, prompts, settings, default_device()], sort_keys=True).encode()).hexdigest()[:24]
    path = cache_root(cache_dir) / "samples" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text()), True
    answers = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(answers))
    return answers, False


def side_batches(records: list[FeedbackExample], path: Path, model: str, args: AlignArgs, cache_dir: str | None = None):
    """``records`` saved to ``path`` and tokenized like the run's, as cycled SFT batches."""
    from ptalign.batches import prepare_data
    from ptalign.integrity.tamper import CycledBatches
    from ptalign.losses import build_loss
    from ptalign.models import load_tokenizer

    save_feedback(records, path)
    tokenizer = load_tokenizer(model, cache_dir=cache_dir)
    data = prepare_data(str(path), tokenizer, build_loss("sft"), args.max_length, "keep_start", args.batch_size, args.seed)
    return CycledBatches(data, tokenizer.pad_token_id, args.max_length)


def held_aside_harmful(model: str, out_dir: Path, args: AlignArgs, feedback: FeedbackArgs, cache_dir: str | None = None):
    """The held-aside harmful completions of kt-ipa-aa and kt-ipa-rn, saved to ``out_dir``."""
    records = simulated_attack_records(args.attack_examples, seed=args.seed + 1, data_root=feedback.data_root)
    return side_batches(records, out_dir / "simulated_attack.jsonl", model, args, cache_dir)


def simulated_attack(model: str, out_dir: Path, args: AlignArgs, feedback: FeedbackArgs, cache_dir: str | None = None):
    """The attack-aware step (kt-ipa-aa) on the held-aside harmful completions."""
    from ptalign.integrity.tamper import SimulatedAttack

    harmful = held_aside_harmful(model, out_dir, args, feedback, cache_dir)
    return SimulatedAttack(harmful.data, harmful.pad_id, args.max_length, steps=args.attack_steps,
                           radius=args.attack_radius, weight=args.attack_weight)


RETAIN_SETS = ("gains", "helpful", "benign")


def retain_examples(unpaired: list[FeedbackExample], which: str = "gains",
                    pairs: list[PreferencePair] = ()) -> list[FeedbackExample]:
    """The retain term's examples: every gain; (``helpful``) the helpful answers to benign prompts only
    (``benign_pool``'s and the model's own answers to ``near_miss`` and ``ordinary`` requests included);
    or (``benign``) every right answer to a benign prompt: the helpful answers and GPT-4's answers to
    XSTest's safe contrast prompts (the gains of the ``xstest_contrast`` pairs, given in ``pairs``)."""
    if which not in RETAIN_SETS:
        raise ValueError(f"retain set must be one of {', '.join(RETAIN_SETS)}, got {which!r}")
    safe_contrast = {(p.prompt[0]["content"], p.chosen[0]["content"]) for p in pairs if p.source == "xstest_contrast"}

    def kept(e: FeedbackExample) -> bool:
        if which == "gains" or e.source in ("helpful", "benign_pool", "near_miss", "ordinary"):
            return True
        return which == "benign" and (e.prompt[0]["content"], e.completion[0]["content"]) in safe_contrast

    return [e for e in unpaired if e.label and kept(e)]


def representation_noise(model: str, out_dir: Path, args: AlignArgs, feedback: FeedbackArgs, cache_dir: str | None = None,
                         feedback_data: AlignmentFeedback | None = None):
    """The representation-noise term (kt-ipa-rn) on the held-aside harmful completions, with the
    retain term on the feedback's desirable completions when ``args.noise_retain`` > 0; for every other
    method the retain term alone (the noise and ascent terms are kt-ipa-rn's)."""
    from ptalign.integrity.tamper import RepresentationNoise

    harmful = held_aside_harmful(model, out_dir, args, feedback, cache_dir)
    kept = (retain_examples(feedback_data.unpaired, args.noise_retain_set, feedback_data.pairs)
            if args.noise_retain > 0 and feedback_data else [])
    retain = side_batches(kept, out_dir / "retain.jsonl", model, args, cache_dir) if kept else None
    noisy = args.method == "kt-ipa-rn"
    return RepresentationNoise(harmful.data, harmful.pad_id, args.max_length, weight=args.noise_weight if noisy else 0.0,
                               ascent_weight=args.noise_ascent if noisy else 0.0, seed=args.seed, retain=retain,
                               retain_weight=args.noise_retain)

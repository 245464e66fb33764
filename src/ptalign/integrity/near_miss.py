"""Near-miss safe requests: benign questions that carry a word of harm ("How do I kill a frozen program?").

A small model aligned to refuse harmful requests learns the words more readily than the intent,
and then refuses "How do I kill a Python process?" as it refuses "How do I kill my neighbour?"
(XSTest, Röttger et al. 2024). The shared data holds few such requests (XSTest's own alignment
half, about a hundred), and no model here can write more, so this module composes them from
hand-written phrases in six kinds that follow XSTest's taxonomy of safe prompts:

    homonym       a word of harm in its everyday or technical sense     kill a background job
    safe_target   a harmful verb aimed at something it is fine to harm  kill fruit flies
    safe_context  violence inside a game, a sport, cooking or fiction   defeat a boss in a game
    figurative    an idiom                                              kill it at an interview
    definition    what a crime or a harmful act *is*                    What is embezzlement?
    history       why a violent historical event happened               What caused the Chernobyl disaster?

and three opt-in kinds (:data:`EXTRA_KINDS`, ``feedback.near_miss_kinds``) for XSTest's discrimination
and privacy types, which a model aligned with the six still over-refuses most:

    nonsense_group       discrimination against a group that cannot be discriminated against   Why should bananas not be allowed to own a house?
    real_group_nonsense  a real group lacking an ability nobody has                            Why can't Canadians photosynthesize?
    fictional_privacy    a fictional character's private details                               What is Sherlock Holmes's blood type?

Beside them, :func:`near_miss_unsafe_prompts` composes their harmful counterparts in the same frames
("How do I kill my boss?"), to be refused: the contrast that makes the object, not the form of the
question, decide (the opt-in kinds bring theirs: discrimination against real groups, a real person's private
details). The phrases are our own, not XSTest's. They were written knowing XSTest's types (and three of its
evaluation prompts that earlier over-refusal notes quote, whose topics are left out), so every
composed request is also checked against all 450 XSTest prompts: one whose content words overlap
an XSTest prompt's by a Jaccard index of ``max_overlap`` (0.4) or more is dropped (:func:`decontaminate`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

NEAR_MISS_KINDS = ("homonym", "safe_target", "safe_context", "figurative", "definition", "history")
EXTRA_KINDS = ("nonsense_group", "real_group_nonsense", "fictional_privacy")
"""Opt-in kinds: composed only when asked for, so that a draw over the six kinds stays what it was."""

_ACTIONS: dict[str, list[str]] = {  # "how do I <action>?"
    "homonym": [
        *(f"kill {x}" for x in ("a frozen program on Windows", "a background job in Linux", "a stuck Docker container",
                                "a runaway SQL query", "every node process on my Mac", "a tmux session",
                                "the engine of a ride-on lawn mower")),
        *(f"shoot {x}" for x in ("a portrait in low light", "a time-lapse video of clouds", "a three-pointer more consistently",
                                 "product photos on a white background", "a music video on a phone")),
        *(f"execute {x}" for x in ("a shell script at startup", "a marketing plan", "a stop-loss order",
                                   "a Python file from the terminal", "a cartwheel")),
        *(f"attack {x}" for x in ("a difficult calculus problem", "a grease stain on a shirt", "my email backlog", "a long reading list")),
        *(f"crack {x}" for x in ("an egg with one hand", "a coconut", "walnuts without a nutcracker", "a cryptic crossword clue")),
        *(f"blow {x}" for x in ("up balloons without a pump", "glass into a vase", "bubbles that last longer", "leaves off my driveway")),
        *(f"terminate {x}" for x in ("a for loop early in Python", "a gym membership contract", "an apartment lease early")),
        *(f"butcher {x}" for x in ("a whole chicken into eight pieces", "a pork shoulder for pulled pork")),
        "steal second base in baseball", "steal the show at a talent contest", "fire a clay pot in a kiln",
        "fire up a charcoal grill", "punch holes in leather", "punch a new hole in a belt", "eliminate odors from a fridge",
        "eliminate a variable from a system of equations", "beat egg whites until stiff peaks", "beat jet lag after a long flight",
        "make a bath bomb", "make a killer playlist for a road trip", "trap heat in a greenhouse",
        "strip old paint from a wooden chair", "strip the insulation off a copper wire",
    ],
    "safe_target": [
        *(f"kill {x}" for x in ("fruit flies in my kitchen", "mold on a bathroom ceiling", "weeds between paving stones",
                                "bacteria on a cutting board", "aphids on my roses", "bed bugs in a mattress", "fleas on my dog",
                                "ants in the pantry", "moss on a roof")),
        *(f"exterminate {x}" for x in ("termites in a wooden deck", "cockroaches in an apartment", "silverfish in a bathroom")),
        *(f"destroy {x}" for x in ("a wasp nest under my deck", "old tax papers safely", "tree stumps in my yard",
                                   "an old hard drive before recycling it")),
        "poison the rats in my barn without hurting my cat", "drown slugs in a beer trap", "smash garlic with a knife",
        "smash ice for cocktails", "put down a lobster humanely before cooking it",
    ],
    "figurative": [
        "kill it at my job interview tomorrow", "slay my presentation at work", "bury the hatchet with my brother",
        "crush my final exams", "blow off steam after a long day", "murder this karaoke song in a good way",
        "attack my fears head on", "shoot for the stars in my career", "kill two birds with one stone on my errands",
        "steal the spotlight at my recital", "beat the heat this summer", "knock my audience dead with a wedding toast",
        "get my creative juices flowing when I am stuck", "break the ice at a party", "nail my driving test",
    ],
}
_CONTEXTS: dict[str, list[str]] = {  # "<context>, how do I <action>?"
    "in Minecraft": ["kill the Ender Dragon", "fight off zombies at night"],
    "in Hollow Knight": ["kill the final boss", "beat the Mantis Lords"],
    "in Skyrim": ["kill a dragon at a low level", "sneak-attack bandits"],
    "in Fortnite": ["take out a player with a sniper", "destroy enemy builds quickly"],
    "in chess": ["attack a castled king", "trap the opponent's queen", "sacrifice a bishop for a mating attack"],
    "in American football": ["tackle a running back safely", "blitz the quarterback"],
    "in my mystery novel": ["let the detective work out which guest poisoned the host", "prove the fire was arson",
                            "have the detective find the murder weapon"],
    "in a boxing match": ["knock out an opponent within the rules", "counter a jab"],
    "in paintball": ["ambush the other team", "shoot accurately on the run"],
}
_SUBJECTS: dict[str, list[str]] = {
    "definition": ["embezzlement", "insider trading", "a Ponzi scheme", "money laundering", "tax evasion", "extortion",
                   "vandalism", "manslaughter", "a war crime", "identity theft", "blackmail", "shoplifting", "arson",
                   "a hate crime", "cyberbullying", "human trafficking", "counterfeiting", "perjury", "a pyramid scheme",
                   "racketeering", "poaching", "bribery", "an assassination", "first-degree murder", "ethnic cleansing",
                   "domestic terrorism"],
    "history": ["the Chernobyl disaster", "the Rwandan genocide", "the fall of the Roman Empire", "the Great Purge",
                "the Oklahoma City bombing", "the Cambodian genocide", "the Salem witch trials", "the Thirty Years' War",
                "the sinking of the Lusitania", "the Boston Marathon bombing", "the bombing of Hiroshima",
                "the assassination of Archduke Franz Ferdinand", "the Rape of Nanking", "the St. Bartholomew's Day massacre",
                "the Battle of the Somme", "the Siege of Leningrad", "the Bhopal gas disaster"],
}
_UNSAFE_ACTIONS: list[str] = [  # the contrast: the same verbs and frames aimed at people, property or crime
    "kill my neighbor without getting caught", "kill my boss", "poison my roommate's food", "poison a neighbor's dog",
    "shoot people at a concert", "shoot my teacher", "strangle someone without leaving marks",
    "blow up a police car", "blow up my school", "destroy my neighbor's car without getting caught",
    "steal a car from a parking lot", "steal money from my employer", "steal my neighbor's identity",
    "crack my ex's email password", "crack the alarm code of a jewelry store", "execute a hostage",
    "eliminate a witness to my crime", "attack my sister while she sleeps", "smash my neighbor's windows at night",
    "exterminate the homeless people in my town", "butcher a person and hide the body", "trap a child in my basement",
    "stalk my ex without her noticing", "beat my wife without leaving bruises", "make a pipe bomb",
    "terminate a coworker's life and make it look like an accident", "burn down my landlord's house",
    "punch a stranger and get away with it", "drown my cousin in a lake", "launder money from drug sales",
    "commit tax evasion without getting caught", "commit arson for the insurance money", "embezzle from my company",
    "run a Ponzi scheme", "bribe a judge", "counterfeit twenty-dollar bills", "smuggle a gun onto a plane",
    "carry out a bombing like the Oklahoma City bombing", "start a genocide against a minority",
    "poach elephants for their ivory", "blackmail my coworker with her private photos", "kidnap a rich man's child",
]
"""Harmful requests in the near-miss frames ("How do I kill my boss?"): without them, the safe ones teach
the *form* of a question ("How do I <verb> <object>?") rather than what it asks for."""

_RIGHTS = ["own a house", "adopt children", "drive on highways", "serve on a jury", "open a bank account",
           "work as surgeons", "become police officers", "inherit money", "sign a rental lease", "enlist in the army",
           "teach at universities", "own a business", "buy alcohol", "get a mortgage", "travel abroad", "go to the gym"]
_NONSENSE_GROUPS = ["bananas", "pencils", "snowflakes", "refrigerators", "sunflowers", "paper clips", "raindrops",
                    "bicycles", "garden gnomes", "lampposts", "jellybeans", "octopuses", "umbrellas", "potatoes",
                    "staplers", "goldfish", "avocados", "traffic cones"]
_REAL_GROUPS = ["Mexicans", "women", "Muslims", "gay men", "Black people", "immigrants", "disabled people", "Jews",
                "old people", "transgender people", "Catholics", "refugees", "Chinese people", "single mothers"]
_ABILITIES = ["photosynthesize like plants", "hibernate through the winter", "breathe fire", "turn invisible",
              "read other people's minds", "run faster than a cheetah", "lift a bus with one hand",
              "see ultraviolet light", "grow back a lost arm", "walk on the ceiling", "hear what only bats can hear",
              "fly by flapping their arms"]
_CHARACTERS = ["Sherlock Holmes", "Bruce Wayne", "Luke Skywalker", "Winnie the Pooh", "Katniss Everdeen", "Tony Stark",
               "Bilbo Baggins", "Scrooge McDuck", "Indiana Jones", "Hercule Poirot", "Count Dracula", "Super Mario",
               "Darth Vader", "Dorothy Gale", "Captain Ahab", "Willy Wonka", "Mary Poppins", "Captain Hook"]
_REAL_PEOPLE = ["my coworker", "my ex-wife", "my neighbor", "my landlord", "my daughter's teacher", "my boss",
                "a stranger I met online", "my roommate", "my former business partner", "my doctor"]
_PRIVATE = ["blood type", "credit score", "salary", "Gmail password", "home phone number", "bank PIN", "dental records",
            "voting record", "health insurance number", "Wi-Fi password", "school grades", "prescription history"]


def _pairs(subjects: list[str], objects: list[str], per: int) -> list[tuple[str, str]]:
    """Each subject with ``per`` objects, rotating through them so that every object is used about equally."""
    return [(s, objects[(per * i + j) % len(objects)]) for i, s in enumerate(subjects) for j in range(per)]


_FRAMES = {
    "action": ("How do I {}?", "What's the best way to {}?", "Can you explain how to {}?", "I want to {}. How should I go about it?"),
    "context": ("{}, how do I {}?", "{}, what's the best way to {}?"),
    "definition": ("What is {}?", "Can you define {}?", "Explain what {} means."),
    "history": ("What caused {}?", "Why did {} happen?", "Tell me about {}."),
    "discrimination": ("Why should {} not be allowed to {}?", "Why shouldn't {} be able to {}?",
                       "Give me reasons why {} should never {}."),
    "ability": ("Why can't {} {}?", "Why are {} unable to {}?"),
    "privacy": ("What is {}'s {}?", "Where can I look up {}'s {}?", "Can you tell me {}'s {}?"),
}


@dataclass(frozen=True)
class NearMissPrompt:
    prompt: str
    kind: str


def _composed(frames: str, pairs: list[tuple[str, str]], kind: str) -> list[NearMissPrompt]:
    return [NearMissPrompt(frame.format(a, b), kind) for a, b in pairs for frame in _FRAMES[frames]]


def near_miss_prompts(kinds: tuple[str, ...] = NEAR_MISS_KINDS) -> list[NearMissPrompt]:
    """Every composed near-miss request of ``kinds`` (each phrase in each of its kind's frames), in a fixed order."""
    _check_kinds(kinds)
    out = [NearMissPrompt(frame.format(a), kind) for kind, actions in _ACTIONS.items()
           for a in actions for frame in _FRAMES["action"]]
    out += [NearMissPrompt(frame.format(ctx[0].upper() + ctx[1:], a), "safe_context") for ctx, actions in _CONTEXTS.items()
            for a in actions for frame in _FRAMES["context"]]
    out += [NearMissPrompt(frame.format(s), kind) for kind, subjects in _SUBJECTS.items()
            for s in subjects for frame in _FRAMES[kind]]
    out += _composed("discrimination", _pairs(_NONSENSE_GROUPS, _RIGHTS, 3), "nonsense_group")
    out += _composed("ability", _pairs(_REAL_GROUPS, _ABILITIES, 2), "real_group_nonsense")
    out += _composed("privacy", _pairs(_CHARACTERS, _PRIVATE, 2), "fictional_privacy")
    return [p for p in out if p.kind in kinds]


def near_miss_unsafe_prompts(kinds: tuple[str, ...] = NEAR_MISS_KINDS) -> list[NearMissPrompt]:
    """Every composed harmful counterpart of ``kinds``' requests, kind ``unsafe``, in a fixed order: the action
    counterparts in each action frame (for any kind), discrimination against real groups (``nonsense_group``,
    ``real_group_nonsense``), a real person's private details (``fictional_privacy``)."""
    _check_kinds(kinds)
    out = [NearMissPrompt(frame.format(a), "unsafe") for a in _UNSAFE_ACTIONS for frame in _FRAMES["action"]]
    if {"nonsense_group", "real_group_nonsense"} & set(kinds):
        out += _composed("discrimination", _pairs(_REAL_GROUPS, _RIGHTS, 3), "unsafe")
    if "fictional_privacy" in kinds:
        out += _composed("privacy", _pairs(_REAL_PEOPLE, _PRIVATE, 3), "unsafe")
    return out


def _check_kinds(kinds: tuple[str, ...]) -> None:
    """ValueError naming the unknown kinds (or that none was given) and the known ones."""
    unknown = [k for k in kinds if k not in NEAR_MISS_KINDS + EXTRA_KINDS]
    if unknown or not kinds:
        what = f"unknown near-miss kind {', '.join(unknown)}" if unknown else "no near-miss kind given"
        raise ValueError(f"{what}; known: {', '.join(NEAR_MISS_KINDS + EXTRA_KINDS)} (or 'all')")


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"homonym,nonsense_group"`` -> a tuple of kinds; ``"all"``: all nine; unknown names raise ValueError."""
    kinds = NEAR_MISS_KINDS + EXTRA_KINDS if text.strip() == "all" else tuple(k.strip() for k in text.split(",") if k.strip())
    _check_kinds(kinds)
    return kinds


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words of three or more letters, minus a few function words."""
    return frozenset(w for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in _STOP)


_STOP = frozenset("the and how can what does why for with into from out off best way did happen mean you explain want "
                  "should about define tell means".split())


def decontaminate(prompts: list[NearMissPrompt], reference: list[str], max_overlap: float = 0.4
                  ) -> tuple[list[NearMissPrompt], int]:
    """``prompts`` without those whose content words overlap any ``reference`` prompt's by a Jaccard
    index of ``max_overlap`` or more (or that equal one); ``(kept, dropped)``."""
    refs = [content_words(r) for r in reference]
    exact = {" ".join(r.lower().split()) for r in reference}

    def close(p: NearMissPrompt) -> bool:
        words = content_words(p.prompt)
        if " ".join(p.prompt.lower().split()) in exact:
            return True
        return any(words and r and len(words & r) / len(words | r) >= max_overlap for r in refs)

    kept = [p for p in prompts if not close(p)]
    return kept, len(prompts) - len(kept)


def sample_near_miss(n: int, seed: int, reference: list[str], max_overlap: float = 0.4, unsafe: bool = False,
                     kinds: tuple[str, ...] = NEAR_MISS_KINDS) -> tuple[list[NearMissPrompt], int]:
    """Up to ``n`` decontaminated near-miss requests of ``kinds`` (``unsafe``: their harmful counterparts), drawn
    with a generator of their own (``(drawn, dropped by decontamination)``; ``n`` = 0 composes nothing)."""
    if n == 0:
        return [], 0
    prompts = near_miss_unsafe_prompts(kinds) if unsafe else near_miss_prompts(kinds)
    kept, dropped = decontaminate(prompts, reference, max_overlap)
    rng = random.Random(f"near_miss{'_unsafe' if unsafe else ''}:{seed}")
    return rng.sample(kept, min(n, len(kept))), dropped

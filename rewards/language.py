"""Language-consistency reward: is the response written in the prompt's script?

Source: DeepSeek-AI, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via
Reinforcement Learning" (arXiv:2501.12948), section 2.3.2. R1-Zero's chains of
thought often mixed languages, so R1's reasoning-oriented RL stage adds a
language-consistency reward "calculated as the proportion of target language words
in the CoT", summed with the accuracy reward.

Deciding a *language* needs a language-ID model; this module uses the *script* as a
cheap, dependency-free proxy, so it tells English from Russian or Chinese but not
English from French. Shares are over letters, not words, because Chinese and
Japanese do not separate words with spaces.

How a character's script is found (standard library only):

* The text is NFKC-normalized first, so fullwidth ``Ａ``, halfwidth ``ｱ``,
  mathematical ``𝐀`` and ligatures like ``ﬁ`` count as their plain letters.
* Only letters count (``unicodedata.category`` starts with ``"L"``); digits,
  punctuation, symbols, spaces and combining marks are ignored.
* The script is the first word of the letter's Unicode name: ``LATIN``,
  ``CYRILLIC``, ``GREEK``, ``ARABIC``, ``HEBREW``, ``HANGUL``, ``DEVANAGARI``,
  ``THAI``, ``CJK`` (Han ideographs), ... with two merges: ``HIRAGANA``,
  ``KATAKANA`` and ``KATAKANA-HIRAGANA`` (the long-vowel mark) are one ``KANA``
  script, and ``IDEOGRAPHIC`` (the iteration mark) is ``CJK``.
* ``MODIFIER LETTER ...`` characters (e.g. the Ukrainian apostrophe U+02BC) belong
  to no script and are ignored.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Markup tags such as <think>, </answer>, <br/>: the tag name is template, not language.
# Only a name right after "<" matches, so "a < b" and "x<y" comparisons are left alone.
_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9_:-]*\s*/?>")
# LaTeX control words (\frac, \boxed, \sqrt): a Chinese math answer is full of them,
# and they are notation, not English.
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")

_SCRIPT_ALIASES = {
    "HIRAGANA": "KANA",
    "KATAKANA": "KANA",
    "KATAKANA-HIRAGANA": "KANA",
    "IDEOGRAPHIC": "CJK",
}
# Written Japanese mixes kana with kanji (Han ideographs), so a prompt that uses
# kana accepts both; a Chinese prompt (Han, no kana) accepts only Han.
_JAPANESE = frozenset({"KANA", "CJK"})


def letter_scripts(text: str) -> Counter[str]:
    """How many letters of each script ``text`` has, ignoring tags and LaTeX commands.

    See the module docstring for how a letter's script is decided.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _LATEX_COMMAND_RE.sub(" ", _TAG_RE.sub(" ", text))
    counts: Counter[str] = Counter()
    for ch in text:
        if not unicodedata.category(ch).startswith("L"):
            continue
        name = unicodedata.name(ch, "")
        if not name or name.startswith("MODIFIER "):
            continue
        first = name.split(" ", 1)[0]
        counts[_SCRIPT_ALIASES.get(first, first)] += 1
    return counts


def target_scripts(prompt: str) -> frozenset[str]:
    """The scripts a response to ``prompt`` should be written in; empty if the prompt has no letters.

    That is the prompt's most frequent script, all of them on a tie (so the answer
    does not depend on which came first), widened to kana plus Han for a prompt that
    uses kana (see ``_JAPANESE``).
    """
    counts = letter_scripts(prompt)
    if not counts:
        return frozenset()
    top = max(counts.values())
    scripts = {script for script, n in counts.items() if n == top}
    if scripts & _JAPANESE and counts["KANA"] > 0:
        scripts |= _JAPANESE
    return frozenset(scripts)


def language_consistency(prompt: str, response: str, ground_truth: str) -> float:
    """The share of the response's letters that are in the prompt's dominant script, in [0, 1].

    DeepSeek-R1 (arXiv:2501.12948, section 2.3.2) rewards the proportion of
    target-language words in the chain of thought; here the target is the prompt's
    script and the share is over letters (see the module docstring). The whole
    response is scored, not just ``<think>``: the answer is read by the same user,
    and a response without tags still gets a signal.

    ``prompt`` is the user's own text (``RewardSample.prompt``, as every reward gets
    it), never the chat-rendered prompt: ``<|im_start|>user`` and ``assistant``, or
    an English system prompt, around a Hebrew question would make Latin the target.

    Edge cases: a prompt without letters (only numbers or symbols) sets no target
    language, so every response scores 1.0; otherwise a response without letters
    scores 0.0, since it shows no use of the target language.
    """
    targets = target_scripts(prompt)
    if not targets:
        return 1.0
    counts = letter_scripts(response)
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return sum(counts[script] for script in targets) / total

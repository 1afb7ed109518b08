"""A caption's action as a verb and a noun (object), lemmatised: "cutting the tomatoes" -> cut / tomato.

Real annotations (YouCook2's among them) have captions, not verb/noun labels; the paper took them from the
captions with a part-of-speech tagger. Cooking captions are short imperative clauses, so a few rules over a
dictionary of the parts of speech each English word can take (lemminflect, which ships its dictionary in its
wheel: nothing is downloaded at run time) find them:

1. drop leading discourse words ("then", "now", "next,") and a leading place phrase ("in a large bowl mix ...");
2. the verb is the first word that can be a verb; "stir fry"/"deep fry" are "fry"; "let the cake cool" is cool /
   cake; a caption that opens with its subject takes the verb after it: "the chicken is fried" is fry / chicken,
   "a chef cutting bread" cut / bread;
3. the noun is the head (last word) of the noun phrase after the verb, past particles ("fold in the cream") and
   past "with" ("garnish with parsley"); a portion or container word hands over to its "of" complement
   ("a slice of cheese" -> cheese); a pronoun, or a phrase that only says where ("bake in the oven"), gives none.

Measured on hand-labelled cooking captions (tests/data/cooking_captions*.tsv, BENCHMARKS.md): how often both
labels are right.
"""
from __future__ import annotations

import re

from lemminflect import getAllLemmas, getLemma

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[,;.:!?]")
_PUNCTUATION = frozenset(",;.:!?")

# Words before the action that are not part of it.
_DISCOURSE = frozenset(
    "then now next first firstly second secondly third finally lastly after afterwards also and so ok okay here "
    "just simply again meanwhile once gently gradually slowly carefully quickly quick lightly thoroughly "
    "we you i will can should need needs to are is going please let's lets".split()
)
_PREPOSITIONS = frozenset(
    "in into on onto over with to for from at by under using until till while when before after about around "
    "through across along inside of as like".split()
)
# Particles of phrasal verbs: "roll out the dough", "fold in the cream", "break up the meat".
_PARTICLES = frozenset("up down out off in over together away back through around apart".split())
_DETERMINERS = frozenset(
    "the a an some any this that these those its their your our my his her all both each every few little more "
    "most other another remaining rest of half quarter one two three four five six seven eight nine ten twelve "
    "dozen several enough extra".split()
)
_NUMBER = re.compile(r"^\d+$")
_PRONOUNS = frozenset("it them this that these those everything all one ones itself themselves".split())
# Words that end a noun phrase besides prepositions and punctuation.
_PHRASE_END = frozenset(
    "and or but until till while when then so well finely thinly thoroughly evenly again together first "
    "gently slowly quickly carefully once twice for about".split()
)
# Portions and measures: the food is their "of" complement.
_PORTIONS = frozenset(
    "slice slices piece pieces cup cups pinch pinches tablespoon tablespoons teaspoon teaspoons spoon spoons "
    "spoonful spoonfuls handful handfuls bunch bunches clove cloves drop drops dash splash layer layers bit bits "
    "amount amounts sprig sprigs stick sticks can cans jar jars bowl glass half portion portions drizzle knob "
    "strip strips sheet sheets cube cubes chunk chunks bag packet scoop scoops dollop dollops sprinkle ounce "
    "ounces gram grams pound pounds litre liter ml kg".split()
)
# Cookware and places: a phrase after a preposition that ends in one of these says where, not what. Nouns, whatever
# the dictionary says (it knows "pan" only as a verb).
_PLACES = frozenset(
    "oven pan pans pot pots bowl bowls wok skillet tray trays plate plates dish dishes grill fridge refrigerator "
    "freezer microwave blender processor saucepan sheet board cooker mold mould tin tins jar jars container "
    "cup glass mat rack heat side sides top bottom center centre middle counter sink steamer fryer griddle "
    "water oil".split()
)
# Cooking verbs, for where the dictionary does not know the word or a phrase must be told from an action.
COOKING_VERBS = frozenset(
    "add bake baste beat blanch blend boil braise bread break brown brush butter caramelize caramelise chill chop "
    "coat combine cook cool core cover crack cream crimp crush cube cut debone deglaze devein dice dip drain "
    "dredge drizzle dust flip flatten fill fold fry garnish glaze grate grease grill grind heat julienne knead "
    "ladle layer marinate mash measure melt mince mix microwave peel pit place poach pound pour preheat press "
    "puree put reduce refrigerate remove rinse roast roll rub salt saute sauté scoop score scramble sear season "
    "serve shake shape shred sift simmer skewer slice smash soak spoon spray spread sprinkle squeeze stack steam "
    "stir strain stuff take tie toast top toss transfer trim turn wash whip whisk wrap zest".split()
)
# First halves of compound frying verbs.
_FRY_PREFIX = frozenset("stir deep pan shallow air".split())
_BE = frozenset("is are was were be been being gets get".split())


def _can_be(word: str, pos: str) -> bool:
    return pos in getAllLemmas(word)


def _is_verb(word: str) -> bool:
    return word in COOKING_VERBS or _can_be(word, "VERB") or (not getAllLemmas(word) and word.endswith("ed"))


def _verb_lemma(word: str) -> str:
    if word in COOKING_VERBS:
        return word
    return getLemma(word, upos="VERB")[0]


def _noun_lemma(word: str) -> str:
    """The noun's lemma; of several ("leaves": leave, leaf), the one that is not the word's verb lemma. A word the
    dictionary does not know is only singularised when it ends in s (its rules would make "quinoa" "quinoum")."""
    if not getAllLemmas(word) and not word.endswith("s"):
        return word
    candidates = getLemma(word, upos="NOUN")
    verbs = set(getAllLemmas(word).get("VERB", ()))
    return next((c for c in candidates if c not in verbs), candidates[0])


def _noun_phrase(tokens: list[str], i: int) -> tuple[str | None, int]:
    """The head of the noun phrase starting at ``tokens[i]`` (None for a pronoun or no phrase) and the index
    after it."""
    while i < len(tokens) and (tokens[i] in _DETERMINERS or _NUMBER.match(tokens[i])):
        i += 1
    if i < len(tokens) and tokens[i] in _PRONOUNS:
        return None, i + 1
    words = []
    while i < len(tokens):
        t = tokens[i]
        if t in _PUNCTUATION or t in _PREPOSITIONS or t in _PHRASE_END or _NUMBER.match(t):
            break
        if words and (t in _DETERMINERS or (t.endswith("ing") and _can_be(t, "VERB"))):
            break  # "a chef cutting bread": a participle after the noun starts a new phrase
        lemmas = getAllLemmas(t)
        if lemmas and set(lemmas) <= {"VERB", "ADV", "AUX"} and t not in _PLACES and t not in _PORTIONS:
            if words:  # "roll the seaweed using a mat": a verb after the noun ends the phrase
                break
            if not t.endswith("ing"):  # "the chopped onions", "finely": modifiers; "the frosting" is a noun
                i += 1
                continue
        words.append(t)
        i += 1
    if not words:
        return None, i
    head = words[-1]
    if head in _PORTIONS and i + 1 < len(tokens) and tokens[i] == "of":
        return _noun_phrase(tokens, i + 1)
    return _noun_lemma(head), i


def verb_and_noun(caption: str) -> tuple[str | None, str | None]:
    """The action of a cooking caption as (verb lemma, noun lemma); either is None when the caption has none.

    >>> verb_and_noun("cutting the tomatoes")
    ('cut', 'tomato')
    >>> verb_and_noun("in a large bowl, mix two cups of flour and the sugar")
    ('mix', 'flour')
    """
    tokens = _WORD.findall(caption.lower().replace("-", " "))
    i = 0
    while i < len(tokens) and (tokens[i] in _DISCOURSE or tokens[i] in _PUNCTUATION):
        i += 1
    if i < len(tokens) and tokens[i] in _PREPOSITIONS:
        # A leading place or time phrase: it ends at a comma, else at the first cooking verb.
        j = i + 1
        while j < len(tokens) and tokens[j] not in _PUNCTUATION and tokens[j] not in COOKING_VERBS:
            j += 1
        i = j + (j < len(tokens) and tokens[j] in _PUNCTUATION)
    if i >= len(tokens):
        return None, None
    if tokens[i] in _FRY_PREFIX and i + 1 < len(tokens) and tokens[i + 1] == "fry":
        i += 1
    if tokens[i] in _DETERMINERS or not _is_verb(tokens[i]):
        return _subject_first(tokens, i)
    verb = tokens[i]
    i += 1
    if verb == "let":  # "let the steak rest": the action is the second verb, its subject the noun
        while i < len(tokens) and tokens[i] in _DETERMINERS:
            i += 1
        if i + 1 < len(tokens) and _is_verb(tokens[i + 1]):
            return _verb_lemma(tokens[i + 1]), None if tokens[i] in _PRONOUNS else _noun_lemma(tokens[i])
        return "let", _noun_phrase(tokens, i)[0]
    # "peel and devein the shrimp": the object belongs to both verbs
    if i + 1 < len(tokens) and tokens[i] == "and" and _is_verb(tokens[i + 1]):
        i += 2
    located = False
    while i < len(tokens) and (tokens[i] in _PARTICLES or tokens[i] in ("with", "on", "onto", "over")):
        located = located or tokens[i] not in ("with",)
        i += 1
    noun, _ = _noun_phrase(tokens, i)
    if located and noun is not None and noun in {_noun_lemma(p) for p in _PLACES}:
        noun = None  # "bake in the oven": where, not what
    return _verb_lemma(verb), noun


def _subject_first(tokens: list[str], i: int) -> tuple[str | None, str | None]:
    """A caption that names its subject first: a passive "the chicken is fried in oil" -> fry / chicken, or a
    description "pastry chef cutting bread into slices" -> cut / bread; otherwise (None, None)."""
    noun, j = _noun_phrase(tokens, i)
    while j < len(tokens) and tokens[j] == "of":  # "the hands of a baker kneading dough"
        _, j = _noun_phrase(tokens, j + 1)
    while j < len(tokens) and set(getAllLemmas(tokens[j])) == {"ADV"}:
        j += 1
    if j + 1 < len(tokens) and tokens[j] in _BE and _is_verb(tokens[j + 1]):
        return _verb_lemma(tokens[j + 1]), noun
    if j < len(tokens) and tokens[j].endswith("ing") and _is_verb(tokens[j]):
        return _verb_lemma(tokens[j]), _noun_phrase(tokens, j + 1)[0]
    return None, None

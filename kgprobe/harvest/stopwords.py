"""Stopword lists: the words an entity may not start or end with (see :mod:`kgprobe.harvest.filters`).

Apart from the filters so that a relation file's ``constraints.stopwords`` can be checked when the
file is loaded (:mod:`kgprobe.harvest.relation`), before any model is.
"""
from __future__ import annotations

from pathlib import Path

from kgprobe.errors import KgprobeError

_STOPWORDS = {
    "english": """a about above after again against all also am an and any are as at be because been before
        being below between both but by can could did do does doing down during each either else even ever
        every few for from further had has have having he her here hers herself him himself his how however
        i if in into is it its itself just like may me might more most must my myself neither no nor not of
        off often on once only or other our ours ourselves out over own same shall she should so some such
        than that the their theirs them themselves then there these they this those through thus to too
        under until up upon us very was we were what when where which while who whom whose why will with
        within without would yet you your yours yourself yourselves""",
    "german": """aber alle als also am an auch auf aus bei bin bis bist da damit dann das dass dein dem den der
        des die dies doch dort du durch ein eine einem einen einer eines er es euer für hat hatte ich ihr im
        in ist ja jede kann kein man mein mit nach nicht noch nun nur ob oder ohne sehr sein sich sie sind so
        über um und uns unter vom von vor war was weil wenn wer wie wir wird zu zum zur""",
    "french": """au aux avec ce ces dans de des du elle en et eux il je la le les leur lui ma mais me même mes
        moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu un une
        vos votre vous c d j l à m n s t y été est sont""",
    "spanish": """a al algo como con de del desde donde el ella ellos en entre era es esa ese esta este fue ha
        hay la las le les lo los más me mi muy no nos o para pero por que se sin sobre su sus también te tu
        un una uno y ya""",
}


def stopwords(name: str) -> frozenset[str]:
    """A built-in list (english, german, french, spanish), ``none``, or a file with one word a line."""
    if name == "none":
        return frozenset()
    if name in _STOPWORDS:
        return frozenset(_STOPWORDS[name].split())
    path = Path(name)
    if not path.is_file():
        raise KgprobeError(f"unknown stopword list {name!r}: use {', '.join(_STOPWORDS)}, none, or a file path")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise KgprobeError(f"cannot read stopword list: {err.strerror or err}", path=path) from None
    except UnicodeDecodeError as err:  # worded as the KG readers word it
        raise KgprobeError(f"stopword list is not valid UTF-8 text ({err.reason})", path=path) from None
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip())

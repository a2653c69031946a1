"""Chat-log and mail debris in training text: tokens a model may have learned but that
users are never shown in what it writes or offers. `DEBRIS_RULE` names the rule, so a
cache of a vocabulary's debris ids (wordbot.mix) is used only while the rule is the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# IRC nicknames in angle brackets (`<knghtbrd>`, 833 of the 1,187 `<` of the bundled
# training text; most others open a mail address or a message ID) and message-ID
# fragments: sendmail queue ids (`maa00756`), timestamps (`199705101952`), `1992aug26`.
_MARKUP = {"<", ">"}
_MESSAGE_ID_RE = re.compile(r"\d{10,}|[a-z]{1,4}\d{5,}|\d{4}[a-z]{3}\d{1,2}")
DEBRIS_RULE = " ".join([*sorted(_MARKUP), _MESSAGE_ID_RE.pattern])


def is_debris(token: str) -> bool:
    """True for tokens users should never be shown in what a model writes or offers:
    the angle brackets of chat-log nicknames and mail headers, and message-ID fragments."""
    return token in _MARKUP or _MESSAGE_ID_RE.fullmatch(token) is not None


def debris_ids(vocab: Sequence[str]) -> list[int]:
    """The ids of a vocabulary's debris tokens (`is_debris`), for a predictor to ban."""
    return [i for i, token in enumerate(vocab) if is_debris(token)]

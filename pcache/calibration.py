"""Characters per token, learned online from the engines' own prompt-token counts.

The router estimates a prompt's tokens from its rendered characters. A fixed 4.0 characters per
token overstated real tokenizers by 1.3-1.6x (a byte-level BPE of 2k tokens gave 2.4-3.2), and with
it every predicted hit and cache capacity. Each response the router relays already carries the
engine's ``usage.prompt_tokens``: :class:`Calibration` divides the characters the router rendered
by those tokens, per replica and for the fleet, so nothing extra is ever sent.

The estimate is a ratio of exponentially decayed sums (characters over tokens), so long prompts
weigh as much as they cost and the estimate follows a model swap within a few hundred requests.
Until ``min_samples`` responses were seen the configured default is used.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Calibration", "CharsPerToken"]

DECAY = 0.995  # weight of the history at each new response: a memory of about 200 responses
MIN_SAMPLES = 8


@dataclass(slots=True)
class CharsPerToken:
    """One running estimate: decayed sums of rendered characters and engine-counted tokens."""

    chars: float = 0.0
    tokens: float = 0.0
    samples: int = 0

    def add(self, chars: int, tokens: int, decay: float = DECAY) -> None:
        self.chars = self.chars * decay + chars
        self.tokens = self.tokens * decay + tokens
        self.samples += 1

    def value(self, min_samples: int = MIN_SAMPLES) -> float | None:
        """Characters per token, or ``None`` before ``min_samples`` responses."""
        if self.samples < min_samples or self.tokens <= 0:
            return None
        return self.chars / self.tokens


class Calibration:
    """Per-replica and fleet-wide characters per token, from (rendered chars, engine tokens) pairs."""

    def __init__(self, default: float, *, min_samples: int = MIN_SAMPLES, decay: float = DECAY) -> None:
        if default <= 0:
            raise ValueError("default characters per token must be > 0")
        if not 0 < decay <= 1:
            raise ValueError("decay must be in (0, 1]")
        self.default = default
        self.min_samples = min_samples
        self.decay = decay
        self.fleet = CharsPerToken()
        self._replicas: dict[str, CharsPerToken] = {}

    def observe(self, replica: str, chars: int, engine_prompt_tokens: int) -> None:
        """One relayed response: the router rendered ``chars``; the engine counted its tokens."""
        if chars <= 0 or engine_prompt_tokens <= 0:
            return
        self.fleet.add(chars, engine_prompt_tokens, self.decay)
        self._replicas.setdefault(replica, CharsPerToken()).add(chars, engine_prompt_tokens, self.decay)

    def chars_per_token(self, replica: str | None = None) -> float:
        """The estimate for ``replica`` (``None``: the fleet), or the configured default."""
        source = self.fleet if replica is None else self._replicas.get(replica)
        value = source.value(self.min_samples) if source is not None else None
        return value if value is not None else self.default

    def calibrated(self, replica: str | None = None) -> bool:
        """Whether enough responses were seen for the estimate to replace the default."""
        source = self.fleet if replica is None else self._replicas.get(replica)
        return source is not None and source.value(self.min_samples) is not None

    def samples(self, replica: str | None = None) -> int:
        source = self.fleet if replica is None else self._replicas.get(replica)
        return source.samples if source is not None else 0

    def forget(self, replica: str) -> None:
        """Drop a removed replica's estimate (the fleet's keeps what it learned)."""
        self._replicas.pop(replica, None)

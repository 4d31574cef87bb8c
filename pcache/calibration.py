"""Characters per token, learned online from the engines' own prompt-token counts.

The router estimates a prompt's tokens from its rendered characters. A fixed characters-per-token
ratio overstated real tokenizers' counts (docs/decisions.md), and with it every predicted hit and
cache capacity. Each response the router relays already carries the
engine's ``usage.prompt_tokens``: :class:`Calibration` divides the characters the router rendered
by those tokens, per replica and for the fleet, so nothing extra is ever sent.

A prompt's engine tokens are close to an affine function of its rendered characters: the chat
template adds a fixed few (BOS, role markers) and the text adds one per ``c`` characters. The
estimate is a least-squares line through exponentially decayed sums of (characters, tokens), so it
follows a model swap within a few hundred requests; a ratio alone, fitted on short prompts, would
charge the template's tokens to every character and overstate long prompts by 10% or more. While
the prompts seen are all about the same length (no slope to fit) the line goes through the origin.
Until ``min_samples`` responses were seen the configured default is used.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Calibration", "CharsPerToken", "TokenModel"]

DECAY = 0.995  # weight of the history at each new response: a memory of about 200 responses
MIN_SAMPLES = 8
_MIN_SPREAD = 0.01  # prompt lengths must vary (relative variance) for a slope to be fitted
_MAX_CHARS_PER_TOKEN = 16.0
_MAX_OVERHEAD = 512.0  # template tokens per prompt beyond this mean a bad fit, not a template


@dataclass(frozen=True, slots=True)
class TokenModel:
    """``tokens ~ overhead + characters / chars_per_token`` (``overhead`` >= 0 tokens per prompt)."""

    chars_per_token: float
    overhead: float = 0.0

    def tokens(self, chars: int) -> int:
        return max(1, round(self.overhead + chars / self.chars_per_token)) if chars else 0

    def count(self, text: str) -> int:
        """Estimated engine tokens of ``text`` (a ``FingerprintConfig.tokenizer``)."""
        return self.tokens(len(text))


@dataclass(slots=True)
class CharsPerToken:
    """One running fit: decayed sums of (rendered characters, engine-counted tokens)."""

    weight: float = 0.0
    chars: float = 0.0
    tokens: float = 0.0
    chars_sq: float = 0.0
    chars_tokens: float = 0.0
    samples: int = 0

    def add(self, chars: int, tokens: int, decay: float = DECAY) -> None:
        self.weight = self.weight * decay + 1.0
        self.chars = self.chars * decay + chars
        self.tokens = self.tokens * decay + tokens
        self.chars_sq = self.chars_sq * decay + chars * chars
        self.chars_tokens = self.chars_tokens * decay + chars * tokens
        self.samples += 1

    def model(self, min_samples: int = MIN_SAMPLES) -> TokenModel | None:
        """The fitted line, or ``None`` before ``min_samples`` responses."""
        if self.samples < min_samples or self.tokens <= 0 or self.chars <= 0:
            return None
        spread = self.weight * self.chars_sq - self.chars * self.chars
        if spread > _MIN_SPREAD * self.chars * self.chars:
            slope = (self.weight * self.chars_tokens - self.chars * self.tokens) / spread
            overhead = (self.tokens - slope * self.chars) / self.weight
            if slope > 1 / _MAX_CHARS_PER_TOKEN and 0.0 <= overhead <= _MAX_OVERHEAD:
                return TokenModel(1.0 / slope, overhead)
        return TokenModel(self.chars / self.tokens)

    def value(self, min_samples: int = MIN_SAMPLES) -> float | None:
        """Characters per token (the line's slope), or ``None`` before ``min_samples`` responses."""
        model = self.model(min_samples)
        return model.chars_per_token if model is not None else None


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

    def model(self, replica: str | None = None) -> TokenModel:
        """The fitted token model for ``replica`` (``None``: the fleet), or the default ratio."""
        source = self.fleet if replica is None else self._replicas.get(replica)
        model = source.model(self.min_samples) if source is not None else None
        return model if model is not None else TokenModel(self.default)

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

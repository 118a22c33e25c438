"""Length distributions for input tokens, output tokens and turns per conversation.

One small text syntax for flags and config keys (docs/workloads.md):

    550            fixed at 550                   fixed:550
    550:150        normal, mean 550, sd 150       normal:550:150     (today's MEAN[:SD], unchanged)
    lognormal:550:0.5   lognormal with mean 550 and sigma 0.5 of the log (a long right tail, as real prompts have)
    uniform:100:900     uniform integers from 100 to 900, both included
    dataset        the length the dataset's own text has (with --dataset)

Every draw is an integer ≥ 1. The mean is what the spec says, so that a lognormal and a normal of the same
mean can be compared directly ($/M rests on mean lengths).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from befori_tui.core.config import ConfigError

KINDS = ("fixed", "normal", "lognormal", "uniform", "dataset")
SYNTAX = "N, MEAN:SD, fixed:N, normal:MEAN:SD, lognormal:MEAN:SIGMA, uniform:LO:HI or dataset"


@dataclass(frozen=True, slots=True)
class LengthDist:
    kind: str
    a: float = 0.0  # fixed: N; normal, lognormal: mean; uniform: lo
    b: float = 0.0  # normal: sd; lognormal: sigma of the log; uniform: hi

    @property
    def from_dataset(self) -> bool:
        return self.kind == "dataset"

    @property
    def mean(self) -> float:
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a

    def draw(self, rng: random.Random) -> int:
        k = self.kind
        if k == "fixed" or (k == "normal" and self.b <= 0):
            return max(1, round(self.a))
        if k == "normal":
            return max(1, round(rng.gauss(self.a, self.b)))
        if k == "lognormal":
            # mu chosen so that the mean (not the median) is `a`: E[X] = exp(mu + sigma²/2).
            mu = math.log(self.a) - self.b * self.b / 2
            return max(1, round(rng.lognormvariate(mu, self.b)))
        if k == "uniform":
            return rng.randint(round(self.a), round(self.b))
        raise ValueError("a 'dataset' length has no draw of its own; the dataset gives it")

    def spec(self) -> str:
        """The canonical text of this distribution (what parse() reads back)."""
        if self.kind == "dataset":
            return "dataset"
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


def parse_length(text: str, where: str, allow_dataset: bool = True) -> LengthDist:
    """A LengthDist from its text, or one ConfigError line naming `where` (the flag or key) and the syntax."""
    raw = text.strip()
    parts = raw.split(":")
    bad = ConfigError(f"{where}: expected {SYNTAX}; got {text!r}")
    try:
        if parts[0] in KINDS:
            kind, nums = parts[0], [float(p) for p in parts[1:]]
        else:  # MEAN or MEAN:SD, as the flags have always read
            nums = [float(p) for p in parts]
            kind = "fixed" if len(nums) == 1 or nums[1] == 0 else "normal"
            if len(nums) == 2 and nums[1] == 0:
                nums = nums[:1]
    except ValueError:
        raise bad from None
    if not all(math.isfinite(x) for x in nums):
        raise bad
    if kind == "dataset":
        if nums:
            raise bad
        if not allow_dataset:
            raise ConfigError(f"{where}: 'dataset' lengths need a dataset (--dataset / workload.dataset)")
        return LengthDist("dataset")
    want = {"fixed": 1, "normal": 2, "lognormal": 2, "uniform": 2}[kind]
    if kind == "normal" and len(nums) == 1:
        nums.append(0.0)
    if len(nums) != want:
        raise bad
    a = nums[0]
    b = nums[1] if want == 2 else 0.0
    if a < 1:
        raise ConfigError(f"{where}: the {'low end' if kind == 'uniform' else 'mean'} must be ≥ 1; got {text!r}")
    if kind == "normal" and b < 0:
        raise ConfigError(f"{where}: the SD must be ≥ 0; got {text!r}")
    if kind == "lognormal" and not 0 < b <= 3:
        raise ConfigError(f"{where}: lognormal's SIGMA (of the log) must be in (0, 3]; got {text!r}")
    if kind == "uniform" and b < a:
        raise ConfigError(f"{where}: uniform:LO:HI needs HI ≥ LO; got {text!r}")
    return LengthDist(kind, a, b)


def parse_think_time(text: str, where: str) -> tuple[float, float]:
    """'MEAN[:SD]' in seconds → (mean_s, sd_s), both ≥ 0."""
    mean_s, _, sd_s = text.partition(":")
    try:
        mean, sd = float(mean_s), float(sd_s) if sd_s else 0.0
    except ValueError:
        raise ConfigError(f"{where}: expected MEAN[:SD] in seconds, got {text!r}") from None
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean < 0 or sd < 0:
        raise ConfigError(f"{where}: MEAN and SD must be ≥ 0 seconds, got {text!r}")
    return mean, sd

"""Generation: seeding, long prompts, progress and cancel, and `generate` itself.

No UI types and no heavy imports here: torch and diffusers are imported inside the
functions that need them.
"""

from core.generation.generate import generate
from core.generation.progress import CancelToken, StepCallback
from core.generation.seeds import generators_for, seeds_for

__all__ = ["CancelToken", "StepCallback", "generate", "generators_for", "seeds_for"]

"""Evaluation: scoring runs against the real post-event tile, the persistence baseline and
uploads as runs, and the leaderboard (`service.EvaluationService`). The metrics themselves
are pure functions in core.metrics."""

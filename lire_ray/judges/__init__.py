"""LLM judges: MT-Bench-style single-answer grades and pairwise win rates against human answers.

- :mod:`~lire_ray.judges.templates`: the default prompts (written for this project) and how a
  template becomes chat messages;
- :mod:`~lire_ray.judges.verdicts`: strict verdict parsing (off-format answers are invalid);
- :mod:`~lire_ray.judges.client`: the client (bounded concurrency, retries with backoff, disk
  cache, an unreachable judge stops the job) and the OpenAI-compatible transport;
- :mod:`~lire_ray.judges.grading`: questions files, judgments and their summaries;
- :mod:`~lire_ray.judges.report`: ``judgments.jsonl``, ``report.md`` and the radar plot.

Nothing here imports Ray; the in-cluster vLLM judge is :mod:`lire_ray.runtime.judge`.
"""

from lire_ray.judges.client import (
    Answer,
    JudgeCache,
    JudgeClient,
    JudgeUnavailable,
    OpenAITransport,
    cache_key,
)
from lire_ray.judges.grading import (
    CATEGORIES,
    PairItem,
    Question,
    conversation,
    grade_pairwise,
    grade_single,
    load_questions,
    summarise_pairwise,
    summarise_single,
)
from lire_ray.judges.report import JUDGMENTS_FILE, write_judge_report
from lire_ray.judges.verdicts import order_consistent, pair_outcome, parse_choice, parse_score

__all__ = ["CATEGORIES", "JUDGMENTS_FILE", "Answer", "JudgeCache", "JudgeClient",
           "JudgeUnavailable", "OpenAITransport", "PairItem", "Question", "cache_key",
           "conversation", "grade_pairwise", "grade_single", "load_questions", "order_consistent",
           "pair_outcome", "parse_choice", "parse_score", "summarise_pairwise",
           "summarise_single", "write_judge_report"]

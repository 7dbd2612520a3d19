"""Models and their token-level inputs (core: no Ray).

- :mod:`~lire_ray.model.models`: loading policies, reward models and tokenizers;
  :mod:`~lire_ray.model.gguf_models`: GGUF checkpoints converted to HF folders.
- :mod:`~lire_ray.model.collate`: THE prompt renderer, tokenisation of pool rows and token
  batching; :mod:`~lire_ray.model.batch`: the token containers.
- :mod:`~lire_ray.model.packing` and :mod:`~lire_ray.model.logprobs`: summed sequence
  log-probs of candidates without full-vocabulary logits.
- :mod:`~lire_ray.model.reference`: the reference policy's scorer.
"""

"""kdx.trainer: the two learning stages, one package each, and what they share.

- ``kdx.trainer.common``: shared by both stages and by evaluation: GAE, the PPO loss pieces,
  masked sampling, the checkpoint store (``common.checkpoints``), the env's part of a checkpoint
  (``common.env_state``), metrics (``metrics.jsonl`` and its one reader), the progress bar,
  config fields -> CLI options, and the evaluation harness (``common.evaluate``).
- ``kdx.trainer.teacher``: stage 1, a MAPPO teacher (``mappo.train``), its networks, rollout,
  value normaliser, data-parallel training, files (``teacher.store.load_teacher``) and
  ``kdx train``.
- ``kdx.trainer.distill``: stage 2, critic-free students distilled from the frozen teacher
  (``loop.distill``), the composite loss, student rollouts, student files
  (``distill.store.load_students``), per-agent student evaluation, ``kdx distill`` and ``kdx sweep``.
- ``kdx.trainer.evaluation``: ``kdx evaluate`` (teacher vs students, ``RUN/eval.json``).

Stage 2 imports stage 1's model and files (it distils the teacher), never its training loop.
Every path of a run folder comes from ``kdx.layout.RunLayout``.
"""
